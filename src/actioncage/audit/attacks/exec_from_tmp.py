import ctypes, errno, os, socket, stat, subprocess, sys
def execute_action(context):
    leaks = []
    with open('/tmp/run.sh', 'w') as f:
        f.write('#!/bin/sh\necho ran\n')
    os.chmod('/tmp/run.sh', 0o755)
    try:
        subprocess.run(['/tmp/run.sh'], capture_output=True, check=True)
        leaks.append('executed a file from /tmp')
    except OSError:
        pass
    return leaks
