import subprocess
def execute_action(context):
    subprocess.run(['sh', '-c', 'yes flood | head -c 100000000'])
    return 'done'
