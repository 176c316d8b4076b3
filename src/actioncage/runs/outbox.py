"""runs/: the callback outbox: callbacks owed for finished background runs live in the
database (shared by every process) and a delivery loop in every serve process sends the due
ones, each claimed under a lease, signed, with back-off between attempts.

Delivery is at least once: a process that dies after a receiver's 2xx but before it records
the delivery leaves the claim to lapse, and another process sends it again. Receivers dedupe
on the body's runId (and check the X-Actioncage-Signature header).
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta

from actioncage.runs.callbacks import CallbackSender
from actioncage.settings import Settings
from actioncage.store import Store, repo
from actioncage.store import callbacks as outbox_repo

log = logging.getLogger(__name__)


class Outbox:
    """Sends the callbacks of the outbox table; ``owner`` is this process's instance id."""

    def __init__(
        self, settings: Settings, store: Store, sender: CallbackSender, owner: str
    ) -> None:
        self._settings = settings
        self._store = store
        self._sender = sender
        self._owner = owner
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the delivery loop."""
        self._thread = threading.Thread(target=self._loop, name="actioncage-outbox", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Look for due callbacks now (one was just owed)."""
        self._wake.set()

    def deliver_due(self, until: float | None = None) -> int:
        """Claim each due callback and make one attempt at it (until ``until``, a
        time.monotonic() value, if given). Returns how many attempts were made."""
        attempts = 0
        with self._store.session() as s:
            due = outbox_repo.due_callbacks(s, repo.now())
        for callback_id in due:
            if self._stop.is_set() and until is None:
                break
            if until is not None and time.monotonic() > until:
                break
            if self._attempt(callback_id):
                attempts += 1
        return attempts

    def _attempt(self, callback_id: str) -> bool:
        now = repo.now()
        lease_until = now + timedelta(seconds=self._settings.callback_lease_s)
        with self._store.session() as s:
            callback = outbox_repo.claim_callback(s, callback_id, self._owner, now, lease_until)
            if callback is None:
                return False  # another process took it
            secret = repo.webhook_secret(s, callback.org_id)
        result = self._sender.attempt(callback.url, callback.body, secret)
        attempts = callback.attempts + 1
        now = repo.now()
        next_at: datetime | None = None
        if result.delivered:
            state = outbox_repo.DELIVERED
        elif result.retry and attempts < self._settings.callback_max_attempts:
            state = outbox_repo.PENDING
            next_at = now + timedelta(milliseconds=self._sender.backoff_ms(attempts))
        else:
            state = outbox_repo.FAILED
        with self._store.session() as s:
            held = outbox_repo.record_attempt(
                s, callback.id, self._owner, now, state, result.error, next_at
            )
        if not held:
            log.warning("callback %s: the claim lapsed during the attempt", callback.id)
        elif state == outbox_repo.FAILED:
            log.warning(
                "callback %s for run %s to %s failed after %d attempts: %s",
                callback.id,
                callback.run_id,
                callback.url,
                attempts,
                result.error,
            )
        elif state == outbox_repo.PENDING:
            log.info("callback %s attempt %d %s", callback.id, attempts, result.error)
        return True

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.deliver_due()
                wait_s = self._until_next_due()
            except Exception:  # the loop must outlive a database hiccup
                log.exception("callback outbox pass failed")
                wait_s = self._settings.callback_poll_s
            self._wake.wait(wait_s)
            self._wake.clear()

    def _until_next_due(self) -> float:
        with self._store.session() as s:
            due = outbox_repo.next_due(s)
        poll = self._settings.callback_poll_s
        # One due already is held by another process (the pass just took what it could).
        if due is None or due <= repo.now():
            return poll
        return min(poll, (due - repo.now()).total_seconds())

    def close(self, final_pass_s: float = 0.0) -> None:
        """Stop the loop; make one last pass at due callbacks for at most ``final_pass_s``,
        then hand back any claim this process still holds, for another process."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=self._settings.callback_timeout_ms / 1000 + 5)
        if final_pass_s > 0:
            try:
                self.deliver_due(until=time.monotonic() + final_pass_s)
            except Exception:
                log.exception("callback outbox: the last pass failed")
        with self._store.session() as s:
            released = outbox_repo.release_callbacks(s, self._owner)
        if released:
            log.info("handed back %d callbacks for another process", released)
