import os, subprocess
def execute_action(context):
    if os.fork() == 0:
        os.setsid()
        subprocess.Popen(['sleep', '4242.4242'], start_new_session=True)
        os._exit(0)
    subprocess.Popen(['sleep', '4242.4242'], start_new_session=True)
    return 'spawned'
