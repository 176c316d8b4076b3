"""runs/: a bounded pool of worker threads for runs that outlast their caller's waitMs
(in-process; runs/jobs.py makes them durable)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from actioncage.errors import BusyError

T = TypeVar("T")


class BackgroundRuns:
    """At most ``workers`` jobs run at once and at most ``max_pending`` are held."""

    def __init__(self, workers: int, max_pending: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="actioncage-bg")
        self._slots = threading.BoundedSemaphore(max_pending)

    def submit(self, job: Callable[[], T]) -> Future[T]:
        """Queue ``job``. Raises BusyError when ``max_pending`` jobs are already held."""
        if not self._slots.acquire(blocking=False):
            raise BusyError("too many runs are going on in the background; try again later")
        try:
            future = self._pool.submit(job)
        except RuntimeError as exc:  # shut down
            self._slots.release()
            raise BusyError("the server is shutting down") from exc
        future.add_done_callback(lambda _f: self._slots.release())
        return future

    def close(self, wait: bool = True) -> None:
        """Drop the queued jobs; with ``wait``, finish the ones already running first."""
        self._pool.shutdown(wait=wait, cancel_futures=True)
