import ctypes, errno, os, socket, stat, subprocess, sys
def execute_action(context):
    leaks = []
    for path in ['/pwned', '/etc/pwned', '/usr/pwned', '/opt/actioncage/pwned',
                 '/home/pwned', '/var/pwned']:
        try:
            with open(path, 'w') as f:
                f.write('x')
            leaks.append(path)
        except OSError:
            pass
    for path in ['/etc/passwd', '/etc/hosts', '/etc/resolv.conf']:
        try:
            with open(path, 'a') as f:
                f.write('x')
            leaks.append(path)
        except OSError:
            pass
    return leaks
