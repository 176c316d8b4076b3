"""shared/: a cache of database lookups that every process forgets together when a shared
epoch moves (the key cache follows key revocations, the definitions cache follows writes to
actions and org policies)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# How often the epoch is read: a change made anywhere is seen here within this (plus one read).
EPOCH_CHECK_S = 0.5
# A background read older than this (the watcher stalled, or the store is slow): lookups read
# the epoch themselves again, so a change never waits on a stuck thread.
_WATCH_STALE_S = 4 * EPOCH_CHECK_S


class EpochCache(Generic[K, V]):
    """Values by key for ``ttl_s`` seconds, all forgotten when ``epoch()`` changes.

    Only what the caller found is remembered (misses are always looked up again). The epoch
    is read every EPOCH_CHECK_S by a watcher thread (start()), off the lookups' path, or by a
    lookup when the watcher has not read it within _WATCH_STALE_S. An epoch that cannot be
    read trusts nothing cached. A lookup that began before the cache started afresh is not
    remembered: take ``generation`` before looking up, hand it to remember(). ``ttl_s`` 0
    turns the cache off. Memory is bounded: past ``max_entries``, or past ``max_weight`` in
    total of what ``weigh`` says each value costs (bytes, say), it starts afresh; a value
    heavier than that alone is not kept.
    """

    def __init__(
        self,
        name: str,
        ttl_s: float,
        epoch: Callable[[], str],
        max_entries: int = 10_000,
        weigh: Callable[[V], int] | None = None,
        max_weight: int = 0,
    ) -> None:
        self._name = name
        self._ttl_s = ttl_s
        self._read = epoch
        self._max_entries = max_entries
        self._weigh = weigh
        self._max_weight = max_weight
        self._weight = 0
        self._lock = threading.Lock()
        self._entries: dict[K, tuple[float, V, int]] = {}
        self._epoch: str | None = None
        self._next_check = 0.0
        self._watched_at = float("-inf")  # monotonic time of the watcher's last read
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        # Bumped whenever the cache starts afresh: a lookup begun before is not remembered.
        self.generation = 0

    def start(self) -> None:
        """Read the epoch every EPOCH_CHECK_S on a daemon thread."""
        if self._ttl_s <= 0 or self._watcher is not None:
            return
        self._watcher = threading.Thread(
            target=self._watch, name=f"actioncage-{self._name}", daemon=True
        )
        self._watcher.start()

    def close(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
            self._watcher = None

    def _watch(self) -> None:
        while not self._stop.is_set():
            if self._read_epoch():
                self._watched_at = time.monotonic()
            self._stop.wait(EPOCH_CHECK_S)

    def find(self, key: K) -> V | None:
        """The cached value, or None when not cached (or expired)."""
        if self._ttl_s <= 0:
            return None
        self._check_epoch()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[0] <= time.monotonic():
                del self._entries[key]
                self._weight -= entry[2]
                return None
            return entry[1]

    def remember(self, key: K, value: V, generation: int) -> None:
        """Cache ``value``, found when the cache's generation was ``generation`` (if it
        started afresh since, the value may be stale: it is not kept)."""
        if self._ttl_s <= 0:
            return
        weight = 0 if self._weigh is None else self._weigh(value)
        if self._weigh is not None and weight > self._max_weight:
            return
        with self._lock:
            if generation != self.generation:
                return
            replaced = self._entries.pop(key, None)
            if replaced is not None:
                self._weight -= replaced[2]
            if len(self._entries) >= self._max_entries or (
                self._weigh is not None and self._weight + weight > self._max_weight
            ):
                self._clear()
            self._entries[key] = (time.monotonic() + self._ttl_s, value, weight)
            self._weight += weight

    def start_afresh(self) -> None:
        """Forget everything now (a change made in this process: it takes effect here at
        once, not at the next epoch read)."""
        with self._lock:
            self._clear()
            self.generation += 1

    def _clear(self) -> None:
        self._entries.clear()
        self._weight = 0

    def _check_epoch(self) -> None:
        now = time.monotonic()
        if now - self._watched_at < _WATCH_STALE_S:
            return  # the watcher read it lately
        with self._lock:
            if now < self._next_check:
                return
            self._next_check = now + EPOCH_CHECK_S  # one thread reads; others go on
        self._read_epoch()

    def _read_epoch(self) -> bool:
        """Read the epoch; start afresh when it moved or cannot be read (False then)."""
        try:
            epoch: str | None = self._read()
        except Exception:  # SharedStateError, or the store's own (a database hiccup)
            log.warning("%s epoch unreadable: trusting nothing cached", self._name, exc_info=True)
            epoch = None
        with self._lock:
            if epoch is None or epoch != self._epoch:
                self._clear()
                self.generation += 1
            self._epoch = epoch
        return epoch is not None
