"""web/: what every execute view shares: the typed components, the caller, the
Idempotency-Key header and the native status of a run."""

from __future__ import annotations

from typing import Any

from flask import current_app, request

from actioncage.components import Components
from actioncage.errors import ValidationFailedError
from actioncage.models import Action, ErrorType, FrontDoor, RunResult
from actioncage.runs.service import Caller
from actioncage.web.auth import current_key

HEADER = "Idempotency-Key"


def components() -> Components:
    """The components the current app was built with."""
    built: Components = current_app.extensions["actioncage"]
    return built


def caller(front_door: FrontDoor) -> Caller:
    """The authenticated key's org and id, calling through ``front_door``."""
    key = current_key()
    return Caller(key.org_id, key.id, front_door)


def status_for_run(run: RunResult) -> int:
    """The native route's status for a run: 422 invalid args, 503 no run, else 200."""
    if run.error is not None and run.error.type is ErrorType.INVALID_ARGS:
        return 422  # the caller's mistake; nothing ran
    if run.error is not None and run.error.type is ErrorType.SANDBOX_ERROR:
        return 503  # no run could be produced
    return 200


def idempotency_key() -> str | None:
    """The request's Idempotency-Key header. Raises ValidationFailedError when malformed."""
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if not 1 <= len(key) <= 255 or not key.isascii() or not key.isprintable():
        raise ValidationFailedError(f"{HEADER} must be 1-255 printable ASCII characters", HEADER)
    return key


def waiting_body(run_id: str, action: Action) -> dict[str, Any]:
    """The 202 answer for a run still going."""
    return {
        "runId": run_id,
        "status": "running",
        "userWaitingText": action.user_waiting_text,
    }
