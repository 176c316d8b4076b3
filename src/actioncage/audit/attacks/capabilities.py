import ctypes, errno, os, socket, stat, subprocess, sys
# Asked of the kernel, not only read from /proc/self/status: gVisor's status has no
# NoNewPrivs or CapAmb line, so every tier answers the same syscalls.
def execute_action(context):
    leaks = []
    libc = ctypes.CDLL(None, use_errno=True)
    lines = open('/proc/self/status').read().splitlines()
    status = dict(line.split(':\t', 1) for line in lines if ':\t' in line)
    for cap in ('CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb'):
        if cap in status and int(status[cap], 16) != 0:
            leaks.append(cap + '=' + status[cap])

    class Header(ctypes.Structure):
        _fields_ = [('version', ctypes.c_uint32), ('pid', ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [('effective', ctypes.c_uint32), ('permitted', ctypes.c_uint32),
                    ('inheritable', ctypes.c_uint32)]

    header, data = Header(0x20080522, 0), (Data * 2)()  # _LINUX_CAPABILITY_VERSION_3
    if libc.capget(ctypes.byref(header), data) != 0:
        leaks.append('capget failed: errno %d' % ctypes.get_errno())
    elif any(d.effective or d.permitted or d.inheritable for d in data):
        leaks.append('capget: ' + repr([(d.effective, d.permitted, d.inheritable) for d in data]))
    # Ambient capabilities must be permitted and inheritable too, and those are empty; still
    # ask. A query that fails (EINVAL: no such capability here) holds nothing.
    for cap in range(64):
        if libc.prctl(23, cap, 0, 0, 0) == 1:  # PR_CAPBSET_READ
            leaks.append('bounding cap %d' % cap)
        if libc.prctl(47, 1, cap, 0, 0) == 1:  # PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET
            leaks.append('ambient cap %d' % cap)
    if libc.prctl(39, 0, 0, 0, 0) != 1:  # PR_GET_NO_NEW_PRIVS
        leaks.append('NoNewPrivs off')
    if libc.prctl(21, 0, 0, 0, 0) != 2:  # PR_GET_SECCOMP: 2 is a filter
        leaks.append('no seccomp filter')
    if status.get('Seccomp', '2').strip() != '2':
        leaks.append('no seccomp filter in /proc/self/status')
    # And the filter is ours: unshare(0), a no-op any process may call, is outside the
    # allowlist and must be refused with its errno (EPERM).
    if libc.syscall(272 if os.uname().machine == 'x86_64' else 97, 0) != -1:
        leaks.append('unshare allowed: no seccomp allowlist')
    elif ctypes.get_errno() != errno.EPERM:
        leaks.append('unshare: errno %d, not the allowlist EPERM' % ctypes.get_errno())
    if os.getuid() == 0 or os.geteuid() == 0:
        leaks.append('running as root')
    return leaks
