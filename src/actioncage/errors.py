"""errors.py: The domain error tree. Stdlib only, no status codes.

ActioncageError
├── ConfigError            a setting is missing or malformed (stops start-up)
├── AuthError              no key, or a key that matches nothing
├── NotFoundError
│   ├── ActionNotFoundError
│   ├── ConversationNotFoundError
│   ├── KeyNotFoundError   no API key with that id
│   ├── RunNotFoundError
│   └── SecretNotFoundError   no secret of that name in the org
├── BadRequestError        the request body is not what the route takes
├── ValidationFailedError  a field breaks a rule (names the field)
│   ├── InvalidCodeError   the script does not compile or lacks execute_action
│   └── PolicyError        a limit asked beyond the operator's maximum
├── ConflictError          a unique name is taken
│   ├── IdempotencyInProgressError   the first call with this Idempotency-Key still runs
│   └── SecretsDisabledError   no ACTIONCAGE_SECRETS_KEY: secrets cannot be stored or read
├── RateLimitedError       an org or key is over its runs-per-minute or concurrency limit
│   └── OverloadedError    every run slot and queue place is taken; retry later
├── SandboxError           the engine failed us; no run could be produced
│   ├── EngineUnavailableError   no engine answers at all
│   └── TierUnavailableError     the run's isolation tier cannot run on this machine
├── HostCallError          a host call (LLM, Sheets) failed or is not configured
├── SharedStateError       the shared state (Redis) did not answer
└── BusyError              the background run queue is full
"""

from __future__ import annotations


class ActioncageError(Exception):
    """Base of every error actioncage raises on purpose."""


class ConfigError(ActioncageError):
    """A setting is missing or malformed."""


class AuthError(ActioncageError):
    """The caller presented no key or an unknown key."""


class NotFoundError(ActioncageError):
    """A named object does not exist in the caller's org."""


class ActionNotFoundError(NotFoundError):
    """No such action."""


class ConversationNotFoundError(NotFoundError):
    """No such conversation."""


class KeyNotFoundError(NotFoundError):
    """No API key with that id."""


class RunNotFoundError(NotFoundError):
    """No such run."""


class SecretNotFoundError(NotFoundError):
    """No secret of that name in the org."""


class BadRequestError(ActioncageError):
    """The request body is not what the route takes."""


class ValidationFailedError(ActioncageError):
    """A field breaks a rule; ``field`` names it."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class InvalidCodeError(ValidationFailedError):
    """The script does not compile or does not define execute_action."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message, field="code")
        self.line = line


class PolicyError(ValidationFailedError):
    """A per-action limit asks for more than the operator allows."""


class ConflictError(ActioncageError):
    """A unique value (an action name) is already taken."""


class RunAlreadyEndedError(ConflictError):
    """A run's "running" record was completed by someone else first (a reaper ended it as
    "executor lost" while this process was cut off): the late outcome must not land."""


class IdempotencyInProgressError(ConflictError):
    """The first call made with this Idempotency-Key has not answered yet."""


class RateLimitedError(ActioncageError):
    """An org or key is over a rate or concurrency limit; retry after ``retry_after_s``."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class OverloadedError(RateLimitedError):
    """Every run slot and queue place is taken; ``retry_after_s`` says when to try again."""

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message, retry_after_s)


class SandboxError(ActioncageError):
    """The container engine failed; no run could be produced."""


class EngineUnavailableError(SandboxError):
    """No container engine answers."""


class TierUnavailableError(SandboxError):
    """The isolation tier a run needs is not available here (never silently downgraded);
    ``isolation`` names it."""

    def __init__(self, message: str, isolation: str) -> None:
        super().__init__(message)
        self.isolation = isolation


class EgressRefusedError(ActioncageError):
    """An outbound connection the egress policy does not allow; the message says why."""


class HostCallError(ActioncageError):
    """A host call (LLM, Google Sheets) failed or is not configured."""


class SharedStateError(ActioncageError):
    """The shared state every process counts in (Redis) did not answer."""


class BusyError(ActioncageError):
    """The bounded background run queue is full; try again after ``retry_after_s``."""

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class SecretsDisabledError(ConflictError):
    """The server has no ACTIONCAGE_SECRETS_KEY, so secrets can be neither stored nor read."""
