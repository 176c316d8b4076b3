import subprocess, sys
def execute_action(context):
    subprocess.run([sys.executable, '-c', 'x = bytearray(1 << 30)'], check=True)
    return 'allocated 1 GiB'
