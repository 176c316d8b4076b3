import ctypes, errno, os, socket, stat, subprocess, sys
def execute_action(context):
    leaks = []
    for host, port in [('127.0.0.1', 8080), ('127.0.0.1', 22), ('0.0.0.0', 8080)]:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(1.0)
        try:
            s.connect((host, port))
            leaks.append(f"connected to {host}:{port}")
        except OSError:
            pass
        finally:
            s.close()
    return leaks
