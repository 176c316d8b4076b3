def execute_action(context):
    while True:
        pass
