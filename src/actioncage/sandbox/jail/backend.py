"""sandbox/jail/: sandbox/jail/backend.py: the jail tier: each sandbox is the runtime under
Debian's bubblewrap, in new namespaces on the sandbox image's exported root filesystem, in
cgroups the control plane makes, behind the same seccomp allowlist; its stdin, stdout and
stderr are pipes."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import logging
import os
import queue
import select
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Collection
from pathlib import Path
from typing import Protocol

from actioncage.errors import ActioncageError, SandboxError, TierUnavailableError
from actioncage.models import Isolation, Policy
from actioncage.sandbox.backend import (
    END,
    ExitStatus,
    Output,
    Profile,
    Sandbox,
    Stream,
    TierStatus,
    wait_drained,
)
from actioncage.sandbox.foreground import Foreground
from actioncage.sandbox.jail.cgroups import Cgroups, SandboxCgroup
from actioncage.sandbox.jail.seccomp import compile_bpf
from actioncage.sandbox.limits import (
    COMMAND,
    SANDBOX_UID,
    effective_limits,
    jail_options,
    seccomp_profile,
    seccomp_sha256,
)
from actioncage.sandbox.refresh import Refreshed, Retry
from actioncage.settings import Settings

log = logging.getLogger(__name__)

# bubblewrap prints its own failures (before the command runs) as "bwrap: ..." and exits 1.
_BWRAP_FAILED = b"bwrap: "
_INFO_TIMEOUT_S = 10.0
_WRITE_TIMEOUT_S = 60.0
_REAP_TIMEOUT_S = 10.0
# How often the image's digest is looked up again, so a rebuilt image is re-exported.
_DIGEST_TTL_S = 30.0
_COMPLETE = ".actioncage-complete"
_MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 2, 4, 8
_MNT_DETACH = 2
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
# The jail execs the runtime itself (there is no image entrypoint to go through): calling its
# main() from -c spares ``-m``'s runpy and what runpy imports (importlib.util, contextlib),
# about 1 ms of CPU per sandbox. The same interpreter, flags and module as COMMAND.
JAIL_COMMAND = [COMMAND[0], "-I", "-c", "from actioncage_runtime.__main__ import main; main()"]


def mount_tmpfs(path: Path, options: str) -> None:
    """Mount a tmpfs on ``path`` with ``options`` (size, mode; nosuid, nodev and noexec are
    always set). Raises OSError."""
    data = ",".join(o for o in options.split(",") if o not in ("nosuid", "nodev", "noexec"))
    flags = _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
    if _libc.mount(b"tmpfs", str(path).encode(), b"tmpfs", flags, data.encode()) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount tmpfs on {path}: {os.strerror(err)}")


def unmount(path: Path) -> None:
    """Detach whatever is mounted on ``path`` and remove the directory (quietly when gone)."""
    _libc.umount2(str(path).encode(), _MNT_DETACH)
    with contextlib.suppress(FileNotFoundError):
        path.rmdir()


class RootfsSource(Protocol):
    """Where the jail's root filesystem comes from: the engine that has the sandbox image."""

    def current_image_digest(self) -> str:
        """The image's id now. Raises SandboxError."""
        ...

    def export_rootfs(self, dest: str) -> None:
        """Unpack the image's filesystem into the empty directory ``dest``. Raises SandboxError."""
        ...


class JailSandbox:
    """One bubblewrap process tree: bwrap outside, its init as pid 1 of the new pid namespace,
    the runtime under it; all in the sandbox's cgroup."""

    def __init__(
        self,
        name: str,
        proc: subprocess.Popen[bytes],
        init_pidfd: int,
        cgroup: SandboxCgroup,
        profile: Profile,
        tmp: Path,
    ) -> None:
        self._name = name
        self._tmp = tmp
        self._proc = proc
        self._init_pidfd: int | None = init_pidfd
        self.cgroup = cgroup
        self._profile = profile
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        self._stdin: int | None = proc.stdin.fileno()
        self._streams = {proc.stdout.fileno(): Stream.STDOUT, proc.stderr.fileno(): Stream.STDERR}
        for fd in self._streams:
            os.set_blocking(fd, False)
        self._stderr_head = b""
        self._lock = threading.Lock()
        self.ready_at = time.monotonic()
        # What each step of this jail's life took, in seconds (start, then release): the
        # bench's per-step breakdown reads it.
        self.steps: dict[str, float] = {}

    @property
    def sandbox_id(self) -> str:
        return self._name

    @property
    def profile(self) -> Profile:
        return self._profile

    @property
    def pid(self) -> int:
        """bubblewrap's own process (outside the sandbox's namespaces)."""
        return self._proc.pid

    def write(self, data: bytes) -> None:
        if self._stdin is None:
            raise SandboxError("the sandbox's channel is closed")
        view = memoryview(data)
        deadline = time.monotonic() + _WRITE_TIMEOUT_S
        while view:
            # A runtime that stops reading its stdin is cut off, not waited for forever.
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([], [self._stdin], [], remaining)[1]:
                raise SandboxError("the sandbox stopped reading its input")
            try:
                view = view[os.write(self._stdin, view[:65536]) :]
            except BrokenPipeError as exc:
                raise SandboxError("the sandbox's input is closed") from exc

    def read(self, timeout_s: float) -> Output | None:
        if not self._streams:
            return END
        ready, _, _ = select.select(list(self._streams), [], [], max(0.0, timeout_s))
        if not ready:
            return None
        # stdout first when both have something: frames before the logs after them.
        fd = min(ready, key=lambda f: self._streams[f])
        stream = self._streams[fd]
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return None
        if not data:
            del self._streams[fd]
            return END if not self._streams else self.read(0)
        if stream is Stream.STDERR and len(self._stderr_head) < 512:
            self._stderr_head += data[:512]
        return stream, data

    def alive(self) -> bool:
        return bool(self._streams) and self._proc.poll() is None

    def close(self) -> None:
        for pipe in (self._proc.stdin, self._proc.stdout, self._proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        self._stdin = None
        self._streams = {}

    def kill(self) -> None:
        """SIGKILL the jail's namespace init and bubblewrap; never waits. When pid 1 of a pid
        namespace dies the kernel kills every process in it, and nothing in the jail's
        cgroup lives outside that namespace but bubblewrap itself, so this ends the whole
        tree; release() still sweeps the cgroup until it is empty."""
        with self._lock:
            # Its pidfd never names a reused pid.
            if self._init_pidfd is not None:
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(self._init_pidfd, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()

    def wait(self, timeout_s: float) -> ExitStatus:
        try:
            code = self._proc.wait(timeout_s)
        except subprocess.TimeoutExpired as exc:
            raise SandboxError(f"the jail {self._name} did not end within {timeout_s} s") from exc
        if code == 1 and self._stderr_head.startswith(_BWRAP_FAILED):
            # bubblewrap itself failed, before the runtime ran: no run was produced.
            message = self._stderr_head.decode(errors="replace").strip().splitlines()[0]
            raise SandboxError(f"the jail could not start: {message}")
        if code < 0:  # bwrap itself was killed (by us): report it like a killed process
            code = 128 - code
        return ExitStatus(code, self.cgroup.oom_killed())

    def release(self) -> None:
        """Kill what is left, reap bubblewrap, make sure the cgroup is empty and remove it,
        and unmount /tmp (idempotent)."""
        self.close()
        self.kill()
        began = time.perf_counter()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(_REAP_TIMEOUT_S)
        with self._lock:
            if self._init_pidfd is not None:
                os.close(self._init_pidfd)
                self._init_pidfd = None
        reaped = time.perf_counter()
        self.cgroup.kill()
        killed = time.perf_counter()
        self.cgroup.remove()
        removed = time.perf_counter()
        unmount(self._tmp)
        self.steps.update(
            reap=reaped - began,
            cgroup_kill=killed - reaped,
            cgroup_remove=removed - killed,
            unmount=time.perf_counter() - removed,
        )


class JailBackend:
    """Starts each sandbox as a bubblewrap jail and removes it after (implements
    actioncage.sandbox.backend.SandboxBackend for the ``jail`` tier).

    The root filesystem is the sandbox image's, exported from the engine once per image
    digest into ``settings.jail_dir`` (looked up again every 30 s, so a rebuilt image is
    re-exported) and bound read-only. bubblewrap runs as uid 10001 on the host too (when the
    control plane is root), so nothing in the jail is root anywhere. Every sandbox's
    processes live in a cgroup under ``actioncage/<owner>/``: a later process can find and
    kill what a dead owner left (bubblewrap's ``--die-with-parent`` already kills it).
    """

    def __init__(
        self,
        settings: Settings,
        owner_id: str,
        rootfs: RootfsSource,
        foreground: Foreground | None = None,
    ) -> None:
        self._settings = settings
        self._foreground = foreground
        self.owner_id = owner_id
        self._source = rootfs
        self._dir = Path(settings.jail_dir).absolute()
        self._cgroups = Cgroups()
        self._lock = threading.Lock()
        self._status: TierStatus | None = None
        self._bpf: Path | None = None
        # The programs each jail is started through, found once (by _probe).
        self._programs: dict[str, str] = {}
        # A failed look keeps the root filesystem the jails have, and looks again in 30 s.
        self._rootfs = Refreshed(
            self._check_rootfs,
            _DIGEST_TTL_S,
            name="actioncage-jail-rootfs",
            retry=Retry.AFTER_TTL,
            on_failure=_rootfs_check_failed,
        )
        self._export_lock = threading.Lock()
        self._live: dict[str, JailSandbox] = {}
        # Reaping and removing a killed jail (cgroup, /tmp) happens off the caller's path,
        # once no run is in flight (``foreground``, bounded): its processes are already dead.
        self._releases: queue.Queue[tuple[JailSandbox, float]] = queue.Queue()
        self._releaser: threading.Thread | None = None

    # -- the tier -------------------------------------------------------------------------

    def tier(self, isolation: Isolation) -> TierStatus:
        """Available when bubblewrap, user namespaces, cgroups and libseccomp all work here
        (probed once). Never raises."""
        if isolation is not Isolation.JAIL:
            return TierStatus(isolation, False, reason=f"{isolation} is not the jail")
        with self._lock:
            if self._status is None:
                self._status = self._probe()
            return self._status

    def _probe(self) -> TierStatus:
        def unavailable(reason: str) -> TierStatus:
            log.warning("isolation tier jail is unavailable: %s", reason)
            return TierStatus(Isolation.JAIL, False, reason=reason)

        bwrap = shutil.which("bwrap")
        if bwrap is None:
            return unavailable("bubblewrap (bwrap) is not installed: apt-get install bubblewrap")
        prlimit = shutil.which("prlimit")
        if prlimit is None:
            return unavailable("util-linux's prlimit is not installed: apt-get install util-linux")
        self._programs = {"bwrap": bwrap, "prlimit": prlimit}
        setpriv = shutil.which("setpriv")
        if setpriv is not None:
            self._programs["setpriv"] = setpriv
        problem = self._cgroups.problem(self.owner_id)
        if problem is not None:
            return unavailable(problem)
        try:
            probe_dir = self._tmp_root() / f"probe-{uuid.uuid4().hex[:8]}"
            probe_dir.mkdir(parents=True)
            try:
                mount_tmpfs(probe_dir, "size=4096,mode=1777")
            finally:
                unmount(probe_dir)
        except OSError as exc:
            return unavailable(f"cannot mount the jail's /tmp (needs CAP_SYS_ADMIN): {exc}")
        try:
            self._bpf = compile_bpf(
                seccomp_profile(), self._dir / f"seccomp-{seccomp_sha256()[:16]}.bpf"
            )
        except (SandboxError, OSError) as exc:
            return unavailable(f"cannot compile the seccomp allowlist: {exc}")
        # User namespaces may be off (sysctl) or refused to this uid: try one empty jail.
        probe = subprocess.run(
            [bwrap, "--unshare-all", "--ro-bind", "/", "/", "--", "/bin/true"],
            capture_output=True,
            timeout=30,
            check=False,
            user=_sandbox_user(),
            group=_sandbox_user(),
            extra_groups=None if _sandbox_user() is None else [],
        )
        if probe.returncode != 0:
            return unavailable(
                f"bubblewrap cannot make namespaces: {probe.stderr.decode(errors='replace')}"
            )
        version = subprocess.run(
            [bwrap, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip()
        options = jail_options(effective_limits(Policy(isolation=Isolation.JAIL), self._settings))
        flags = (
            *options["bwrap"],
            f"--seccomp=sha256:{seccomp_sha256()}",
            f"cgroup-v{self._cgroups.version}:"
            + ",".join(f"{k}={v}" for k, v in options["cgroup"].items()),
        )
        return TierStatus(
            Isolation.JAIL, True, runtime_version=version or "bubblewrap", flags=flags
        )

    def _tmp_root(self, owner: str | None = None) -> Path:
        return self._dir / "tmp" / (owner or self.owner_id)

    def ping(self) -> bool:
        return self.tier(Isolation.JAIL).available

    def image_digest(self) -> str:
        return self._source.current_image_digest()

    # -- the root filesystem --------------------------------------------------------------

    def rootfs(self) -> Path:
        """The exported root filesystem of the image's current digest. The first call looks
        the digest up (and exports the image when it is new); later ones return the last
        answer at once, and when it is older than 30 s a background thread looks again (and
        exports a rebuilt image), so no run pays for the lookup on its path.
        Raises SandboxError."""
        return self._rootfs.get()

    def _check_rootfs(self) -> Path:
        """The root filesystem of the image's current digest, exported now when it is new.
        Raises SandboxError."""
        with self._export_lock:
            digest = self._source.current_image_digest()
            path = self._dir / digest.removeprefix("sha256:")[:16]
            if not (path / _COMPLETE).exists():
                self._export(path)
            return path

    def _export(self, path: Path) -> None:
        self._dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self._dir, 0o755)  # bubblewrap runs as the sandbox's uid: it must get in
        tmp = self._dir / f".export-{uuid.uuid4().hex[:12]}"
        tmp.mkdir()
        try:
            log.info("jail: exporting %s into %s", self._settings.sandbox_image, path)
            self._source.export_rootfs(str(tmp))
            # Mount points the jail binds onto a read-only root must exist in it.
            for mount in ("tmp", "proc", "dev", "run"):
                (tmp / mount).mkdir(parents=True, exist_ok=True)
            os.chmod(tmp, 0o755)
            (tmp / _COMPLETE).touch()
            try:
                tmp.rename(path)
            except OSError:  # another process exported the same digest first
                if not (path / _COMPLETE).exists():
                    raise
        except OSError as exc:
            raise SandboxError(f"could not export the sandbox image for the jail: {exc}") from exc
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    # -- sandboxes ------------------------------------------------------------------------

    def start(self, run_id: str, profile: Profile) -> JailSandbox:
        """Start one jail named ``actioncage-<run_id>``; the caller must discard() it.

        bubblewrap starts blocked (``--block-fd``) until its processes are in the cgroup, so
        nothing the script does runs outside it.
        Raises TierUnavailableError when the jail cannot run here, else SandboxError.
        """
        status = self.tier(Isolation.JAIL)
        if not status.available or self._bpf is None:
            raise TierUnavailableError(
                f"isolation tier jail is unavailable on this machine: {status.reason}", "jail"
            )
        limits = profile.limits
        if limits.egress_dir is not None and not os.path.isdir(limits.egress_dir):
            raise SandboxError(f"the egress socket directory {limits.egress_dir} is missing")
        began = time.perf_counter()
        rootfs = self.rootfs()
        options = jail_options(limits)
        name = f"actioncage-{run_id}"
        tmp = self._tmp_root() / name
        steps: dict[str, float] = {}
        mark = time.perf_counter()
        steps["rootfs"] = mark - began
        try:
            tmp.mkdir(parents=True)
            mount_tmpfs(tmp, options["tmpfs"])
        except OSError as exc:
            unmount(tmp)
            raise SandboxError(f"could not make the jail's /tmp: {exc}") from exc
        mark = _step(steps, "tmpfs", mark)
        try:
            cgroup = self._cgroups.create(self.owner_id, name, options["cgroup"])
        except SandboxError:
            unmount(tmp)
            raise
        mark = _step(steps, "cgroup_create", mark)
        fds: list[int] = []
        proc: subprocess.Popen[bytes] | None = None
        pidfd: int | None = None
        try:
            seccomp_fd = os.open(self._bpf, os.O_RDONLY)
            fds.append(seccomp_fd)
            info_r, info_w = os.pipe()
            block_r, block_w = os.pipe()
            fds += [info_r, info_w, block_r, block_w]
            command = [*JAIL_COMMAND]
            if profile.preload is not None:
                command += ["--preload", profile.preload]
            rlimits = options["rlimits"]
            switch, as_user = self._user_switch()
            argv = [
                *switch,
                # util-linux's prlimit lowers its own limits and execs bwrap: the sandbox
                # inherits them (setting them on another process needs CAP_SYS_RESOURCE,
                # which even root may lack, as here).
                self._programs["prlimit"],
                f"--core={rlimits['core']}",
                f"--nofile={rlimits['nofile']}",
                f"--fsize={rlimits['fsize']}",
                self._programs["bwrap"],
                "--ro-bind",
                str(rootfs),
                "/",
                "--bind",
                str(tmp),
                "/tmp",
                *options["bwrap"],
                "--info-fd",
                str(info_w),
                "--block-fd",
                str(block_r),
                "--seccomp",
                str(seccomp_fd),
                "--",
                *command,
            ]
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(info_w, block_r, seccomp_fd),
                env={},
                user=as_user,
                group=as_user,
                extra_groups=None if as_user is None else [],
            )
            for fd in (info_w, block_r, seccomp_fd):
                os.close(fd)
                fds.remove(fd)
            mark = _step(steps, "spawn", mark)
            cgroup.add(proc.pid)
            init_pid = _child_pid(info_r, proc)
            mark = _step(steps, "namespaces", mark)
            pidfd = os.pidfd_open(init_pid)
            cgroup.add(init_pid)
            os.write(block_w, b"1")
            mark = _step(steps, "confine", mark)
            sandbox = JailSandbox(name, proc, pidfd, cgroup, profile, tmp)
            sandbox.steps.update(steps)
        except BaseException as exc:
            if pidfd is not None:
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                os.close(pidfd)
            if proc is not None:
                proc.kill()
                proc.wait()
                for pipe in (proc.stdin, proc.stdout, proc.stderr):
                    if pipe is not None:
                        pipe.close()
            cgroup.kill()
            cgroup.remove()
            unmount(tmp)
            if isinstance(exc, OSError):
                raise SandboxError(f"could not start the jail {name}: {exc}") from exc
            raise
        finally:
            for fd in fds:
                os.close(fd)
        with self._lock:
            self._live[name] = sandbox
        return sandbox

    def _user_switch(self) -> tuple[list[str], int | None]:
        """How bubblewrap comes to run as the sandbox's uid when we are root: the command
        prefix, and the uid Popen itself must switch to (None: it need not).

        util-linux's setpriv switches (real, effective and saved uid and gid; no
        supplementary groups; every capability gone with root) and execs the rest. Popen
        switching itself would cost more: with user=, group= or extra_groups= it must fork
        our whole process (copying the page tables of a control plane of 150 MB or more:
        about 8 ms of CPU per jail) instead of vforking it."""
        uid = _sandbox_user()
        if uid is None:
            return [], None
        setpriv = self._programs.get("setpriv")
        if setpriv is None:
            return [], uid
        return [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups"], None

    def discard(self, sandbox: Sandbox) -> None:
        """Hang up on a jail and kill its processes now; reaping them and removing its cgroup
        and /tmp follow on a background thread, once no run is in flight or the foreground's
        bound has passed (drain() waits for them)."""
        if not isinstance(sandbox, JailSandbox):
            raise TypeError(f"not a jail: {sandbox!r}")
        sandbox.close()
        try:
            sandbox.kill()
        except OSError:
            log.exception("could not kill jail %s", sandbox.sandbox_id)
        with self._lock:
            if self._releaser is None:
                self._releaser = threading.Thread(
                    target=self._release_loop, name="actioncage-jail-release", daemon=True
                )
                self._releaser.start()
        self._releases.put((sandbox, time.monotonic()))

    def _release_loop(self) -> None:
        while True:
            sandbox, queued_at = self._releases.get()
            try:
                if self._foreground is not None:
                    self._foreground.wait_quiet(queued_at)
                sandbox.release()
            except Exception:  # the thread outlives any one failure; a sweep finds the rest
                log.exception("could not remove jail %s", sandbox.sandbox_id)
            finally:
                with self._lock:
                    self._live.pop(sandbox.sandbox_id, None)
                self._releases.task_done()

    def sweep(self, dead_owners: Collection[str], unowned_older_than_s: float) -> int:
        """Kill and remove what dead owners' jails left (their cgroups and /tmp mounts).
        Returns how many jails."""
        if self._cgroups.version == 0:
            return 0
        removed = 0
        for owner in self._cgroups.owners():
            if owner in dead_owners and owner != self.owner_id:
                removed += self._cgroups.remove_owner(owner)
                self._remove_tmp_root(owner)
        return removed

    def _remove_tmp_root(self, owner: str) -> None:
        root = self._tmp_root(owner)
        with contextlib.suppress(FileNotFoundError):
            for path in root.iterdir():
                unmount(path)
            root.rmdir()

    @property
    def live_count(self) -> int:
        with self._lock:
            return len(self._live)

    @property
    def pending_removals(self) -> int:
        return self._releases.unfinished_tasks

    def drain(self, timeout_s: float = 30.0) -> bool:
        """Wait until every discarded jail is removed; False when ``timeout_s`` passed."""
        return wait_drained(self._releases, timeout_s)

    def close(self) -> None:
        """Remove every jail still live, then this owner's cgroup directories."""
        self._rootfs.close()  # a look in flight asks the engine, which closes after us
        with self._lock:
            live = list(self._live.values())
        for sandbox in live:
            self.discard(sandbox)
        self.drain()
        if self._cgroups.version:
            self._cgroups.remove_owner(self.owner_id)
        self._remove_tmp_root(self.owner_id)


def _rootfs_check_failed(exc: ActioncageError) -> None:
    log.warning("jail: could not check the sandbox image: %s", exc)


def _sandbox_user() -> int | None:
    """The uid (and gid) bubblewrap runs as: the sandbox's when we are root, so the jail's
    user namespace maps its uid 10001 to 10001 on the host, never to root; else our own."""
    return SANDBOX_UID if os.geteuid() == 0 else None


def _step(steps: dict[str, float], name: str, since: float) -> float:
    """Record how long ``name`` took since ``since`` (a perf_counter); returns now."""
    now = time.perf_counter()
    steps[name] = now - since
    return now


def _child_pid(info_r: int, proc: subprocess.Popen[bytes]) -> int:
    """The pid of bubblewrap's child (pid 1 of the new namespace), from ``--info-fd``."""
    info = b""
    deadline = time.monotonic() + _INFO_TIMEOUT_S
    while b"}" not in info:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([info_r], [], [], remaining)[0]:
            raise SandboxError("bubblewrap did not report its sandbox in time")
        chunk = os.read(info_r, 4096)
        if not chunk:
            problem = b""
            if proc.poll() is not None and proc.stderr is not None:
                problem = proc.stderr.read(512)
            raise SandboxError(
                f"the jail could not start: {problem.decode(errors='replace').strip()}"
            )
        info += chunk
    try:
        return int(json.loads(info)["child-pid"])
    except (ValueError, KeyError, TypeError) as exc:
        raise SandboxError(f"bubblewrap reported {info[:200]!r}") from exc
