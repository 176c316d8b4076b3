import ctypes, errno, os, socket, stat, subprocess, sys, fcntl, struct
# Host interfaces must not exist at all. gVisor's /dev has its own emulated fuse and net/tun
# (not the host's); what matters for those two is that they do nothing: no FUSE mount, no
# tun interface. Tried on every tier, so the check is the same for all.
def execute_action(context):
    leaks = []
    for path in ['/var/run/docker.sock', '/run/docker.sock', '/run/containerd',
                 '/var/lib/docker', '/dev/mem', '/dev/kmem', '/dev/sda', '/dev/kvm']:
        if os.path.exists(path):
            leaks.append(path)
    libc = ctypes.CDLL(None, use_errno=True)
    try:
        fd = os.open('/dev/fuse', os.O_RDWR)
    except OSError:
        pass
    else:
        options = 'fd=%d,rootmode=40000,user_id=%d,group_id=%d' % (fd, os.getuid(), os.getgid())
        if libc.mount(b'fuse', b'/tmp', b'fuse', 0, options.encode()) == 0:
            leaks.append('/dev/fuse mounts a filesystem')
        os.close(fd)
    try:
        fd = os.open('/dev/net/tun', os.O_RDWR)
    except OSError:
        pass
    else:
        try:
            fcntl.ioctl(fd, 0x400454CA, struct.pack('16sH', b'ac0', 0x0002 | 0x1000))  # TUNSETIFF
            leaks.append('/dev/net/tun creates an interface')
        except OSError:
            pass
        os.close(fd)
    for name in os.listdir('/dev'):
        try:
            if stat.S_ISBLK(os.stat('/dev/' + name).st_mode):
                leaks.append('block device ' + name)
        except OSError:
            pass
    return leaks
