import ctypes, errno, os, socket, stat, subprocess, sys
def execute_action(context):
    leaks = []
    for path in ['/var/run/docker.sock', '/run/docker.sock', '/run/containerd',
                 '/var/lib/docker', '/dev/mem', '/dev/kmem', '/dev/sda', '/dev/kvm',
                 '/dev/fuse', '/dev/net/tun']:
        if os.path.exists(path):
            leaks.append(path)
    for name in os.listdir('/dev'):
        try:
            if stat.S_ISBLK(os.stat('/dev/' + name).st_mode):
                leaks.append('block device ' + name)
        except OSError:
            pass
    return leaks
