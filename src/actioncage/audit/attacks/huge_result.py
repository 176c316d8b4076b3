def execute_action(context):
    return 'x' * (64 << 20)
