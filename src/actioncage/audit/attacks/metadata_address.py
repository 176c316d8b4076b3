import ctypes, errno, os, socket, stat, subprocess, sys
def execute_action(context):
    leaks = []
    for host, port in [('169.254.169.254', 80), ('169.254.170.2', 80), ('100.100.100.200', 80)]:
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
