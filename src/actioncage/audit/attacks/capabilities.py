import ctypes, errno, os, socket, stat, subprocess, sys
def execute_action(context):
    leaks = []
    lines = open('/proc/self/status').read().splitlines()
    status = dict(line.split(':\t', 1) for line in lines if ':\t' in line)
    for cap in ('CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb'):
        if int(status[cap], 16) != 0:
            leaks.append(cap + '=' + status[cap])
    if status.get('NoNewPrivs', '').strip() != '1':
        leaks.append('NoNewPrivs off')
    if status.get('Seccomp', '').strip() != '2':
        leaks.append('no seccomp filter')
    if os.getuid() == 0 or os.geteuid() == 0:
        leaks.append('running as root')
    return leaks
