"""The self-audit: a catalogue of escape and abuse attempts, run against the live configuration.

``actioncage audit`` runs every attack through the real executor and engine and prints a table;
``tests/security/`` runs the same catalogue through HTTP. Most attacks are probes: the script
tries many things and returns the list of those that worked, and the safe outcome is an empty
list. The others expect a specific error type (timeout, memory_limit, output_limit...).
"""

from __future__ import annotations

import json
import os
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from actioncage.models import OrgPolicy, Policy, RunResult
from actioncage.settings import Settings

# The audit org's egress ceiling: a reserved name, so allowing it can reach nothing real.
AUDIT_EGRESS_CEILING = ("*.audit.invalid",)
# A daemon child's command line carries this, so the host can look for survivors.
DAEMON_MARKER = "4242.4242"
_SURVIVOR_WAIT_S = 10.0


@dataclass(frozen=True)
class Observed:
    """What a run looked like from outside, from a RunResult or its wire form."""

    status: str
    error_type: str | None
    output: Any
    logs: str
    effects: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_run(cls, run: RunResult) -> Observed:
        return cls(
            status=str(run.status),
            error_type=None if run.error is None else str(run.error.type),
            output=run.output,
            logs=run.logs,
            effects=[{"kind": str(e.kind), **e.data} for e in run.effects],
        )

    @classmethod
    def from_wire(cls, body: dict[str, Any]) -> Observed:
        error = body.get("error") or {}
        return cls(
            status=body["status"],
            error_type=error.get("type"),
            output=body.get("output"),
            logs=body.get("logs", ""),
            effects=list(body.get("effects", [])),
        )

    def summary(self) -> str:
        if self.status == "ok":
            text = json.dumps(self.output, default=str)
            return "ok " + (text if len(text) <= 60 else text[:57] + "...")
        return f"error {self.error_type}"


Check = Callable[[Observed], bool]


@dataclass(frozen=True)
class Attack:
    """One attempt: a script, the policy it asks for, and the outcome that means "safe"."""

    name: str
    category: str
    expected: str
    code: str
    check: Check
    policy: Policy = Policy()
    needs_conversation: bool = False
    # Run first as a separate action (isolation between runs).
    before: str | None = None
    # Checked on the host after the run: True when nothing survived.
    after: Callable[[], bool] | None = None


def _clean(o: Observed) -> bool:
    return o.status == "ok" and o.output == []


def _error(*types: str) -> Check:
    return lambda o: o.status == "error" and o.error_type in types


def _not_ok_output(forged: str) -> Check:
    return lambda o: not (o.status == "ok" and o.output == forged)


def _probe(body: str) -> str:
    """A script whose ``execute_action`` runs ``body`` with ``leaks`` (a list) and returns it."""
    return (
        "import ctypes, errno, os, socket, stat, subprocess, sys\n"
        "def execute_action(context):\n"
        "    leaks = []\n"
        + textwrap.indent(textwrap.dedent(body).strip("\n"), "    ")
        + "\n    return leaks\n"
    )


def _connects(targets: list[tuple[str, int]]) -> str:
    return _probe(
        f"""
        for host, port in {targets!r}:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(1.0)
            try:
                s.connect((host, port))
                leaks.append(f"connected to {{host}}:{{port}}")
            except OSError:
                pass
            finally:
                s.close()
        """
    )


def no_survivors(marker: str = DAEMON_MARKER, wait_s: float = _SURVIVOR_WAIT_S) -> bool:
    """True once no host process has ``marker`` in its command line (waits a little: the
    engine reaps a removed container's processes asynchronously). Vacuously true when the
    engine runs on another host."""
    deadline = time.monotonic() + wait_s
    needle = marker.encode()
    while True:
        found = any(needle in _cmdline(pid) for pid in os.listdir("/proc") if pid.isdigit())
        if not found:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)


def _cmdline(pid: str) -> bytes:
    try:
        return Path("/proc", pid, "cmdline").read_bytes()
    except OSError:  # the process ended meanwhile
        return b""


_FORGED_FRAME = '{"type":"result","status":"ok","output":"forged","effects":[]}\\n'
_ECHO_FORGED = "echo '" + _FORGED_FRAME[:-2] + "'"
_FORGED_TAGS = (
    '{"type":"result","status":"ok","output":"forged","effects":['
    + ",".join(f'{{"kind":"add_tag","tag":"t{i}"}}' for i in range(500))
    + "]}\\n"
)

CATALOGUE: tuple[Attack, ...] = (
    # --- CPU and memory ---------------------------------------------------------------------
    Attack(
        "cpu_spin",
        "cpu",
        "timeout",
        "def execute_action(context):\n    while True:\n        pass\n",
        _error("timeout"),
        Policy(timeout_ms=1500),
    ),
    Attack(
        "cpu_spin_in_children",
        "cpu",
        "timeout",
        "import os\ndef execute_action(context):\n"
        "    for _ in range(4):\n        if os.fork() == 0:\n            while True: pass\n"
        "    while True:\n        pass\n",
        _error("timeout"),
        Policy(timeout_ms=1500),
    ),
    Attack(
        "memory_balloon",
        "memory",
        "memory_limit",
        "def execute_action(context):\n    hog = []\n"
        "    while True:\n        hog.append(bytearray(16 << 20))\n",
        _error("memory_limit"),
        Policy(memory_mb=64),
    ),
    Attack(
        "memory_in_child",
        "memory",
        "not ok, server fine",
        "import subprocess, sys\ndef execute_action(context):\n"
        "    subprocess.run([sys.executable, '-c', 'x = bytearray(1 << 30)'], check=True)\n"
        "    return 'allocated 1 GiB'\n",
        lambda o: o.status == "error",
        Policy(memory_mb=64),
    ),
    # --- processes ----------------------------------------------------------------------------
    Attack(
        "fork_bomb",
        "processes",
        "fewer than the pid cap",
        "import os, time\ndef execute_action(context):\n    n = 0\n    try:\n"
        "        while n < 1000:\n            if os.fork() == 0:\n"
        "                time.sleep(30)\n                os._exit(0)\n            n += 1\n"
        "    except OSError:\n        pass\n    return n\n",
        lambda o: o.status == "ok" and isinstance(o.output, int) and o.output < 64,
    ),
    Attack(
        "thread_bomb",
        "processes",
        "fewer than the pid cap",
        "import threading, time\ndef execute_action(context):\n    n = 0\n    try:\n"
        "        while n < 1000:\n"
        "            threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n"
        "            n += 1\n    except RuntimeError:\n        pass\n    return n\n",
        lambda o: o.status == "ok" and isinstance(o.output, int) and o.output < 64,
    ),
    Attack(
        "daemon_child_outlives_run",
        "processes",
        "ok, child gone",
        "import os, subprocess\ndef execute_action(context):\n"
        "    if os.fork() == 0:\n        os.setsid()\n"
        f"        subprocess.Popen(['sleep', '{DAEMON_MARKER}'], start_new_session=True)\n"
        "        os._exit(0)\n"
        f"    subprocess.Popen(['sleep', '{DAEMON_MARKER}'], start_new_session=True)\n"
        "    return 'spawned'\n",
        lambda o: o.status == "ok",
        after=no_survivors,
    ),
    # --- disk --------------------------------------------------------------------------------
    Attack(
        "fill_tmp",
        "disk",
        "stops at the tmpfs size",
        "def execute_action(context):\n    written = 0\n    try:\n"
        "        with open('/tmp/fill', 'wb') as f:\n"
        "            while written < (256 << 20):\n"
        "                f.write(b'x' * (1 << 20))\n                written += 1 << 20\n"
        "                f.flush()\n"
        "    except OSError:\n        pass\n    return written >> 20\n",
        lambda o: (
            o.status == "error"
            or (o.status == "ok" and isinstance(o.output, int) and o.output <= 17)
        ),
    ),
    Attack(
        "write_root_and_etc",
        "disk",
        "ok []",
        _probe(
            """
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
            """
        ),
        _clean,
    ),
    Attack(
        "exec_from_tmp",
        "disk",
        "ok []",
        _probe(
            """
            with open('/tmp/run.sh', 'w') as f:
                f.write('#!/bin/sh\\necho ran\\n')
            os.chmod('/tmp/run.sh', 0o755)
            try:
                subprocess.run(['/tmp/run.sh'], capture_output=True, check=True)
                leaks.append('executed a file from /tmp')
            except OSError:
                pass
            """
        ),
        _clean,
    ),
    # --- output flooding ----------------------------------------------------------------------
    Attack(
        "huge_result",
        "output",
        "output_limit",
        "def execute_action(context):\n    return 'x' * (64 << 20)\n",
        _error("output_limit"),
    ),
    Attack(
        "huge_prints",
        "output",
        "output_limit",
        "def execute_action(context):\n    line = 'y' * 1023\n"
        "    for _ in range(200_000):\n        print(line)\n    return 'done'\n",
        _error("output_limit"),
    ),
    Attack(
        "huge_prints_from_child",
        "output",
        "output_limit",
        "import subprocess\ndef execute_action(context):\n"
        "    subprocess.run(['sh', '-c', 'yes flood | head -c 100000000'])\n    return 'done'\n",
        _error("output_limit"),
    ),
    Attack(
        "deep_nesting",
        "output",
        "not ok, server fine",
        "def execute_action(context):\n    value = []\n"
        "    for _ in range(200_000):\n        value = [value]\n    return value\n",
        lambda o: o.status == "error",
    ),
    # --- network -------------------------------------------------------------------------------
    Attack(
        "metadata_address",
        "network",
        "ok []",
        _connects([("169.254.169.254", 80), ("169.254.170.2", 80), ("100.100.100.200", 80)]),
        _clean,
    ),
    Attack(
        "host_ports",
        "network",
        "ok []",
        _connects([("127.0.0.1", 8080), ("127.0.0.1", 22), ("0.0.0.0", 8080)]),
        _clean,
    ),
    Attack(
        "private_ranges",
        "network",
        "ok []",
        _connects([("10.0.0.1", 80), ("192.168.1.1", 80), ("172.16.0.1", 80)]),
        _clean,
    ),
    Attack(
        "docker_gateway",
        "network",
        "ok []",
        _connects([("172.17.0.1", 2375), ("172.17.0.1", 2376), ("172.17.0.1", 8080)]),
        _clean,
    ),
    Attack(
        "public_internet_and_dns",
        "network",
        "ok []",
        _probe(
            """
            try:
                socket.getaddrinfo('example.com', 443)
                leaks.append('resolved example.com')
            except OSError:
                pass
            import requests
            try:
                requests.get('https://example.com', timeout=2)
                leaks.append('fetched example.com')
            except requests.RequestException:
                pass
            """
        ),
        _clean,
    ),
    Attack(
        "raw_and_packet_sockets",
        "network",
        "ok []",
        _probe(
            """
            for family, kind, proto in [(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
                                        (socket.AF_PACKET, socket.SOCK_RAW, 0x0300)]:
                try:
                    socket.socket(family, kind, proto).close()
                    leaks.append(f'opened a raw socket {family}')
                except OSError:
                    pass
            """
        ),
        _clean,
    ),
    Attack(
        "network_interfaces",
        "network",
        "only lo",
        "import socket\ndef execute_action(context):\n"
        "    return sorted(name for _, name in socket.if_nameindex())\n",
        lambda o: o.status == "ok" and o.output == ["lo"],
    ),
    Attack(
        "egress_proxy_refuses_the_rest",
        "network",
        "ok []",
        _probe(
            """
            import requests
            answered = 0
            for url in ['http://169.254.169.254/latest/meta-data/', 'http://10.0.0.1/',
                        'http://127.0.0.1:8080/', 'http://example.com/',
                        'http://api.audit.invalid/', 'https://example.com/']:
                try:
                    status = requests.get(url, timeout=5).status_code
                    answered += 1
                    if status != 403:
                        leaks.append(f'{url} answered {status}')
                except requests.exceptions.ProxyError:
                    pass
                except requests.RequestException as exc:
                    leaks.append(f'{url}: {type(exc).__name__} (not refused by the proxy)')
            for target in [('169.254.169.254', 80), ('10.0.0.1', 80), ('8.8.8.8', 53)]:
                try:
                    socket.create_connection(target, timeout=2).close()
                    leaks.append(f'direct connect to {target}')
                except OSError:
                    pass
            if sorted(n for _, n in socket.if_nameindex()) != ['lo']:
                leaks.append('has a network interface besides lo')
            if answered != 5:
                leaks.append(f'the proxy refused {answered} of 5 plain-HTTP requests')
            """
        ),
        _clean,
        Policy(egress=AUDIT_EGRESS_CEILING),
    ),
    Attack(
        "no_proxy_without_egress_policy",
        "network",
        "ok []",
        _probe(
            """
            leaks.extend(k for k in os.environ if 'proxy' in k.lower())
            if os.path.exists('/run/actioncage-egress'):
                leaks.append('egress socket mounted')
            """
        ),
        _clean,
    ),
    # --- privilege -----------------------------------------------------------------------------
    Attack(
        "setuid_root",
        "privilege",
        "ok []",
        _probe(
            """
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
            """
        ),
        _clean,
    ),
    Attack(
        "capabilities",
        "privilege",
        "ok []",
        _probe(
            """
            lines = open('/proc/self/status').read().splitlines()
            status = dict(line.split(':\\t', 1) for line in lines if ':\\t' in line)
            for cap in ('CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb'):
                if int(status[cap], 16) != 0:
                    leaks.append(cap + '=' + status[cap])
            if status.get('NoNewPrivs', '').strip() != '1':
                leaks.append('NoNewPrivs off')
            if status.get('Seccomp', '').strip() != '2':
                leaks.append('no seccomp filter')
            if os.getuid() == 0 or os.geteuid() == 0:
                leaks.append('running as root')
            """
        ),
        _clean,
    ),
    Attack(
        "mount_and_namespaces",
        "privilege",
        "ok []",
        _probe(
            """
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
            """
        ),
        _clean,
    ),
    Attack(
        "ptrace_and_kernel_interfaces",
        "privilege",
        "ok []",
        _probe(
            """
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
            """
        ),
        _clean,
    ),
    Attack(
        "docker_socket_and_devices",
        "privilege",
        "ok []",
        _probe(
            """
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
            """
        ),
        _clean,
    ),
    # --- secrets -------------------------------------------------------------------------------
    Attack(
        "environment",
        "secrets",
        "ok []",
        _probe(
            """
            words = ('ACTIONCAGE', 'KEY', 'TOKEN', 'SECRET', 'PASSWORD', 'AWS', 'DOCKER')
            for source in (dict(os.environ), open('/proc/1/environ', 'rb').read().decode()):
                text = str(source).upper()
                leaks.extend(w for w in words if w in text)
            out = subprocess.run(['env'], capture_output=True, text=True).stdout.upper()
            leaks.extend('env:' + w for w in words if w in out)
            """
        ),
        _clean,
    ),
    Attack(
        "proc_and_mounts",
        "secrets",
        "ok []",
        _probe(
            """
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
            """
        ),
        _clean,
    ),
    # --- isolation between runs ----------------------------------------------------------------
    Attack(
        "marker_from_previous_run",
        "isolation",
        "ok []",
        _probe(
            """
            import builtins
            if os.path.exists('/tmp/actioncage-marker'):
                leaks.append('file marker survived')
            if getattr(builtins, 'actioncage_marker', None):
                leaks.append('global marker survived')
            if os.environ.get('ACTIONCAGE_MARKER'):
                leaks.append('environment marker survived')
            """
        ),
        _clean,
        before=(
            "import builtins, os\ndef execute_action(context):\n"
            "    open('/tmp/actioncage-marker', 'w').write('x')\n"
            "    builtins.actioncage_marker = True\n"
            "    os.environ['ACTIONCAGE_MARKER'] = '1'\n    return 'planted'\n"
        ),
    ),
    # --- interpreter tricks --------------------------------------------------------------------
    Attack(
        "os_exit",
        "interpreter",
        "exception",
        "import os\ndef execute_action(context):\n    os._exit(0)\n",
        _error("exception"),
    ),
    Attack(
        "sys_exit",
        "interpreter",
        "exception",
        "import sys\ndef execute_action(context):\n    sys.exit(0)\n",
        _error("exception"),
    ),
    Attack(
        "recursion_bomb",
        "interpreter",
        "not ok, server fine",
        "import sys\ndef f(n):\n    return f(n + 1) + 1\n"
        "def execute_action(context):\n    sys.setrecursionlimit(10**7)\n    return f(0)\n",
        lambda o: o.status == "error",
    ),
    Attack(
        "ctypes_crash",
        "interpreter",
        "exception",
        "import ctypes\ndef execute_action(context):\n    ctypes.memset(16, 0, 64)\n    return 1\n",
        _error("exception"),
    ),
    Attack(
        "forge_result_on_raw_stdout",
        "interpreter",
        "not the forged output",
        "import os\ndef execute_action(context):\n"
        f"    os.write(1, b'{_FORGED_FRAME}')\n"
        f"    os.system({_ECHO_FORGED!r})\n"
        "    return 'real'\n",
        lambda o: o.status == "ok" and o.output == "real",
    ),
    Attack(
        "forge_result_on_every_fd",
        "interpreter",
        "not the forged output",
        "import os\ndef execute_action(context):\n    for fd in range(3, 64):\n"
        "        try:\n"
        f"            os.write(fd, b'{_FORGED_FRAME}')\n"
        "        except OSError:\n            pass\n    return 'real'\n",
        _not_ok_output("forged"),
    ),
    Attack(
        "forge_effects_past_limits",
        "interpreter",
        "effects refused",
        "import os\ndef execute_action(context):\n    for fd in range(3, 64):\n"
        "        try:\n"
        f"            os.write(fd, b'{_FORGED_TAGS}')\n"
        "        except OSError:\n            pass\n    os._exit(0)\n",
        lambda o: o.status == "error" and not o.effects,
        needs_conversation=True,
    ),
    # --- helper abuse --------------------------------------------------------------------------
    Attack(
        "helper_oversized_value",
        "helpers",
        "ok []",
        _probe(
            """
            for call in (lambda: set_conversation_metadata(context, 'k', 'v' * (1 << 20)),
                         lambda: set_conversation_metadata(context, 'k' * 10_000, 1),
                         lambda: add_conversation_event(context, {'e': 'x' * (1 << 20)}),
                         lambda: hand_off_conversation(context, 'r' * 100_000)):
                try:
                    call()
                    leaks.append('accepted an oversized value')
                except (TypeError, ValueError):
                    pass
            """
        ),
        lambda o: _clean(o) and not o.effects,
        needs_conversation=True,
    ),
    Attack(
        "helper_thousands_of_tags",
        "helpers",
        "at most 100 tags",
        "def execute_action(context):\n    n = 0\n    try:\n"
        "        for i in range(5000):\n"
        "            add_conversation_tag(context, f't{i}')\n            n += 1\n"
        "    except ValueError:\n        pass\n    return n\n",
        lambda o: o.status == "ok" and o.output <= 100 and len(o.effects) <= 100,
        needs_conversation=True,
    ),
    Attack(
        "helper_wrong_types",
        "helpers",
        "ok []",
        _probe(
            """
            for call in (lambda: add_conversation_tag(context, 123),
                         lambda: add_conversation_tag(context, None),
                         lambda: set_conversation_metadata(context, 5, 'v'),
                         lambda: set_conversation_metadata(context, 'k', object()),
                         lambda: add_conversation_event(context, 3.5),
                         lambda: set_conversation_metadata({'conversation': {'id': 'x'}}, 'k', 1),
                         lambda: llm_classify_binary(None, None)):
                try:
                    call()
                    leaks.append('accepted a wrong type')
                except Exception:
                    pass
            """
        ),
        lambda o: _clean(o) and not o.effects,
        needs_conversation=True,
    ),
)


@dataclass(frozen=True)
class AuditResult:
    attack: Attack
    observed: str
    passed: bool


def run_battery(settings: Settings, attacks: tuple[Attack, ...] = CATALOGUE) -> list[AuditResult]:
    """Run every attack through the real executor and engine, in a throwaway store.

    Each run gets the live settings (limits, runtime, image), so a configuration change shows
    here. Returns one AuditResult per attack.
    """
    from dataclasses import replace

    from actioncage.hostcalls.registry import HostCalls
    from actioncage.runs.executor import Executor
    from actioncage.sandbox.docker.backend import bare_runner
    from actioncage.store import Store, repo

    results = []
    with tempfile.TemporaryDirectory(prefix="actioncage-audit-") as tmp:
        settings = replace(settings, database_url=f"sqlite:///{tmp}/audit.db")
        store = Store(settings.database_url)
        store.create_all()
        runner = bare_runner(settings)
        executor = Executor(settings, store, runner, HostCalls(settings))
        with store.session() as s:
            repo.set_org_policy(s, "audit", OrgPolicy(egress=AUDIT_EGRESS_CEILING))
        try:
            for i, attack in enumerate(attacks):
                with store.session() as s:
                    conversation = (
                        repo.create_conversation(s, "audit", f"conv-{i}", [], {}, [])
                        if attack.needs_conversation
                        else None
                    )
                if attack.before is not None:
                    before = _action(store, f"{i}_before", attack.before)
                    executor.run_action(before, None, {}, None)
                action = _action(store, str(i), attack.code, attack.policy)
                run = executor.run_action(action, None, {}, conversation)
                observed = Observed.from_run(run)
                passed = attack.check(observed)
                note = observed.summary()
                if passed and attack.after is not None and not attack.after():
                    passed, note = False, note + "; something outlived the run"
                results.append(AuditResult(attack, note, passed))
        finally:
            runner.backend.close()
            store.dispose()
    return results


def _action(store: Any, suffix: str, code: str, policy: Policy | None = None) -> Any:
    from actioncage.store import repo

    with store.session() as s:
        return repo.create_action(
            s,
            "audit",
            "audit",
            {
                "name": f"audit_{suffix}",
                "type": "python",
                "code": code,
                "parameters": None,
                "description": None,
                "policy": policy or Policy(),
            },
        )


def print_table(results: list[AuditResult], out: TextIO) -> None:
    """The results as a fixed-width table, then a one-line verdict."""
    rows = [("attempt", "category", "expected", "observed", "result")]
    for r in results:
        rows.append(
            (
                r.attack.name,
                r.attack.category,
                r.attack.expected,
                r.observed,
                "pass" if r.passed else "FAIL",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows:
        out.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        out.write("\n")
    failed = sum(not r.passed for r in results)
    out.write(f"\n{len(results) - failed}/{len(results)} attempts contained")
    out.write(f"; {failed} FAILED\n" if failed else "\n")
