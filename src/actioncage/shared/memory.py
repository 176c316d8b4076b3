"""shared/: the in-process implementations (the default without ACTIONCAGE_REDIS_URL): each
process counts only what it serves; key revocation is read from the database."""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from limits import RateLimitItemPerSecond
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from actioncage.shared.state import Full, Hold, SharedState
from actioncage.store import Store, repo

DOMAIN_CACHE_SIZE = 256


class MemoryRateLimits:
    """Moving windows in this process's memory (`limits`' MemoryStorage)."""

    def __init__(self) -> None:
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    def hit(self, name: str, limit: int, window_s: int) -> int | None:
        item = RateLimitItemPerSecond(limit, window_s)
        if self._limiter.hit(item, name):
            return None
        reset_at = self._limiter.get_window_stats(item, name).reset_time
        return max(1, math.ceil(reset_at - time.time()))


class _MemoryHold:
    def __init__(self, release: Any) -> None:
        self._release = release
        self._done = False

    def release(self) -> None:
        if not self._done:
            self._done = True
            self._release()


class MemoryConcurrency:
    """Counters in this process's memory; a process that dies takes its places with it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, int] = {}

    def acquire(self, limits: Sequence[tuple[str, int]]) -> Hold | Full:
        with self._lock:
            for name, limit in limits:
                held = self._held.get(name, 0)
                if held >= limit:
                    return Full(name, held, limit)
            for name, _ in limits:
                self._held[name] = self._held.get(name, 0) + 1
        names = [name for name, _ in limits]
        return _MemoryHold(lambda: self._give_back(names))

    def _give_back(self, names: list[str]) -> None:
        with self._lock:
            for name in names:
                left = self._held[name] - 1
                if left:
                    self._held[name] = left
                else:
                    del self._held[name]


class MemoryClaims:
    """Claims seen only by this process (the database row still stops other processes)."""

    shared = False

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._names: set[str] = set()

    def try_claim(self, name: str) -> Hold | None:
        with self._lock:
            if name in self._names:
                return None
            self._names.add(name)
        return _MemoryHold(lambda: self._drop(name))

    def _drop(self, name: str) -> None:
        with self._lock:
            self._names.discard(name)


class DatabaseRevocations:
    """Revocations as the database has them: the epoch is read from the keys table (a
    revocation made by any process, or `actioncage keys revoke`, changes it)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._local = 0  # bumped by revocations made here, seen at once

    def revoked(self, key_id: str) -> None:
        self._local += 1

    def epoch(self) -> str:
        with self._store.session() as s:
            return f"{self._local}/{repo.revocation_epoch(s)}"


class MemoryDomains:
    """The latest ``DOMAIN_CACHE_SIZE`` domains, least recently used out first."""

    def __init__(self, size: int = DOMAIN_CACHE_SIZE) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._domains: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()

    def get(self, org_id: str, digest: str) -> dict[str, Any] | None:
        with self._lock:
            domain = self._domains.get((org_id, digest))
            if domain is not None:
                self._domains.move_to_end((org_id, digest))
            return domain

    def put(self, org_id: str, digest: str, domain: dict[str, Any]) -> None:
        with self._lock:
            self._domains[(org_id, digest)] = domain
            self._domains.move_to_end((org_id, digest))
            while len(self._domains) > self._size:
                self._domains.popitem(last=False)


class MemoryLiveSet:
    """Live members of this process only."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._members: set[str] = set()

    def add(self, member: str) -> None:
        with self._lock:
            self._members.add(member)

    def discard(self, member: str) -> None:
        with self._lock:
            self._members.discard(member)

    def count(self) -> int:
        with self._lock:
            return len(self._members)


def in_process(store: Store) -> SharedState:
    """Every interface in this process's memory (revocations read from ``store``)."""
    return SharedState(
        rates=MemoryRateLimits(),
        concurrency=MemoryConcurrency(),
        claims=MemoryClaims(),
        revocations=DatabaseRevocations(store),
        domains=MemoryDomains(),
        containers=MemoryLiveSet(),
        close=lambda: None,
    )
