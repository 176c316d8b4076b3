"""instances.py: this process's instance id, its heartbeat in the shared store, and reaping
what dead instances left (their sandboxes)."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from actioncage.errors import ActioncageError
from actioncage.sandbox.backend import SandboxBackend, new_owner_id
from actioncage.settings import Settings
from actioncage.store import Store
from actioncage.store import instances as rows

log = logging.getLogger(__name__)


class Instance:
    """One actioncage process as the others see it: a row in the shared database whose
    heartbeat a daemon thread moves every ``heartbeat_interval_s``. An instance whose
    heartbeat is older than ``owner_stale_s`` is dead: what it owned may be reaped.

    Every ``owner_stale_s`` the thread also runs the jobs given to ``every_stale_window``
    (the periodic sweep of dead owners' sandboxes). close() stops the thread and removes the
    row; a process that dies instead leaves the row to go stale.
    """

    def __init__(self, settings: Settings, store: Store, role: str) -> None:
        self.id = new_owner_id()
        self._store = store
        self._role = role
        self._interval_s = settings.heartbeat_interval_s
        self.stale_s = settings.owner_stale_s
        self._jobs: list[Callable[[], object]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.heartbeats = 0

    def start(self) -> None:
        """Register this instance and start heartbeating. Raises what the store raises."""
        with self._store.session() as s:
            rows.register(s, self.id, self._role, socket.gethostname(), os.getpid(), _now())
        self._thread = threading.Thread(target=self._beat, name="actioncage-heartbeat", daemon=True)
        self._thread.start()

    def every_stale_window(self, job: Callable[[], object]) -> None:
        """Run ``job`` on the heartbeat thread once per ``owner_stale_s`` (failures logged)."""
        self._jobs.append(job)

    def dead_owners(self) -> set[str]:
        """The instances whose heartbeat is stale (never this one)."""
        with self._store.session() as s:
            dead = rows.dead_ids(s, _now() - timedelta(seconds=self.stale_s))
        dead.discard(self.id)
        return dead

    def live_owners(self) -> set[str]:
        """The instances whose heartbeat is fresh (always this one)."""
        with self._store.session() as s:
            live = rows.live_ids(s, _now() - timedelta(seconds=self.stale_s))
        live.add(self.id)
        return live

    def close(self) -> None:
        """Stop heartbeating and remove this instance's row (call after its sandboxes are
        gone). A failure is logged: the row then goes stale like a dead process's."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        try:
            with self._store.session() as s:
                rows.remove(s, self.id)
        except Exception:
            log.exception("could not remove instance %s", self.id)

    def _beat(self) -> None:
        next_jobs = time.monotonic() + self.stale_s
        while not self._stop.wait(self._interval_s):
            try:
                with self._store.session() as s:
                    if not rows.heartbeat(s, self.id, _now()):
                        # Our row was removed under us (a reset database): say we live again.
                        rows.register(
                            s, self.id, self._role, socket.gethostname(), os.getpid(), _now()
                        )
                self.heartbeats += 1
            except Exception:  # the thread must outlive a busy or briefly absent database
                log.exception("instance %s: heartbeat failed", self.id)
            if time.monotonic() >= next_jobs:
                next_jobs = time.monotonic() + self.stale_s
                for job in self._jobs:
                    try:
                        job()
                    except Exception:
                        log.exception("instance %s: periodic job failed", self.id)


def sweep_dead_owners(instance: Instance, backend: SandboxBackend) -> int:
    """Remove the sandboxes that dead instances left, and unowned ones older than the stale
    window (made before sandboxes carried owners); never a live instance's. Returns count.

    Raises SandboxError (EngineUnavailableError when no engine answers).
    """
    removed = backend.sweep(instance.dead_owners(), unowned_older_than_s=instance.stale_s)
    if removed:
        log.info("removed %d sandboxes that dead instances left", removed)
    return removed


def sweep_quietly(instance: Instance, backend: SandboxBackend) -> None:
    """sweep_dead_owners, logging instead of raising (for the periodic sweep)."""
    try:
        sweep_dead_owners(instance, backend)
    except ActioncageError as exc:
        log.warning("sweep of dead instances' sandboxes failed: %s", exc)


def _now() -> datetime:
    return datetime.now(UTC)
