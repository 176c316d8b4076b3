"""models.py: Frozen dataclasses and enums shared by every layer. Stdlib only."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class ActionType(enum.StrEnum):
    PYTHON = "python"
    API = "api"


class RunStatus(enum.StrEnum):
    OK = "ok"
    ERROR = "error"
    # Only a run record can be "running" (a call that answered 202); never a run's outcome.
    RUNNING = "running"


class InvocationTrigger(enum.StrEnum):
    USER_QUERY = "user_query"
    CONVERSATION_START = "webhook.conversation_start"
    CONVERSATION_END = "webhook.conversation_end"


class FrontDoor(enum.StrEnum):
    """The door a run came in by; recorded on every run."""

    NATIVE = "native"
    RASA = "rasa"
    BOTPRESS = "botpress"
    DASHBOARD = "dashboard"
    TRIGGER = "trigger"
    BACKGROUND = "background"
    CLI = "cli"
    AUDIT = "audit"
    MCP = "mcp"


class ErrorType(enum.StrEnum):
    """Exactly the contract's error types."""

    TIMEOUT = "timeout"
    MEMORY_LIMIT = "memory_limit"
    OUTPUT_LIMIT = "output_limit"
    EXCEPTION = "exception"
    INVALID_RETURN = "invalid_return"
    INVALID_ARGS = "invalid_args"
    SANDBOX_ERROR = "sandbox_error"


class EffectKind(enum.StrEnum):
    SET_METADATA = "set_metadata"
    DELETE_METADATA = "delete_metadata"
    ADD_TAG = "add_tag"
    ADD_EVENT = "add_event"
    HAND_OFF = "hand_off"


class Isolation(enum.StrEnum):
    """How strongly a run is isolated: which sandbox backend runs it (docs/security.md).
    Declared weakest first; ``rank`` orders them."""

    JAIL = "jail"  # bubblewrap namespaces + cgroups + seccomp: a process on the host kernel
    CONTAINER = "container"  # Docker + runc: the same confinement, from the engine
    GVISOR = "gvisor"  # Docker + runsc: the script's syscalls land in gVisor's own kernel

    @property
    def rank(self) -> int:
        """0 for the weakest tier; a stronger tier ranks higher."""
        return list(Isolation).index(self)


@dataclass(frozen=True)
class Policy:
    """Per-action sandbox limits; ``None`` means "the operator's default"."""

    timeout_ms: int | None = None
    memory_mb: int | None = None
    cpus: float | None = None
    # Host patterns (``api.example.com``, ``*.example.com``, optional ``:port``) the run may
    # reach through the egress proxy; empty: no network at all.
    egress: tuple[str, ...] = ()
    isolation: Isolation | None = None


@dataclass(frozen=True)
class EffectiveLimits:
    """The limits a run actually gets, after clamping to the operator's maxima."""

    timeout_ms: int
    memory_mb: int
    cpus: float
    pids: int
    tmpfs_mb: int
    max_output_bytes: int
    max_host_calls: int
    egress: tuple[str, ...] = ()
    # The host directory holding this run's egress proxy socket, mounted read-only.
    egress_dir: str | None = None
    # The tier the run is isolated by (the warm pool keeps sandboxes per tier, too).
    isolation: Isolation = Isolation.CONTAINER


@dataclass(frozen=True)
class Action:
    id: str
    org_id: str
    name: str
    version: int
    type: ActionType
    code: str
    parameters: dict[str, Any] | None
    policy: Policy
    description: str | None
    created_by: str
    created_at: datetime
    updated_by: str
    updated_at: datetime
    # type "api": {url, method, headers, query, payload, timeoutMs} (see http_actions).
    endpoint: dict[str, Any] | None = None
    # Texts a bot shows the user while waiting, on success and on failure.
    user_waiting_text: str | None = None
    user_success_text: str | None = None
    user_error_text: str | None = None
    invocation_trigger: InvocationTrigger = InvocationTrigger.USER_QUERY
    # The JSON Schema an output must match (None: any JSON); a mismatch is invalid_return.
    returns: dict[str, Any] | None = None
    # The names of the org's secrets the action may read (get_secret, $secret.name).
    secrets: tuple[str, ...] = ()


@dataclass(frozen=True)
class Message:
    role: str
    text: str


@dataclass(frozen=True)
class Conversation:
    id: str
    org_id: str
    metadata: dict[str, Any]
    tags: tuple[str, ...]
    events: tuple[Any, ...]
    messages: tuple[dict[str, Any], ...]
    handed_off: bool
    hand_off_reason: str | None
    created_at: datetime
    updated_at: datetime
    ended_at: datetime | None = None


@dataclass(frozen=True)
class Effect:
    """One recorded helper effect, validated; ``data`` holds the kind's fields."""

    kind: EffectKind
    data: dict[str, Any]


@dataclass(frozen=True)
class RunError:
    type: ErrorType
    message: str
    traceback: str | None = None


@dataclass(frozen=True)
class RunResult:
    run_id: str
    org_id: str
    action_id: str
    action_version: int
    status: RunStatus
    output: Any
    error: RunError | None
    effects: tuple[Effect, ...]
    effects_applied: bool
    logs: str
    duration_ms: int
    started_at: datetime
    finished_at: datetime
    conversation_id: str | None
    caller_key_id: str | None
    image_digest: str | None
    # sha256 of the effective sandbox settings the run ran under (limits, flags, seccomp).
    policy_hash: str | None = None
    # Every connection the run asked the egress proxy for: host, port, allowed, reason, bytes.
    egress: tuple[dict[str, Any], ...] = ()
    # The door the run came in by (None: recorded before doors were).
    front_door: FrontDoor | None = None
    # The args the run was called with (None: recorded before runs kept them).
    args: dict[str, Any] | None = None
    # The names of the secrets the run was given (never their values).
    secrets: tuple[str, ...] = ()
    # The executor worker that ran the sandbox part (None: in-process, or no sandbox ran).
    executor: str | None = None
    # The isolation tier it ran in and that tier's runtime ("runc 1.1.5", "bubblewrap 0.8.0");
    # None: no sandbox ran (or recorded before tiers were).
    isolation: Isolation | None = None
    runtime_version: str | None = None


@dataclass(frozen=True)
class OrgPolicy:
    """The operator's ceilings for one org; ``None`` means "the operator-wide maximum"."""

    max_timeout_ms: int | None = None
    max_memory_mb: int | None = None
    max_cpus: float | None = None
    restricted: bool = False
    runs_per_minute: int | None = None
    concurrent_runs: int | None = None
    # The host patterns this org's scripts and API actions may reach; empty: none at all;
    # None: the org has no ceiling of its own and gets the operator's (default_egress).
    egress: tuple[str, ...] | None = None
    # The weakest isolation tier the org's runs may use (None: any).
    min_isolation: Isolation | None = None


@dataclass(frozen=True)
class ApiKey:
    id: str
    org_id: str


@dataclass(frozen=True)
class KeyRecord:
    """An API key as the operator lists it (never its secret); ``revoked_at`` None: live."""

    id: str
    org_id: str
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class RawOutcome:
    """What came out of one container, before any of it is trusted."""

    result_frame: dict[str, Any] | None
    logs: bytes
    exit_code: int | None
    oom_killed: bool
    timed_out: bool
    output_exceeded: bool
    protocol_error: str | None
    duration_ms: int
    host_calls: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class IdempotentResponse:
    """A stored answer to an execute call made with an Idempotency-Key."""

    status_code: int
    body: Any


@dataclass(frozen=True)
class SecretRecord:
    """An org secret as it is listed: never its value."""

    org_id: str
    name: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class WorkerStatus:
    """A worker as its last heartbeat described it; ``seen_at``: when that came (this
    process's monotonic clock)."""

    name: str
    host: str
    slots: int
    busy: int
    warm: dict[str, int]
    image_digest: str | None
    leaving: bool
    seen_at: float
    sent_at: float  # the worker's wall clock when it sent the heartbeat (epoch seconds)
