import ctypes, errno, os, socket, stat, subprocess, sys
def execute_action(context):
    leaks = []
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b'none', b'/tmp', b'tmpfs', 0, None) == 0:
        leaks.append('mount')
    if libc.umount2(b'/tmp', 2) == 0:
        leaks.append('umount')
    for flag, name in [(0x10000000, 'user'), (0x20000, 'mount'), (0x40000000, 'net'),
                       (0x20000000, 'pid')]:
        if libc.unshare(flag) == 0:
            leaks.append('unshare ' + name)
    if libc.setns(os.open('/proc/self/ns/net', os.O_RDONLY), 0) == 0:
        leaks.append('setns')
    if libc.chroot(b'/tmp') == 0:
        leaks.append('chroot')
    try:
        subprocess.run(['unshare', '-U', 'true'], check=True, capture_output=True)
        leaks.append('unshare -U via the shell')
    except (OSError, subprocess.CalledProcessError):
        pass
    return leaks
