import ctypes, errno, os, socket, stat, subprocess, sys
def execute_action(context):
    leaks = []
    mounts = open('/proc/self/mountinfo').read()
    for needle in ('docker.sock', 'actioncage.db', '/home/', '/root', '/work/', '/srv/'):
        if needle in mounts:
            leaks.append('mount of ' + needle)
    for path in ['/proc/kcore', '/proc/sysrq-trigger', '/sys/kernel/security',
                 '/proc/1/root/etc/shadow', '/etc/shadow']:
        try:
            with open(path, 'rb') as f:
                f.read(1)
            leaks.append('read ' + path)
        except OSError:
            pass
    pids = [p for p in os.listdir('/proc') if p.isdigit()]
    if len(pids) > 10:
        leaks.append(f'sees {len(pids)} processes')
    return leaks
