def execute_action(context):
    line = 'y' * 1023
    for _ in range(200_000):
        print(line)
    return 'done'
