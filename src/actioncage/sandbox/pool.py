"""A warm pool of single-use sandboxes: started ahead of time per policy profile, used once."""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from actioncage.errors import ActioncageError
from actioncage.sandbox.docker.runner import DockerRunner, StartedContainer
from actioncage.sandbox.limits import COMMAND
from actioncage.settings import Settings

log = logging.getLogger(__name__)

POOL_LABEL = "io.actioncage.pool"
# After a failed start, a starter waits this long before trying that profile again.
_RETRY_AFTER_FAILURE_S = 1.0
# Pools per distinct profile are bounded; rarer profiles always start cold.
_MAX_PROFILES = 16


@dataclass
class _Profile:
    """One policy profile (image, limits, network mode): its container options and sandboxes."""

    key: str
    name: str
    options: dict[str, Any]
    pinned: bool  # the default profile is kept warm even when unused
    ready: collections.deque[StartedContainer] = field(default_factory=collections.deque)
    starting: int = 0
    last_used: float = field(default_factory=time.monotonic)
    failed_until: float = 0.0


@dataclass(frozen=True)
class ProfileStats:
    name: str
    ready: int
    starting: int
    lean: int  # of the ready ones, those started without the preload


class WarmPool:
    """Keeps ``pool_size`` started, never-used sandboxes per profile, within a live-container cap.

    A sandbox here has its interpreter up and the preload modules imported (except under
    pressure: ``pool_pressure_window_s``), and blocks reading its envelope; it has no deadline
    until a run sends one. take() never waits: an empty pool answers None and the run starts
    a cold container. Every sandbox is used at most once and removed afterwards; idle ones
    are recycled after ``pool_max_idle_s``.
    """

    def __init__(self, settings: Settings, runner: DockerRunner) -> None:
        self._settings = settings
        self._runner = runner
        self._size = settings.pool_size
        self._cap = settings.max_live_containers
        self._max_idle_s = settings.pool_max_idle_s
        self._command = [*COMMAND, "--preload", settings.pool_preload]
        # After a run found its pool drained while refilling, sandboxes start without the
        # preload for a while: under saturation the imports' CPU (about 0.25 s per sandbox
        # for requests and holidays) costs more throughput than it saves latency.
        self._lean_command = [*COMMAND, "--preload", ""]
        self._pressure_window_s = settings.pool_pressure_window_s
        self._last_miss = float("-inf")
        self.lean_starts = 0
        self._lean_ids: set[str] = set()  # ready sandboxes started without the preload
        self._cond = threading.Condition()
        self._profiles: dict[str, _Profile] = {}
        self._closed = False
        self._refill_due = False
        runner.foreground.on_quiet(self._wake_on_quiet)
        self._threads: list[threading.Thread] = []
        self.recycled = 0
        self.start_failures = 0

    # -- public ---------------------------------------------------------------------------

    def start(self, default_options: dict[str, Any] | None = None) -> None:
        """Start the starter threads; keep ``default_options``'s profile warm from now on."""
        with self._cond:
            if default_options is not None:
                self._profile(default_options, pinned=True)
            for i in range(max(1, self._settings.pool_starters)):
                thread = threading.Thread(
                    target=self._starter, name=f"actioncage-pool-{i}", daemon=True
                )
                thread.start()
                self._threads.append(thread)

    def take(self, options: dict[str, Any]) -> StartedContainer | None:
        """A ready sandbox for these container options, or None (never waits)."""
        with self._cond:
            if self._closed:
                return None
            profile = self._profile(options, pinned=False)
            if profile is None:
                return None
            profile.last_used = time.monotonic()
            taken: StartedContainer | None = None
            while profile.ready and taken is None:
                started = profile.ready.popleft()
                self._lean_ids.discard(started.container_id)
                if self._runner.is_alive(started):
                    taken = started
                else:
                    self._runner.discard(started)
            if taken is None and profile.starting:  # demand outran the refill: pressure
                self._last_miss = time.monotonic()
            if profile.ready:
                # Not urgent: the starters wake when no run is in flight (_wake_on_quiet),
                # so waking them now would only take the CPU from this run.
                self._refill_due = True
            else:
                self._cond.notify_all()
            return taken

    def _wake_on_quiet(self) -> None:
        with self._cond:
            if self._refill_due:
                self._refill_due = False
                self._cond.notify_all()

    def stats(self) -> list[ProfileStats]:
        """Ready and starting sandboxes per profile."""
        with self._cond:
            return [
                ProfileStats(
                    p.name,
                    len(p.ready),
                    p.starting,
                    sum(s.container_id in self._lean_ids for s in p.ready),
                )
                for p in self._profiles.values()
            ]

    def wait_ready(self, options: dict[str, Any], count: int, timeout: float) -> bool:
        """Wait until ``count`` sandboxes are ready for these options (for tests and bench)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            profile = self._profile(options, pinned=False)
            while profile is not None and len(profile.ready) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed:
                    return False
                self._cond.wait(remaining)
            return profile is not None

    def close(self) -> None:
        """Stop the starters and remove every sandbox that was never used."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join()
        self._threads.clear()
        with self._cond:
            leftovers = [s for p in self._profiles.values() for s in p.ready]
            for p in self._profiles.values():
                p.ready.clear()
        for started in leftovers:
            self._runner.discard(started)

    # -- starters -------------------------------------------------------------------------

    def _profile(self, options: dict[str, Any], pinned: bool) -> _Profile | None:
        key = json.dumps([self._settings.sandbox_image, options], sort_keys=True, default=str)
        profile = self._profiles.get(key)
        if profile is None:
            if len(self._profiles) >= _MAX_PROFILES:
                return None
            name = "default" if pinned else f"p{len(self._profiles)}"
            profile = _Profile(key=key, name=name, options=options, pinned=pinned)
            self._profiles[key] = profile
        return profile

    def _next_needy(self, now: float) -> _Profile | None:
        starting = sum(p.starting for p in self._profiles.values())
        if self._runner.live_containers + starting >= self._cap:
            return None
        if starting and now - self._last_miss < self._pressure_window_s:
            # Under pressure runs start cold anyway; starters crowding the engine beside them
            # buy no sandbox sooner and cost throughput. One warm start at a time.
            return None
        needy = [
            p
            for p in self._profiles.values()
            if len(p.ready) + p.starting < self._size
            and p.failed_until <= now
            and (p.pinned or now - p.last_used < self._max_idle_s)
        ]
        return min(needy, key=lambda p: len(p.ready) + p.starting, default=None)

    def _recycle_idle(self, now: float) -> list[StartedContainer]:
        old: list[StartedContainer] = []
        # Once the pressure is over, lean sandboxes make way for preloaded ones.
        calm = now - self._last_miss >= self._pressure_window_s
        for p in self._profiles.values():
            keep: collections.deque[StartedContainer] = collections.deque()
            for started in p.ready:
                stale = now - started.ready_at >= self._max_idle_s
                if stale or (calm and started.container_id in self._lean_ids):
                    self._lean_ids.discard(started.container_id)
                    old.append(started)
                else:
                    keep.append(started)
            p.ready = keep
        self.recycled += len(old)
        return old

    def _starter(self) -> None:
        tick = min(1.0, max(0.05, self._max_idle_s / 4))
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        return
                    now = time.monotonic()
                    old = self._recycle_idle(now)
                    profile = self._next_needy(now)
                    if profile is not None or old:
                        break
                    self._cond.wait(tick)
                if profile is not None:
                    profile.starting += 1
                # Recycling, and topping up a pool that still has a sandbox ready, can wait
                # for a moment with no run in flight; refilling an empty one cannot.
                can_wait = bool(old) or (profile is not None and bool(profile.ready))
            if can_wait:
                self._runner.foreground.wait_quiet()
            for started in old:
                self._runner.discard(started)
            if profile is not None:
                self._start_one(profile)

    def _start_one(self, profile: _Profile) -> None:
        started: StartedContainer | None = None
        with self._cond:
            lean = time.monotonic() - self._last_miss < self._pressure_window_s
            self.lean_starts += lean
        try:
            tag = uuid.uuid4().hex[:12]
            started = self._runner.start_container(
                profile.options,
                name=f"actioncage-warm-{tag}",
                label_value=f"warm-{tag}",
                command=self._lean_command if lean else self._command,
                labels={POOL_LABEL: profile.name},
            )
            self._runner.await_ready(started, self._settings.pool_ready_timeout_s)
        except ActioncageError as exc:
            log.warning("warm pool: could not start a sandbox: %s", exc)
            if started is not None:
                self._runner.discard(started)
                started = None
            with self._cond:
                self.start_failures += 1
                profile.failed_until = time.monotonic() + _RETRY_AFTER_FAILURE_S
        with self._cond:
            profile.starting -= 1
            if started is not None and not self._closed:
                profile.ready.append(started)
                if lean:
                    self._lean_ids.add(started.container_id)
                started = None
            self._cond.notify_all()
        if started is not None:  # closed while starting
            self._runner.discard(started)
