import ctypes, errno, os, socket, stat, subprocess, sys
def execute_action(context):
    leaks = []
    for family, kind, proto in [(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
                                (socket.AF_PACKET, socket.SOCK_RAW, 0x0300)]:
        try:
            socket.socket(family, kind, proto).close()
            leaks.append(f'opened a raw socket {family}')
        except OSError:
            pass
    return leaks
