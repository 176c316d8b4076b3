import ctypes, errno, os, socket, stat, subprocess, sys
def execute_action(context):
    leaks = []
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.ptrace(0, 0, None, None) == 0:
        leaks.append('ptrace traceme')
    pid = os.fork()
    if pid == 0:
        import time
        time.sleep(5)
        os._exit(0)
    if libc.ptrace(16, pid, None, None) == 0:
        leaks.append('ptrace attach')
    os.kill(pid, 9)
    if libc.personality(0x0400000) != -1:
        leaks.append('personality READ_IMPLIES_EXEC')
    machine = os.uname().machine
    numbers = {'x86_64': {'bpf': 321, 'userfaultfd': 323, 'perf_event_open': 298,
                          'keyctl': 250, 'add_key': 248, 'init_module': 175,
                          'kexec_load': 246, 'open_by_handle_at': 304,
                          'io_uring_setup': 425},
               'aarch64': {'bpf': 280, 'userfaultfd': 282, 'perf_event_open': 241,
                           'keyctl': 219, 'add_key': 217, 'init_module': 105,
                           'kexec_load': 104, 'open_by_handle_at': 265,
                           'io_uring_setup': 425}}.get(machine, {})
    for name, number in numbers.items():
        ctypes.set_errno(0)
        result = libc.syscall(number, 0, 0, 0, 0, 0)
        if result != -1 or ctypes.get_errno() != errno.EPERM:
            leaks.append(f'{name} answered {result}/{ctypes.get_errno()} (not EPERM)')
    return leaks
