"""What every execute route shares: Idempotency-Key replay and runs that outlast waitMs."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from flask import current_app, request

from actioncage.errors import (
    BusyError,
    IdempotencyInProgressError,
    OverloadedError,
    ValidationFailedError,
)
from actioncage.models import Action, Conversation, ErrorType, IdempotentResponse, RunResult
from actioncage.store import repo
from actioncage.web import wire
from actioncage.web.auth import current_key

HEADER = "Idempotency-Key"
_POLL_S = 0.05

Answer = tuple[Any, int]


def _components() -> Any:
    return current_app.extensions["actioncage"]


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


def idempotent(route: str, body: Any, answer: Callable[[], Answer]) -> tuple[Any, int, bool]:
    """``answer()``'s ``(body, status)``, or the stored one of an earlier call with the same
    Idempotency-Key, route and body. The third item says whether it was replayed.

    A duplicate that arrives while the first call runs waits for its answer, so the two never
    both run. Raises ConflictError when the key was used with another request; a domain error
    raised by ``answer`` forgets the key (nothing was done worth replaying).
    """
    key = idempotency_key()
    if key is None:
        out, status = answer()
        return out, status, False
    c, org_id = _components(), current_key().org_id
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    fingerprint = hashlib.sha256(f"{route}\n{canonical}".encode()).hexdigest()
    deadline = time.monotonic() + c.settings.max_timeout_ms / 1000 + 30
    while True:
        try:
            with c.store.session() as s:
                stored = repo.claim_idempotency_key(
                    s, org_id, key, fingerprint, c.settings.idempotency_ttl_s
                )
            break
        except IdempotencyInProgressError:
            if time.monotonic() > deadline:
                raise
            time.sleep(_POLL_S)  # another request holds the key; its answer lands in the DB
    if stored is not None:
        return stored.body, stored.status_code, True
    try:
        out, status = answer()
    except BaseException:
        with c.store.session() as s:
            repo.release_idempotency_key(s, org_id, key)
        raise
    with c.store.session() as s:
        repo.finish_idempotency_key(s, org_id, key, IdempotentResponse(status, out))
    return out, status, False


def run_with_wait(
    action: Action,
    args: dict[str, Any],
    conversation: Conversation | None,
    wait_ms: int | None,
    callback_url: str | None,
) -> tuple[RunResult | None, str]:
    """Run in the background pool and wait up to ``wait_ms`` (None: until it ends).

    Returns ``(run, run_id)``; ``run`` is None when it is still going (its "running" record
    is at GET /v1/runs/<run_id>). When ``callback_url`` is set, the finished run is POSTed
    there, signed with the org's webhook secret. Raises ValidationFailedError for a refused
    callbackUrl and BusyError when the pool is full.
    """
    c, key = _components(), current_key()
    secret = None
    if callback_url is not None:
        c.callbacks.check_url(callback_url)
        with c.store.session() as s:
            secret = repo.webhook_secret(s, key.org_id)
    # The slot is taken now, so a caller over its limits hears 429, and freed when the job ends.
    slot = ExitStack()
    slot.enter_context(c.executor.admit(key.org_id, key.id))
    run_id = repo.new_id("run")
    conversation_id = None if conversation is None else conversation.id
    with c.store.session() as s:
        repo.add_running_run(s, run_id, action, key.id, conversation_id)
    executor, callbacks, background = c.executor, c.callbacks, c.background

    def job() -> RunResult:
        with slot:
            try:
                run: RunResult = executor.run_action(
                    action, key.id, args, conversation, run_id=run_id
                )
            except OverloadedError as exc:  # nobody is left to hear a 429
                run = executor.record_refused(run_id, action, key.id, conversation, str(exc))
        if callback_url is not None and secret is not None:
            body = json.dumps(wire.run_out(run), separators=(",", ":")).encode()

            def deliver() -> bool:
                delivered: bool = callbacks.deliver(callback_url, body, secret)
                return delivered

            # Its own job, so a caller waiting on the run is not held up by the callback.
            try:
                background.submit(deliver)
            except BusyError:
                deliver()
        return run

    try:
        future = c.background.submit(job)
    except BaseException:
        slot.close()
        with c.store.session() as s:
            repo.discard_running_run(s, key.org_id, run_id)
        raise
    try:
        run: RunResult = future.result(timeout=None if wait_ms is None else wait_ms / 1000)
    except TimeoutError:
        return None, run_id
    return run, run_id


def waiting_body(run_id: str, action: Action) -> dict[str, Any]:
    """The 202 answer for a run still going."""
    return {
        "runId": run_id,
        "status": "running",
        "userWaitingText": action.user_waiting_text,
    }
