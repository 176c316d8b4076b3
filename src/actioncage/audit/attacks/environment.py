import ctypes, errno, os, socket, stat, subprocess, sys
def execute_action(context):
    leaks = []
    words = ('ACTIONCAGE', 'KEY', 'TOKEN', 'SECRET', 'PASSWORD', 'AWS', 'DOCKER')
    for source in (dict(os.environ), open('/proc/1/environ', 'rb').read().decode()):
        text = str(source).upper()
        leaks.extend(w for w in words if w in text)
    out = subprocess.run(['env'], capture_output=True, text=True).stdout.upper()
    leaks.extend('env:' + w for w in words if w in out)
    return leaks
