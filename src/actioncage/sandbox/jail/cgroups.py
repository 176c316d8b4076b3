"""sandbox/jail/: sandbox/jail/cgroups.py: the jail's cgroups, made by the control plane: one
per sandbox, under ``actioncage/<owner>/``, with its memory (swap off), pids and CPU limits;
cgroup v1 (one tree per controller) or v2 (the unified tree)."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

from actioncage.errors import SandboxError

log = logging.getLogger(__name__)

ROOT = Path("/sys/fs/cgroup")
PARENT = "actioncage"
_V1_CONTROLLERS = ("memory", "pids", "cpu")
_V2_CONTROLLERS = ("memory", "pids", "cpu")
# A cgroup is removable only once the kernel has let go of its last process: retry briefly.
_RMDIR_ATTEMPTS = 50
_RMDIR_RETRY_S = 0.005
_KILL_ROUNDS = 50


class Cgroups:
    """This machine's cgroup layout: v1 when the memory controller has its own tree (this
    machine), else v2; ``version`` 0 when neither is usable."""

    def __init__(self, root: Path = ROOT) -> None:
        self.root = root
        if (root / "memory" / "memory.limit_in_bytes").exists():
            self.version = 1
        elif (root / "cgroup.controllers").exists():
            self.version = 2
        else:
            self.version = 0

    def problem(self, owner: str) -> str | None:
        """Why this process cannot make cgroups for ``owner``'s sandboxes, or None."""
        if self.version == 0:
            return f"no cgroup v1 memory controller or cgroup v2 tree under {self.root}"
        if self.version == 2:
            # On a hybrid host the v2 tree exists but every controller is bound to a v1 one
            # (only one hierarchy can hold a controller); a v2 host may not delegate them.
            available = (self.root / "cgroup.controllers").read_text().split()
            missing = [c for c in _V2_CONTROLLERS if c not in available]
            if missing:
                return (
                    f"the cgroup v2 tree {self.root} lacks the {', '.join(missing)} "
                    "controller(s) the jail needs (bound to cgroup v1 hierarchies, or not "
                    "delegated to this tree)"
                )
        try:
            for base in self.bases():
                (base / owner).mkdir(parents=True, exist_ok=True)
            if self.version == 2:
                self._enable_v2_controllers(owner)
        except OSError as exc:
            return f"cannot make cgroups under {self.root}: {exc}"
        return None

    def bases(self) -> list[Path]:
        if self.version == 1:
            return [self.root / c / PARENT for c in _V1_CONTROLLERS]
        return [self.root / PARENT]

    def _enable_v2_controllers(self, owner: str) -> None:
        # Each level hands memory, pids and cpu down to its children (no process lives in
        # these inner levels, as v2 requires).
        for level in (self.root, self.root / PARENT, self.root / PARENT / owner):
            control = level / "cgroup.subtree_control"
            enabled = control.read_text().split()
            wanted = [c for c in _V2_CONTROLLERS if c not in enabled]
            if wanted:
                control.write_text(" ".join("+" + c for c in wanted))

    def create(self, owner: str, name: str, limits: dict[str, Any]) -> SandboxCgroup:
        """A new cgroup ``name`` for one of ``owner``'s sandboxes, with ``limits`` (the
        ``cgroup`` part of limits.jail_options) set. Raises SandboxError."""
        made: list[Path] = []
        try:
            for base in self.bases():
                path = base / owner / name
                path.mkdir(parents=True)
                made.append(path)
            group = SandboxCgroup(self.version, made)
            group.set_limits(limits)
            return group
        except OSError as exc:
            for path in made:
                with contextlib.suppress(OSError):
                    path.rmdir()
            raise SandboxError(f"could not make the jail's cgroup {name}: {exc}") from exc

    def owners(self) -> list[str]:
        """The owners that have a cgroup directory here."""
        found: set[str] = set()
        for base in self.bases():
            with contextlib.suppress(OSError):
                found.update(p.name for p in base.iterdir() if p.is_dir())
        return sorted(found)

    def remove_owner(self, owner: str) -> int:
        """Kill whatever still runs in ``owner``'s cgroups and remove them. Returns how many
        sandbox cgroups were removed."""
        removed = 0
        names: set[str] = set()
        for base in self.bases():
            with contextlib.suppress(OSError):
                names.update(p.name for p in (base / owner).iterdir() if p.is_dir())
        for name in sorted(names):
            group = SandboxCgroup(self.version, [b / owner / name for b in self.bases()])
            group.kill()
            removed += group.remove()
        for base in self.bases():
            with contextlib.suppress(OSError):
                (base / owner).rmdir()
        return removed


class SandboxCgroup:
    """One sandbox's cgroup: a directory per v1 controller, or one v2 directory."""

    def __init__(self, version: int, paths: list[Path]) -> None:
        self.version = version
        self.paths = paths

    def _file(self, controller: str, name: str) -> Path:
        if self.version == 2:
            return self.paths[0] / name
        return self.paths[_V1_CONTROLLERS.index(controller)] / name

    def set_limits(self, limits: dict[str, Any]) -> None:
        """Write the memory (swap off), pids and CPU limits. Raises OSError."""
        memory = str(limits["memory_bytes"])
        quota, period = limits["cpu_quota_us"], limits["cpu_period_us"]
        if self.version == 2:
            self._file("memory", "memory.max").write_text(memory)
            swap = self._file("memory", "memory.swap.max")
            if swap.exists():
                swap.write_text("0")
            self._file("pids", "pids.max").write_text(str(limits["pids"]))
            self._file("cpu", "cpu.max").write_text(f"{quota} {period}")
            return
        self._file("memory", "memory.limit_in_bytes").write_text(memory)
        memsw = self._file("memory", "memory.memsw.limit_in_bytes")
        if memsw.exists():
            memsw.write_text(str(limits["memory_swap_bytes"]))
        else:  # the kernel keeps no swap accounting: at least never prefer swapping
            self._file("memory", "memory.swappiness").write_text("0")
        self._file("pids", "pids.max").write_text(str(limits["pids"]))
        self._file("cpu", "cpu.cfs_period_us").write_text(str(period))
        self._file("cpu", "cpu.cfs_quota_us").write_text(str(quota))

    def add(self, pid: int) -> None:
        """Move process ``pid`` (not its existing children) in. Raises OSError."""
        for path in self.paths:
            (path / "cgroup.procs").write_text(str(pid))

    def pids(self) -> list[int]:
        """The processes in it now."""
        found: set[int] = set()
        for path in self.paths:
            with contextlib.suppress(OSError):
                found.update(int(p) for p in (path / "cgroup.procs").read_text().split())
        return sorted(found)

    def oom_killed(self) -> bool:
        """Whether the kernel's OOM killer killed a process in it."""
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        try:
            text = self._file("memory", name).read_text()
        except OSError:
            return False
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit():
                return int(value) > 0
        return False

    def kill(self) -> None:
        """SIGKILL every process in it, until none is left (bounded)."""
        kill_file = self.paths[0] / "cgroup.kill"
        if self.version == 2 and kill_file.exists():
            with contextlib.suppress(OSError):
                kill_file.write_text("1")
        for _ in range(_KILL_ROUNDS):
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.001)
        log.warning("processes %s outlived SIGKILL in %s", self.pids(), self.paths[0])

    def remove(self) -> bool:
        """Remove its directories (each once its processes are gone). False when one stays."""
        done = True
        for path in self.paths:
            for attempt in range(_RMDIR_ATTEMPTS):
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if exc.errno != errno.EBUSY or attempt == _RMDIR_ATTEMPTS - 1:
                        log.warning("could not remove cgroup %s: %s", path, exc)
                        done = False
                        break
                    time.sleep(_RMDIR_RETRY_S)
        return done
