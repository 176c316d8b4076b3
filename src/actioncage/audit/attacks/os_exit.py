import os
def execute_action(context):
    os._exit(0)
