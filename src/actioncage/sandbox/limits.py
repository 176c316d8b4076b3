"""sandbox/: sandbox/limits.py: pure Policy plus Settings to limits, and limits to each tier's
options (container options for Docker and gVisor, bubblewrap flags and cgroup limits for the
jail). Deny by default."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any

from actioncage.egress.guard import HostPattern, parse_patterns, pattern_within
from actioncage.errors import EgressRefusedError, PolicyError
from actioncage.models import EffectiveLimits, Isolation, OrgPolicy, Policy
from actioncage.settings import Settings

SANDBOX_UID = 10001
COMMAND = ["/opt/actioncage/python", "-I", "-m", "actioncage_runtime"]
# A container's runtime, after a clean result, waits for the hang-up to exit (the runtime's
# linger()), so the container's exit happens when it is removed, in a quiet moment.
LINGER_FLAG = "--linger"
MANAGED_LABEL = "io.actioncage.managed"
RUN_ID_LABEL = "io.actioncage.run-id"
# The instance id of the process that started it: a process removes only its own sandboxes
# and those a dead owner left.
OWNER_LABEL = "io.actioncage.owner"
# Framing overhead the control plane tolerates on top of max_output_bytes before it kills.
FRAME_ALLOWANCE_BYTES = 64 * 1024
# Where a run with egress finds the proxy's socket (``proxy.sock``) inside the container.
EGRESS_MOUNT = "/run/actioncage-egress"
SECCOMP_PROFILE_PATH = Path(__file__).with_name("seccomp.json")
# Under gVisor the container's pids cgroup also holds gVisor's own threads (the Sentry, the
# gofer, and with ptrace a host thread per script thread): hitting it kills the whole sandbox.
# The host cap gets this headroom, and the script's cap is gVisor's own RLIMIT_NPROC, which
# it enforces per sandbox (under runc that limit would be per host uid, shared by all).
GVISOR_HOST_PIDS_HEADROOM = 512


@cache
def seccomp_profile() -> str:
    """Our seccomp profile (an allowlist stricter than Docker's default), as compact JSON."""
    profile = json.loads(SECCOMP_PROFILE_PATH.read_text(encoding="utf-8"))
    return json.dumps(profile, separators=(",", ":"), sort_keys=True)


# Linux (libseccomp) syscall names that gVisor's syscall table spells differently.
GVISOR_SYSCALL_NAMES = {"pselect6": "pselect"}


@cache
def gvisor_seccomp_profile() -> str:
    """The profile as the gvisor tier loads it (inside gVisor, with ``--oci-seccomp``): the
    same allowlist with clone3 allowed. gVisor turns the ENOSYS rule into EPERM, so glibc
    (threads, posix_spawn) would not fall back to clone; allowed, clone3 reaches gVisor's own
    kernel, never the host's, which answers ENOSYS itself, and clone stays filtered.

    Also, every allowed syscall is named as gVisor's own table names it: runsc's OCI seccomp
    ignores a name it does not know (logging "OCI seccomp: ignoring syscall"), so that
    syscall falls to the default action, EPERM. Syscall 270 is ``pselect6`` to Linux and
    libseccomp but ``pselect`` to gVisor; without the alias glibc's select() (Python's
    ``select.select``, the runtime's egress relay) failed with EPERM under gVisor only."""
    profile = json.loads(seccomp_profile())
    profile["syscalls"] = [r for r in profile["syscalls"] if r["names"] != ["clone3"]]
    allowed = {*profile["syscalls"][0]["names"], "clone3"}
    allowed |= {GVISOR_SYSCALL_NAMES[n] for n in allowed if n in GVISOR_SYSCALL_NAMES}
    profile["syscalls"][0]["names"] = sorted(allowed)
    return json.dumps(profile, separators=(",", ":"), sort_keys=True)


def _container_seccomp(limits: EffectiveLimits) -> str:
    if limits.isolation is Isolation.GVISOR:
        return gvisor_seccomp_profile()
    return seccomp_profile()


def seccomp_sha256() -> str:
    """The sha256 of the profile exactly as it is handed to the engine."""
    return hashlib.sha256(seccomp_profile().encode()).hexdigest()


def _ceilings(settings: Settings, org: OrgPolicy | None) -> tuple[int, int, float, str]:
    """The effective maxima (timeout, memory, cpus) and who set them, for messages."""
    timeout, memory, cpus = settings.max_timeout_ms, settings.max_memory_mb, settings.max_cpus
    if org is None:
        return timeout, memory, cpus, "the operator's maximum"
    return (
        min(timeout, org.max_timeout_ms or timeout),
        min(memory, org.max_memory_mb or memory),
        min(cpus, org.max_cpus or cpus),
        "the org's ceiling",
    )


def check_policy(policy: Policy, settings: Settings, org: OrgPolicy | None = None) -> Policy:
    """The policy, if every limit it asks for is within the operator's maxima and the org's
    ceiling.

    Raises PolicyError naming the field and the maximum.
    """
    max_timeout, max_memory, max_cpus, who = _ceilings(settings, org)
    if policy.timeout_ms is not None and not 1 <= policy.timeout_ms <= max_timeout:
        raise PolicyError(
            f"timeoutMs must be between 1 and {max_timeout} ({who})", field="timeoutMs"
        )
    if policy.memory_mb is not None and not 16 <= policy.memory_mb <= max_memory:
        raise PolicyError(f"memoryMb must be between 16 and {max_memory} ({who})", field="memoryMb")
    if policy.cpus is not None and not 0.01 <= policy.cpus <= max_cpus:
        raise PolicyError(f"cpus must be between 0.01 and {max_cpus} ({who})", field="cpus")
    floor = org.min_isolation if org is not None else None
    if policy.isolation is not None and floor is not None and policy.isolation.rank < floor.rank:
        raise PolicyError(
            f"policy.isolation {policy.isolation} is weaker than the org's minimum {floor} "
            f"(from weakest: {', '.join(Isolation)})",
            field="policy.isolation",
        )
    ceiling = egress_ceiling(settings, org)
    for pattern in parse_patterns(policy.egress):
        if not pattern_within(pattern, ceiling):
            raise PolicyError(
                f"egress {pattern} is outside {_egress_owner(org)} "
                f"({', '.join(map(str, ceiling)) or 'no egress allowed'})",
                field="policy.egress",
            )
    return policy


def isolation_for(policy: Policy, settings: Settings, org: OrgPolicy | None) -> Isolation:
    """The tier a run gets: the action's ask, else the operator's default (ACTIONCAGE_ISOLATION),
    raised to the org's minimum (which may have been raised since the action was saved)."""
    asked = policy.isolation or Isolation(settings.isolation)
    floor = org.min_isolation if org is not None else None
    return floor if floor is not None and asked.rank < floor.rank else asked


def egress_ceiling(settings: Settings, org: OrgPolicy | None) -> tuple[HostPattern, ...]:
    """The hosts an org's scripts and API actions may reach at most: the org's own ceiling,
    or the operator's default (``default_egress``, empty: none) when it has none."""
    if org is not None and org.egress is not None:
        return parse_patterns(org.egress)
    return parse_patterns(settings.default_egress_list)


def _egress_owner(org: OrgPolicy | None) -> str:
    if org is not None and org.egress is not None:
        return "the org's ceiling"
    return "the default egress ceiling ACTIONCAGE_DEFAULT_EGRESS"


def api_egress(
    policy: Policy, settings: Settings, org: OrgPolicy | None, host: str, port: int
) -> tuple[HostPattern, ...]:
    """The hosts an API action's call may reach, if ``host:port`` is one of them.

    The action's ``policy.egress`` clamped to the ceiling, exactly as for a script; an action
    that lists none asks for its own endpoint's host and port. Raises EgressRefusedError
    naming the host and how to allow it.
    """
    host = host.lower().rstrip(".")
    own = (HostPattern(host=host, port=port),)
    asked = parse_patterns(policy.egress) if policy.egress else own
    ceiling = egress_ceiling(settings, org)
    allowed = tuple(p for p in asked if pattern_within(p, ceiling))
    if any(p.matches(host, port) for p in allowed):
        return allowed
    if policy.egress and not any(p.matches(host, port) for p in asked):
        raise EgressRefusedError(
            f"{host}:{port} is not in the action's policy.egress "
            f"({', '.join(map(str, asked))}); add it there"
        )
    raise EgressRefusedError(
        f"{host}:{port} is outside {_egress_owner(org)} "
        f"({', '.join(map(str, ceiling)) or 'no egress allowed'}); the operator allows it "
        f"with `actioncage org set-policy <org> --egress {host}`, or with "
        f"ACTIONCAGE_DEFAULT_EGRESS={host} for every org without a ceiling of its own"
    )


def effective_limits(
    policy: Policy, settings: Settings, org: OrgPolicy | None = None
) -> EffectiveLimits:
    """The limits a run gets: the action's ask, else the default, clamped to the maxima and
    to the org's ceiling (which may have been lowered since the action was saved)."""
    max_timeout, max_memory, max_cpus, _ = _ceilings(settings, org)
    timeout_ms = policy.timeout_ms or settings.default_timeout_ms
    memory_mb = policy.memory_mb or settings.default_memory_mb
    cpus = policy.cpus or settings.default_cpus
    return EffectiveLimits(
        timeout_ms=min(timeout_ms, max_timeout),
        memory_mb=min(memory_mb, max_memory),
        cpus=min(cpus, max_cpus),
        pids=settings.pids_limit,
        tmpfs_mb=settings.tmpfs_mb,
        max_output_bytes=settings.max_output_bytes,
        max_host_calls=settings.max_host_calls,
        egress=_egress_within(policy.egress, egress_ceiling(settings, org)),
        isolation=isolation_for(policy, settings, org),
    )


def _egress_within(asked: tuple[str, ...], ceiling: tuple[HostPattern, ...]) -> tuple[str, ...]:
    """The action's egress patterns still inside the ceiling (it may have shrunk)."""
    return tuple(p for p in asked if pattern_within(HostPattern.parse(p), ceiling))


def policy_hash(limits: EffectiveLimits, settings: Settings) -> str:
    """sha256 of everything a run is confined by: its limits and its tier's full options
    (container options with the seccomp profile inline, or the jail's flags, cgroup limits
    and seccomp profile), canonical JSON. Stored on each run's audit record."""
    # The socket directory differs per run; what confines the run is that there is one.
    limits = replace(limits, egress_dir="<per-run>" if limits.egress_dir else None)
    document: dict[str, Any] = {"limits": limits.__dict__}
    if limits.isolation is Isolation.JAIL:
        document["jail"] = {**jail_options(limits), "seccomp": seccomp_profile()}
    else:
        document["container"] = container_options(limits, settings)
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


class PolicyHashes:
    """policy_hash under one Settings, remembered per limits: every run hashes the canonical
    JSON of its whole confinement (seccomp profile inline), and most runs share a few
    limits. Thread-safe; bounded."""

    _MAX = 256

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._known: dict[EffectiveLimits, str] = {}

    def __call__(self, limits: EffectiveLimits) -> str:
        key = replace(limits, egress_dir="<per-run>" if limits.egress_dir else None)
        hashed = self._known.get(key)
        if hashed is None:
            hashed = policy_hash(limits, self._settings)
            if len(self._known) >= self._MAX:
                self._known.clear()
            self._known[key] = hashed
        return hashed


def container_options(limits: EffectiveLimits, settings: Settings) -> dict[str, Any]:
    """Keyword arguments for the engine's create call, host config included.

    Everything is closed: no network, no capabilities, read-only root, non-root user,
    no host mounts or environment, swap pinned to memory, pids capped.
    """
    memory = f"{limits.memory_mb}m"
    host_config: dict[str, Any] = {
        "network_mode": "none",
        "mem_limit": memory,
        "memswap_limit": memory,  # equal to memory: no swap
        "nano_cpus": int(limits.cpus * 1e9),
        "pids_limit": limits.pids,
        "read_only": True,
        "tmpfs": {"/tmp": f"rw,noexec,nosuid,nodev,size={limits.tmpfs_mb}m,mode=1777"},
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges", f"seccomp={_container_seccomp(limits)}"],
        "ipc_mode": "private",
        "privileged": False,
        "ulimits": [
            {"Name": "core", "Soft": 0, "Hard": 0},
            {"Name": "nofile", "Soft": 256, "Hard": 256},
            {"Name": "fsize", "Soft": limits.tmpfs_mb << 20, "Hard": limits.tmpfs_mb << 20},
        ],
        "oom_kill_disable": False,
        "init": True,  # reaps zombies; dies with the run
    }
    if limits.isolation is Isolation.GVISOR:
        host_config["runtime"] = settings.gvisor_runtime
        host_config["pids_limit"] = limits.pids + GVISOR_HOST_PIDS_HEADROOM
        host_config["ulimits"].append({"Name": "nproc", "Soft": limits.pids, "Hard": limits.pids})
    elif settings.docker_runtime:
        host_config["runtime"] = settings.docker_runtime
    if limits.egress_dir is not None:
        # Still no network: the only way out is the proxy's unix socket, mounted read-only.
        host_config["binds"] = {limits.egress_dir: {"bind": EGRESS_MOUNT, "mode": "ro"}}
    return {
        "command": [*COMMAND, LINGER_FLAG],
        "user": f"{SANDBOX_UID}:{SANDBOX_UID}",
        "working_dir": "/tmp",
        "environment": {},
        "network_disabled": True,
        "stdin_open": True,
        "tty": False,
        "hostname": "sandbox",
        "host_config": host_config,
    }


def jail_options(limits: EffectiveLimits) -> dict[str, Any]:
    """The jail tier's confinement for these limits: bubblewrap's flags (the backend adds the
    root filesystem, its file descriptors and the command), the cgroup limits the control
    plane sets, and the resource limits of the sandbox's first process.

    The same closure as container_options: new user, pid, mount, ipc, uts, net and cgroup
    namespaces (no network but loopback), read-only root, a fresh size-capped noexec /tmp
    (``tmpfs``, mounted by the backend), uid and
    gid 10001, no capabilities, no new privileges (bubblewrap sets it to load the seccomp
    filter), an init that reaps zombies and takes every process with it, no environment.
    """
    uid = str(SANDBOX_UID)
    flags = [
        "--unshare-user",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-net",
        "--unshare-cgroup",
        "--uid",
        uid,
        "--gid",
        uid,
        "--hostname",
        "sandbox",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--chdir",
        "/tmp",
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
        "--clearenv",
    ]
    # /run is an empty read-only tmpfs: the egress socket's mount point exists only in a
    # run that has one.
    flags += ["--size", "65536", "--tmpfs", "/run"]
    if limits.egress_dir is not None:
        flags += ["--ro-bind", limits.egress_dir, EGRESS_MOUNT]
    flags += ["--remount-ro", "/run"]
    memory = limits.memory_mb << 20
    return {
        "bwrap": flags,
        "cgroup": {
            "memory_bytes": memory,
            "memory_swap_bytes": memory,  # equal to memory: no swap
            "pids": limits.pids,
            "cpu_period_us": 100_000,
            "cpu_quota_us": int(limits.cpus * 100_000),
        },
        "rlimits": {"core": 0, "nofile": 256, "fsize": limits.tmpfs_mb << 20},
        # /tmp: a tmpfs the control plane mounts per sandbox and binds in (bubblewrap's own
        # cannot be noexec); its pages count against the sandbox's memory cgroup.
        "tmpfs": f"size={limits.tmpfs_mb << 20},mode=1777,nosuid,nodev,noexec",
        "user": f"{SANDBOX_UID}:{SANDBOX_UID}",
    }


def policy_description(settings: Settings, org: OrgPolicy | None = None) -> dict[str, Any]:
    """The effective sandbox settings of a run with the default policy, for auditors to read:
    the limits, every container option, the seccomp profile's sha256, the policy hash
    runs with these limits record and the egress ceiling (the org's, or the operator's).
    The profile itself is shown by hash, not inline.
    """
    limits = effective_limits(Policy(), settings, org)
    container = container_options(limits, settings)
    host_config = dict(container["host_config"])
    host_config["security_opt"] = [
        "seccomp=sha256:" + seccomp_sha256() if o.startswith("seccomp=") else o
        for o in host_config["security_opt"]
    ]
    container["host_config"] = host_config
    max_timeout, max_memory, max_cpus, _ = _ceilings(settings, org)
    return {
        "limits": dict(limits.__dict__),
        "maxima": {"timeout_ms": max_timeout, "memory_mb": max_memory, "cpus": max_cpus},
        "container": container,
        "seccomp_sha256": seccomp_sha256(),
        "policy_hash": policy_hash(limits, settings),
        "egress_ceiling": [str(p) for p in egress_ceiling(settings, org)],
    }
