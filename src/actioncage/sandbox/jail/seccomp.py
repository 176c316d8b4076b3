"""sandbox/jail/: sandbox/jail/seccomp.py: the seccomp allowlist every tier uses
(sandbox/seccomp.json, Docker's format), compiled once to the BPF program bubblewrap loads
with ``--seccomp FD``."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from actioncage.errors import SandboxError

_ACTIONS = {"SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO"}


def compile_bpf(profile_json: str, dest: Path) -> Path:
    """Compile a Docker-format seccomp profile (an allowlist: default action ERRNO, rules that
    ALLOW or answer an errno, argument conditions) for this machine's architecture and write
    the BPF program to ``dest`` (atomically). Names this kernel or libseccomp does not know
    are skipped, as the engine skips them. Returns ``dest``.

    Raises SandboxError when libseccomp is missing or the profile uses what we do not handle.
    """
    try:
        import pyseccomp as sc
    except (ImportError, OSError) as exc:  # OSError: libseccomp itself is missing
        raise SandboxError(f"libseccomp is not usable ({exc}): install libseccomp2") from exc
    profile: dict[str, Any] = json.loads(profile_json)
    if profile.get("defaultAction") != "SCMP_ACT_ERRNO":
        raise SandboxError("the seccomp profile must deny by default (SCMP_ACT_ERRNO)")
    try:
        bpf = sc.SyscallFilter(sc.ERRNO(int(profile.get("defaultErrnoRet", 1))))
        for rule in profile["syscalls"]:
            if rule["action"] not in _ACTIONS:
                raise SandboxError(f"seccomp action {rule['action']} is not supported")
            action = (
                sc.ALLOW if rule["action"] == "SCMP_ACT_ALLOW" else sc.ERRNO(int(rule["errnoRet"]))
            )
            # Docker's {value, valueTwo} are libseccomp's two operands (mask, then datum for
            # MASKED_EQ), as runc hands them over.
            args = [
                sc.Arg(
                    int(a["index"]),
                    getattr(sc, a["op"].removeprefix("SCMP_CMP_")),
                    int(a["value"]),
                    int(a.get("valueTwo", 0)),
                )
                for a in rule.get("args") or ()
            ]
            for name in rule["names"]:
                try:
                    bpf.add_rule(action, name, *args)
                except (ValueError, RuntimeError, OSError):
                    continue  # a syscall this architecture lacks
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".seccomp-", dir=dest.parent)
        with os.fdopen(fd, "wb") as out:
            bpf.export_bpf(out)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except (KeyError, TypeError, AttributeError) as exc:
        raise SandboxError(f"the seccomp profile is malformed: {exc!r}") from exc
    return dest
