"""Runs-per-minute and concurrent-run limits per org and per key. Stdlib only.

In-process: each actioncage process counts only the runs it serves itself, so with N
processes behind a balancer the effective limits are N times the configured ones.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from actioncage.errors import RateLimitedError
from actioncage.models import OrgPolicy
from actioncage.settings import Settings

_WINDOW_S = 60.0
# A caller refused for concurrency is told to come back after this long.
_CONCURRENCY_RETRY_S = 1


@dataclass
class _Counter:
    started: deque[float] = field(default_factory=deque)  # start times within the window
    running: int = 0


class TenantLimiter:
    """Admits a run if its org and its key are under their limits; ``None``/0 is unlimited."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        self._key_rpm = settings.key_runs_per_minute or None
        self._key_concurrent = settings.key_concurrent_runs or None
        self._clock = clock
        self._lock = threading.Lock()
        self._counters: dict[tuple[str, str], _Counter] = {}

    @contextmanager
    def admit(self, org_id: str, key_id: str | None, org: OrgPolicy | None) -> Iterator[None]:
        """Hold a run slot for the org and the key while the block runs.

        Raises RateLimitedError (with ``retry_after_s``) naming the limit that was hit.
        """
        checks: list[tuple[tuple[str, str], int | None, int | None, str]] = [
            (
                ("org", org_id),
                None if org is None else org.runs_per_minute,
                None if org is None else org.concurrent_runs,
                f"org {org_id}",
            )
        ]
        if key_id is not None:
            checks.append((("key", key_id), self._key_rpm, self._key_concurrent, "this API key"))
        with self._lock:
            now = self._clock()
            for name, rpm, concurrent, who in checks:
                counter = self._counters.setdefault(name, _Counter())
                while counter.started and counter.started[0] <= now - _WINDOW_S:
                    counter.started.popleft()
                if concurrent is not None and counter.running >= concurrent:
                    raise RateLimitedError(
                        f"{who} already has {counter.running} runs in progress "
                        f"(limit {concurrent})",
                        _CONCURRENCY_RETRY_S,
                    )
                if rpm is not None and len(counter.started) >= rpm:
                    wait = counter.started[0] + _WINDOW_S - now
                    raise RateLimitedError(
                        f"{who} reached its limit of {rpm} runs per minute",
                        max(1, math.ceil(wait)),
                    )
            for name, *_ in checks:
                counter = self._counters[name]
                counter.started.append(now)
                counter.running += 1
        try:
            yield
        finally:
            with self._lock:
                for name, *_ in checks:
                    self._counters[name].running -= 1
