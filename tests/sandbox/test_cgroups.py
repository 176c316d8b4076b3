"""The jail's cgroups on the cgroup v2 (unified) tree. This host is hybrid: memory, pids and
cpu belong to its v1 hierarchies, so the v2 tree at /sys/fs/cgroup/unified has none of
them. What v2 code needs no controller for is tested on it for real: detecting the tree,
saying why the jail cannot use it, and moving a process tree in, listing, killing
(``cgroup.kill``) and removing it. Setting limits (memory.max, memory.swap.max, pids.max,
cpu.max) and reading memory.events need the controllers: the jail's v1 path is what runs
here (tests/sandbox/test_outcomes.py, on the jail tier)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from actioncage.sandbox.jail.cgroups import Cgroups, SandboxCgroup
from tests.conftest import wait_for

UNIFIED = Path("/sys/fs/cgroup/unified")


@pytest.fixture
def unified() -> Iterator[Path]:
    """A fresh directory of our own in the host's v2 tree, removed afterwards."""
    if not (UNIFIED / "cgroup.controllers").exists():
        pytest.skip(f"no cgroup v2 tree at {UNIFIED}")
    if os.geteuid() != 0:
        pytest.skip("making cgroups needs root")
    root = UNIFIED / f"actioncage-test-{uuid.uuid4().hex[:8]}"
    root.mkdir()
    try:
        yield root
    finally:
        for path in sorted(root.glob("**/"), key=lambda p: len(p.parts), reverse=True):
            path.rmdir()


def test_a_v2_tree_without_the_controllers_is_named_and_refused(unified: Path) -> None:
    cgroups = Cgroups(unified)
    assert cgroups.version == 2 and cgroups.bases() == [unified / "actioncage"]
    available = (unified / "cgroup.controllers").read_text().split()
    if {"memory", "pids", "cpu"} <= set(available):
        pytest.skip("this v2 tree has the controllers: the jail's v2 path runs whole here")
    problem = cgroups.problem("ins_test")
    assert problem is not None and "lacks the" in problem, problem
    assert all(c in problem for c in ("memory", "pids", "cpu") if c not in available)
    assert not (unified / "actioncage").exists()  # refused before it made anything


def test_a_v2_sandbox_cgroup_holds_kills_and_removes_a_process_tree(unified: Path) -> None:
    path = unified / "actioncage-sandbox"
    path.mkdir()
    group = SandboxCgroup(2, [path])
    # Waits for a line, then forks: the child is born inside the cgroup.
    proc = subprocess.Popen(
        [sys.executable, "-c", "import os, sys, time\nsys.stdin.readline()\nos.fork()\n"
         "time.sleep(60)\n"],
        stdin=subprocess.PIPE,
    )  # fmt: skip
    try:
        group.add(proc.pid)
        assert proc.stdin is not None
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
        assert wait_for(lambda: len(group.pids()) == 2, timeout=10), group.pids()
        assert proc.pid in group.pids()
        group.kill()  # cgroup.kill: the kernel kills every process in it
        assert group.pids() == []
        assert proc.wait(10) == -9
        assert group.oom_killed() is False  # no memory controller, no memory.events
        assert group.remove() is True and not path.exists()
    finally:
        proc.kill()
        proc.wait()
        if proc.stdin is not None:
            proc.stdin.close()
