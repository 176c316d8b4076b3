import threading, time
def execute_action(context):
    n = 0
    try:
        while n < 1000:
            threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
            n += 1
    except RuntimeError:
        pass
    return n
