def execute_action(context):
    value = []
    for _ in range(200_000):
        value = [value]
    return value
