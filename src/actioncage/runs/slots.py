"""runs/: Bounded run slots with a bounded queue in front: a full house answers
OverloadedError."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from actioncage.errors import OverloadedError
from actioncage.settings import Settings


class RunSlots:
    """At most ``max_concurrent_runs`` runs at once, and ``run_queue_size`` callers waiting.

    A caller past both is refused at once; a queued caller waits at most
    ``run_queue_wait_ms``. Neither ever waits unboundedly.
    """

    def __init__(self, settings: Settings) -> None:
        self._slots = settings.max_concurrent_runs
        self._queue_size = settings.run_queue_size
        self._max_wait_s = settings.run_queue_wait_ms / 1000
        self._cond = threading.Condition()
        self.running = 0
        self.queued = 0
        self.refused = 0

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Hold one run slot for the block. Raises OverloadedError when none can be had."""
        with self._cond:
            if self.running >= self._slots:
                if self.queued >= self._queue_size:
                    self.refused += 1
                    raise OverloadedError(
                        f"all {self._slots} run slots and {self._queue_size} queue places "
                        "are taken; retry shortly"
                    )
                self.queued += 1
                deadline = time.monotonic() + self._max_wait_s
                try:
                    while self.running >= self._slots:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            self.refused += 1
                            raise OverloadedError(
                                f"no run slot came free within {self._max_wait_s:g} s; "
                                "retry shortly"
                            )
                        self._cond.wait(remaining)
                finally:
                    self.queued -= 1
            self.running += 1
        try:
            yield
        finally:
            with self._cond:
                self.running -= 1
                self._cond.notify()
