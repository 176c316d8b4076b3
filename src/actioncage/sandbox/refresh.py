"""sandbox/: sandbox/refresh.py: a value served from memory and refreshed on a background thread
once it is older than its time to live (the Docker tiers' status, the jail's root filesystem)."""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from actioncage.errors import ActioncageError

log = logging.getLogger(__name__)

T = TypeVar("T")

# How long close() waits for a refresh in flight (it may be an image export).
JOIN_S = 10.0


class Retry(enum.Enum):
    """When a failed background refresh is tried again."""

    NEXT_CALL = "next_call"  # the next call past the time to live starts another one
    AFTER_TTL = "after_ttl"  # the failure counts as a look: again a time to live later


class Refreshed(Generic[T]):
    """The last value ``compute`` gave, refreshed on a background thread when stale.

    The first ``get()`` computes on the caller's thread, and its error reaches the caller
    (nothing is remembered, so the next call computes again). Later calls return the last
    value at once; when it is older than ``ttl_s`` (counted from the end of the computation)
    they start one background thread to compute it again, never more than one at a time. A
    refresh that fails keeps the last value and is retried as ``retry`` says; its error goes
    to ``on_failure`` when it is an ActioncageError, and is logged with its traceback
    otherwise (a bug). Thread-safe; in-process state.
    """

    def __init__(
        self,
        compute: Callable[[], T],
        ttl_s: float,
        *,
        name: str,
        retry: Retry,
        on_failure: Callable[[ActioncageError], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._compute = compute
        self._ttl_s = ttl_s
        self._name = name
        self._retry = retry
        self._on_failure = on_failure
        self._clock = clock
        self._lock = threading.Lock()
        self._value: tuple[T] | None = None  # a tuple, so any T (None too) can be the value
        self._at = float("-inf")
        self._refreshing = False
        self._thread: threading.Thread | None = None  # the last one started

    def get(self) -> T:
        """The last value, computed now on the first call. Raises what ``compute`` raises,
        on the first call only (and on every call until one succeeds)."""
        with self._lock:
            known = self._value
            if (
                known is not None
                and not self._refreshing
                and self._clock() - self._at >= self._ttl_s
            ):
                self._refreshing = True
                # Started under the lock, so close() never sees a thread not yet started.
                self._thread = threading.Thread(target=self._refresh, name=self._name, daemon=True)
                self._thread.start()
        if known is None:
            value = self._compute()
            with self._lock:
                self._value, self._at = (value,), self._clock()
            return value
        return known[0]

    def close(self, timeout_s: float = JOIN_S) -> None:
        """Wait up to ``timeout_s`` for a refresh in flight (it may use what the caller is
        about to close); a later ``get()`` still works."""
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join(timeout_s)

    def _refresh(self) -> None:
        value: tuple[T] | None = None
        try:
            value = (self._compute(),)
        except ActioncageError as exc:  # the last value stays
            if self._on_failure is not None:
                self._on_failure(exc)
        except Exception:
            log.exception("%s: the refresh failed; the last value stays", self._name)
        finally:
            with self._lock:
                if value is not None:
                    self._value, self._at = value, self._clock()
                elif self._retry is Retry.AFTER_TTL:
                    self._at = self._clock()
                self._refreshing = False
