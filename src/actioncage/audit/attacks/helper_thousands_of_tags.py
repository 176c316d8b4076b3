def execute_action(context):
    n = 0
    try:
        for i in range(5000):
            add_conversation_tag(context, f't{i}')
            n += 1
    except ValueError:
        pass
    return n
