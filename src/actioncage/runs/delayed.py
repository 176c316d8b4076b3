"""runs/: writes done only for runs still going after a delay (the durable record of a run
on an executor worker, runs/jobs.py): a run that comes back sooner costs no write at all.
One thread keeps the due times (every write has the same delay, so they fall due in the
order they were scheduled) and hands each due write to a pool."""

from __future__ import annotations

import enum
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

log = logging.getLogger(__name__)


class _State(enum.Enum):
    PENDING = "pending"
    CANCELLED = "cancelled"
    STARTED = "started"


class DelayedWrite:
    """One write, done when it falls due unless settled first."""

    def __init__(self, due: float, write: Callable[[], None], name: str) -> None:
        self.due = due
        self._write = write
        self._name = name
        self._lock = threading.Lock()
        self._state = _State.PENDING
        self._done: Future[bool] = Future()

    @property
    def pending(self) -> bool:
        return self._state is _State.PENDING

    def run(self) -> None:
        """Do the write now, unless it was settled already (on a pool thread)."""
        with self._lock:
            if self._state is not _State.PENDING:
                return
            self._state = _State.STARTED
        try:
            self._write()
        except Exception as exc:  # the run goes on; its record is written when it ends
            log.warning("%s: its early record could not be written: %s", self._name, exc)
            self._done.set_result(False)
        else:
            self._done.set_result(True)

    def settle(self) -> bool:
        """Cancel the write if it has not started, else wait for it. Returns whether it was
        written."""
        with self._lock:
            if self._state is _State.PENDING:
                self._state = _State.CANCELLED
                return False
        return self._done.result()


class DelayedWrites:
    """Schedules DelayedWrites ``delay_s`` ahead, done on ``writers`` threads."""

    def __init__(self, delay_s: float, writers: int = 4) -> None:
        self._delay_s = delay_s
        self._queue: queue.Queue[DelayedWrite | None] = queue.Queue()
        self._pool = ThreadPoolExecutor(max_workers=writers, thread_name_prefix="actioncage-late")
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def schedule(self, write: Callable[[], None], name: str) -> DelayedWrite:
        item = DelayedWrite(time.monotonic() + self._delay_s, write, name)
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(
                    target=self._loop, name="actioncage-delayed", daemon=True
                )
                self._thread.start()
        self._queue.put(item)
        return item

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            wait_s = item.due - time.monotonic()
            if wait_s > 0 and self._stop.wait(wait_s):
                return  # closing: what is left is settled (cancelled) by its run
            if not item.pending:
                continue  # its run came back first: the usual case, no write
            try:
                self._pool.submit(item.run)
            except RuntimeError:  # the pool was shut down meanwhile
                return

    def close(self) -> None:
        """Do no more writes; wait for those under way."""
        self._stop.set()
        self._queue.put(None)
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join(timeout=10)
        self._pool.shutdown(wait=True)
