"""Pure Policy plus Settings to container options. Deny by default."""

from __future__ import annotations

from typing import Any

from actioncage.errors import PolicyError
from actioncage.models import EffectiveLimits, Policy
from actioncage.settings import Settings

SANDBOX_UID = 10001
COMMAND = ["/opt/actioncage/python", "-I", "-m", "actioncage_runtime"]
MANAGED_LABEL = "io.actioncage.managed"
RUN_ID_LABEL = "io.actioncage.run-id"
# Framing overhead the control plane tolerates on top of max_output_bytes before it kills.
FRAME_ALLOWANCE_BYTES = 64 * 1024


def check_policy(policy: Policy, settings: Settings) -> Policy:
    """The policy, if every limit it asks for is within the operator's maxima.

    Raises PolicyError naming the field and the maximum.
    """
    if policy.timeout_ms is not None and not 1 <= policy.timeout_ms <= settings.max_timeout_ms:
        raise PolicyError(
            f"timeoutMs must be between 1 and {settings.max_timeout_ms}", field="timeoutMs"
        )
    if policy.memory_mb is not None and not 16 <= policy.memory_mb <= settings.max_memory_mb:
        raise PolicyError(
            f"memoryMb must be between 16 and {settings.max_memory_mb}", field="memoryMb"
        )
    if policy.cpus is not None and not 0.01 <= policy.cpus <= settings.max_cpus:
        raise PolicyError(f"cpus must be between 0.01 and {settings.max_cpus}", field="cpus")
    return policy


def effective_limits(policy: Policy, settings: Settings) -> EffectiveLimits:
    """The limits a run gets: the action's ask, else the default, clamped to the maxima."""
    timeout_ms = policy.timeout_ms or settings.default_timeout_ms
    memory_mb = policy.memory_mb or settings.default_memory_mb
    cpus = policy.cpus or settings.default_cpus
    return EffectiveLimits(
        timeout_ms=min(timeout_ms, settings.max_timeout_ms),
        memory_mb=min(memory_mb, settings.max_memory_mb),
        cpus=min(cpus, settings.max_cpus),
        pids=settings.pids_limit,
        tmpfs_mb=settings.tmpfs_mb,
        max_output_bytes=settings.max_output_bytes,
        max_host_calls=settings.max_host_calls,
    )


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
        "security_opt": ["no-new-privileges"],
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
    if settings.docker_runtime:
        host_config["runtime"] = settings.docker_runtime
    return {
        "command": COMMAND,
        "user": f"{SANDBOX_UID}:{SANDBOX_UID}",
        "working_dir": "/tmp",
        "environment": {},
        "network_disabled": True,
        "stdin_open": True,
        "tty": False,
        "hostname": "sandbox",
        "host_config": host_config,
    }


def policy_description(settings: Settings) -> dict[str, Any]:
    """The default container options, for operators and auditors to read."""
    limits = effective_limits(Policy(), settings)
    return {"limits": limits.__dict__, "container": container_options(limits, settings)}
