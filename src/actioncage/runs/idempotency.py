"""runs/: Idempotency-Key claims: a replayed call gets the first call's answer, and two
calls with one key never both run; HTTP-free (the answer is whatever the front door made).

The answers live in the database (durable, shared by every process on it, kept for the TTL).
Who is running a key's first call is a leased claim in the shared state (shared/): with
Redis, a claim whose process died runs out after its lease, and the next call with the key
takes the database row over and runs; in-process, the database row alone stops other
processes, and a dead process's row stays "in progress" until the TTL."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

from actioncage.errors import IdempotencyInProgressError
from actioncage.models import IdempotentResponse
from actioncage.shared.state import Claims
from actioncage.store import Store, repo

_POLL_S = 0.05

Answer = tuple[Any, int]


def fingerprint(scope: str, body: Any) -> str:
    """sha256 of the call's scope (front door and action) and its canonical body."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{scope}\n{canonical}".encode()).hexdigest()


class Idempotency:
    """Claims Idempotency-Keys per org and stores the answer of the call that holds one."""

    def __init__(self, store: Store, claims: Claims, ttl_s: int, max_wait_s: float) -> None:
        self._store = store
        self._claims = claims
        self._ttl_s = ttl_s
        self._max_wait_s = max_wait_s

    def once(
        self, org_id: str, key: str | None, scope: str, body: Any, answer: Callable[[], Answer]
    ) -> tuple[Any, int, bool]:
        """``answer()``'s ``(body, status)``, or the stored one of an earlier call with the
        same key, scope and body. The third item says whether it was replayed.

        A duplicate that arrives while the first call runs waits for its answer. Raises
        ConflictError when the key was used with another request; a domain error raised by
        ``answer`` forgets the key (nothing was done worth replaying).
        """
        if key is None:
            out, status = answer()
            return out, status, False
        print_ = fingerprint(scope, body)
        deadline = time.monotonic() + self._max_wait_s
        while True:
            claim = self._claims.try_claim(f"{org_id}\n{key}")
            if claim is not None:
                try:
                    with self._store.session() as s:
                        stored = repo.claim_idempotency_key(
                            s, org_id, key, print_, self._ttl_s, take_over=self._claims.shared
                        )
                    break
                except IdempotencyInProgressError:
                    claim.release()  # another process (no shared claims) holds the row
                except BaseException:
                    claim.release()
                    raise
            if time.monotonic() > deadline:
                raise IdempotencyInProgressError(
                    "a request with this Idempotency-Key is still being processed"
                )
            time.sleep(_POLL_S)  # another call holds the key; its answer lands in the DB
        try:
            if stored is not None:
                return stored.body, stored.status_code, True
            try:
                out, status = answer()
            except BaseException:
                with self._store.session() as s:
                    repo.release_idempotency_key(s, org_id, key)
                raise
            with self._store.session() as s:
                repo.finish_idempotency_key(s, org_id, key, IdempotentResponse(status, out))
            return out, status, False
        finally:
            claim.release()
