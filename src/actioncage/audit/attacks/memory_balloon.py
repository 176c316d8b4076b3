def execute_action(context):
    hog = []
    while True:
        hog.append(bytearray(16 << 20))
