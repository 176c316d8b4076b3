import ctypes
def execute_action(context):
    ctypes.memset(16, 0, 64)
    return 1
