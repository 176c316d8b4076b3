import ctypes, errno, os, socket, stat, subprocess, sys
def execute_action(context):
    leaks = []
    leaks.extend(k for k in os.environ if 'proxy' in k.lower())
    if os.path.exists('/run/actioncage-egress'):
        leaks.append('egress socket mounted')
    return leaks
