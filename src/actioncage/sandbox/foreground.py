"""sandbox/: Runs in flight, so background engine work (removals, pool refills) can wait for a
quiet moment instead of competing with a run for the CPU, but never longer than a bound."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)


class Foreground:
    """Counts the runs in flight; ``wait_quiet`` lets background work yield to them.

    On a small machine, removing a used container and starting its warm replacement costs
    the engine far more CPU than a warm run itself (about 0.25 s against a few ms). Done
    while a run is in flight, that work is what the waiting caller feels. Background work
    waits until no run is in flight, or until ``max_defer_ms`` has passed since it was
    queued, so under sustained load it is delayed by at most the bound, never starved.
    """

    def __init__(self, max_defer_ms: int) -> None:
        self._max_defer_s = max_defer_ms / 1000
        self._cond = threading.Condition()
        self._active = 0
        self._on_quiet: list[Callable[[], None]] = []
        # Per thread: what runs once each of its runs in flight ends, outermost first.
        self._local = threading.local()
        self.deferred = 0  # background jobs that waited for a run to finish
        self.overdue = 0  # of those, the ones that went ahead at the bound, runs still in flight

    @property
    def active(self) -> int:
        """Runs in flight now."""
        with self._cond:
            return self._active

    def on_quiet(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (on the finishing run's thread) whenever the last run in flight
        ends. It must be quick and must not raise."""
        with self._cond:
            self._on_quiet.append(callback)

    @contextmanager
    def run(self) -> Iterator[None]:
        """Mark one run as in flight for the block."""
        release = self.hold()
        try:
            yield
        finally:
            release()

    def hold(self) -> Callable[[], None]:
        """Mark one run as in flight until the returned function is called (later calls of
        it do nothing): for a run whose end is not the end of a block, such as an HTTP
        response that is still being written."""
        with self._cond:
            self._active += 1
        released = False
        after: list[Callable[[], None]] = []
        holds = self._holds()
        holds.append(after)

        def release() -> None:
            nonlocal released
            with self._cond:
                if released:
                    return
                released = True
                self._active -= 1
                quiet = self._active == 0
                if quiet:
                    self._cond.notify_all()
                callbacks = list(self._on_quiet) if quiet else []
            # By identity: ``in`` and ``remove`` compare lists by value, and every run's
            # list is empty until something is registered on it.
            for index, listed in enumerate(holds):
                if listed is after:
                    del holds[index]
                    break
            for callback in [*after, *callbacks]:
                try:
                    callback()
                except Exception:
                    log.exception("a callback at the end of a run in flight failed")

        return release

    def after_this_run(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the outermost run in flight on this thread ends (for a
        request, once its response is written: hold_while_responding), so work it starts
        elsewhere does not take the CPU from that response; at once when none is."""
        holds = self._holds()
        if holds:
            holds[0].append(callback)
        else:
            callback()

    def _holds(self) -> list[list[Callable[[], None]]]:
        holds: list[list[Callable[[], None]]] | None = getattr(self._local, "holds", None)
        if holds is None:
            holds = self._local.holds = []
        return holds

    def wait_quiet(self, since: float | None = None) -> bool:
        """Block until no run is in flight or the bound after ``since`` (a monotonic time,
        default now) has passed. True when it became quiet, False when the bound ran out."""
        deadline = (time.monotonic() if since is None else since) + self._max_defer_s
        with self._cond:
            if self._active == 0:
                return True
            self.deferred += 1
            while self._active > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.overdue += 1
                    return False
                self._cond.wait(remaining)
            return True
