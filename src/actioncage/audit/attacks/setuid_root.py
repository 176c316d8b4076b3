import ctypes, errno, os, socket, stat, subprocess, sys
def execute_action(context):
    leaks = []
    for name, call in [('setuid', lambda: os.setuid(0)), ('setgid', lambda: os.setgid(0)),
                       ('seteuid', lambda: os.seteuid(0))]:
        try:
            call()
            leaks.append(name)
        except OSError:
            pass
    for root, dirs, files in os.walk('/', topdown=True):
        skip = ('/proc', '/sys', '/dev')
        dirs[:] = [d for d in dirs if os.path.join(root, d) not in skip]
        for name in files:
            path = os.path.join(root, name)
            try:
                mode = os.lstat(path).st_mode
            except OSError:
                continue
            if stat.S_ISREG(mode) and mode & (stat.S_ISUID | stat.S_ISGID):
                leaks.append('setid binary ' + path)
    return leaks
