import ctypes, errno, os, socket, stat, subprocess, sys
def execute_action(context):
    leaks = []
    for host, port in [('10.0.0.1', 80), ('192.168.1.1', 80), ('172.16.0.1', 80)]:
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
