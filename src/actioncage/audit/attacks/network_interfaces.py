import socket
def execute_action(context):
    return sorted(name for _, name in socket.if_nameindex())
