"""sandbox/: sandbox/pool.py: a warm pool of single-use sandboxes over any backend, itself a
backend."""

from __future__ import annotations

import collections
import logging
import threading
import time
import uuid
from collections.abc import Collection
from dataclasses import dataclass, field

from actioncage.errors import ActioncageError
from actioncage.models import EffectiveLimits, Isolation
from actioncage.sandbox.backend import Profile, Sandbox, SandboxBackend, TierStatus
from actioncage.sandbox.channel import await_ready
from actioncage.sandbox.foreground import Foreground
from actioncage.settings import Settings

log = logging.getLogger(__name__)

# After a failed start, a starter waits this long before trying that profile again.
_RETRY_AFTER_FAILURE_S = 1.0
# Pools per distinct profile are bounded; rarer profiles always start cold.
_MAX_PROFILES = 16


@dataclass
class _Profile:
    """One policy profile (the limits a run gets): its ready sandboxes."""

    name: str
    limits: EffectiveLimits
    pinned: bool  # the default profile is kept warm even when unused
    ready: collections.deque[Sandbox] = field(default_factory=collections.deque)
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
    """Keeps ``pool_size`` started, never-used sandboxes of ``backend`` per profile (the limits,
    isolation tier included: a tier's sandboxes serve only that tier), within a
    live-sandbox cap. A backend itself: start() hands out a ready sandbox when one matches,
    else starts a cold one through ``backend``; every other call goes to ``backend``, which
    the pool owns from now on (close() closes it).

    A sandbox here has its interpreter up and the preload modules imported (except under
    pressure: ``pool_pressure_window_s``), and blocks reading its envelope; it has no deadline
    until a run sends one. take() never waits: an empty pool answers None and the run starts
    a cold container. Every sandbox is used at most once and removed afterwards; idle ones
    are recycled after ``pool_max_idle_s``.
    """

    def __init__(self, settings: Settings, backend: SandboxBackend, foreground: Foreground) -> None:
        self._settings = settings
        self._backend = backend
        self._foreground = foreground
        self._size = settings.pool_size
        self._cap = settings.max_live_containers
        self._max_idle_s = settings.pool_max_idle_s
        self._preload = settings.pool_preload
        # After a run found its pool drained while refilling, sandboxes start without the
        # preload for a while: under saturation the imports' CPU (about 0.25 s per sandbox
        # for requests and holidays) costs more throughput than it saves latency.
        self._lean_preload = ""
        self._pressure_window_s = settings.pool_pressure_window_s
        self._last_miss = float("-inf")
        self.lean_starts = 0
        self._lean_ids: set[str] = set()  # ready sandboxes started without the preload
        self._cond = threading.Condition()
        self._profiles: dict[EffectiveLimits, _Profile] = {}
        self._closed = False
        self._refill_due = False
        foreground.on_quiet(self._wake_on_quiet)
        self._threads: list[threading.Thread] = []
        self.recycled = 0
        self.start_failures = 0

    # -- the backend ----------------------------------------------------------------------

    def start(self, run_id: str, profile: Profile) -> Sandbox:
        """A ready sandbox for ``profile``'s limits when there is one, else a cold one from
        the backend (raises what its start() raises)."""
        # A run with egress mounts its own proxy socket: its sandbox is unique to it, so it
        # never matches (or seeds) a pool profile.
        if not profile.warm and profile.limits.egress_dir is None:
            taken = self.take(profile.limits)
            if taken is not None:
                return taken
        return self._backend.start(run_id, profile)

    def discard(self, sandbox: Sandbox) -> None:
        self._backend.discard(sandbox)

    def ping(self) -> bool:
        return self._backend.ping()

    def tier(self, isolation: Isolation) -> TierStatus:
        return self._backend.tier(isolation)

    def image_digest(self) -> str:
        return self._backend.image_digest()

    def sweep(self, dead_owners: Collection[str], unowned_older_than_s: float) -> int:
        return self._backend.sweep(dead_owners, unowned_older_than_s)

    @property
    def live_count(self) -> int:
        return self._backend.live_count

    @property
    def pending_removals(self) -> int:
        return self._backend.pending_removals

    def drain(self, timeout_s: float = 30.0) -> bool:
        return self._backend.drain(timeout_s)

    # -- the pool -------------------------------------------------------------------------

    def keep_warm(self, default: EffectiveLimits | None = None) -> None:
        """Start the starter threads; keep ``default``'s profile warm from now on."""
        with self._cond:
            if default is not None:
                self._profile(default, pinned=True)
            for i in range(max(1, self._settings.pool_starters)):
                thread = threading.Thread(
                    target=self._starter, name=f"actioncage-pool-{i}", daemon=True
                )
                thread.start()
                self._threads.append(thread)

    def take(self, limits: EffectiveLimits) -> Sandbox | None:
        """A ready sandbox for these limits, or None (never waits)."""
        with self._cond:
            if self._closed:
                return None
            profile = self._profile(limits, pinned=False)
            if profile is None:
                return None
            profile.last_used = time.monotonic()
            taken: Sandbox | None = None
            while profile.ready and taken is None:
                started = profile.ready.popleft()
                self._lean_ids.discard(started.sandbox_id)
                if started.alive():
                    taken = started
                else:
                    self._backend.discard(started)
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
                    sum(s.sandbox_id in self._lean_ids for s in p.ready),
                )
                for p in self._profiles.values()
            ]

    def wait_ready(self, limits: EffectiveLimits, count: int, timeout: float) -> bool:
        """Wait until ``count`` sandboxes are ready for these limits (for tests and bench)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            profile = self._profile(limits, pinned=False)
            while profile is not None and len(profile.ready) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed:
                    return False
                self._cond.wait(remaining)
            return profile is not None

    def close(self) -> None:
        """Stop the starters, remove every sandbox that was never used, then close the
        backend (which finishes its removals)."""
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
            self._backend.discard(started)
        self._backend.close()

    # -- starters -------------------------------------------------------------------------

    def _profile(self, limits: EffectiveLimits, pinned: bool) -> _Profile | None:
        profile = self._profiles.get(limits)
        if profile is None:
            if len(self._profiles) >= _MAX_PROFILES:
                return None
            name = "default" if pinned else f"p{len(self._profiles)}"
            profile = _Profile(name=name, limits=limits, pinned=pinned)
            self._profiles[limits] = profile
        return profile

    def _next_needy(self, now: float) -> _Profile | None:
        starting = sum(p.starting for p in self._profiles.values())
        if self._backend.live_count + starting >= self._cap:
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

    def _recycle_idle(self, now: float) -> list[Sandbox]:
        old: list[Sandbox] = []
        # Once the pressure is over, lean sandboxes make way for preloaded ones.
        calm = now - self._last_miss >= self._pressure_window_s
        for p in self._profiles.values():
            keep: collections.deque[Sandbox] = collections.deque()
            for started in p.ready:
                stale = now - started.ready_at >= self._max_idle_s
                if stale or (calm and started.sandbox_id in self._lean_ids):
                    self._lean_ids.discard(started.sandbox_id)
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
                self._foreground.wait_quiet()
            for started in old:
                self._backend.discard(started)
            if profile is not None:
                self._start_one(profile)

    def _start_one(self, profile: _Profile) -> None:
        started: Sandbox | None = None
        with self._cond:
            lean = time.monotonic() - self._last_miss < self._pressure_window_s
            self.lean_starts += lean
        try:
            preload = self._lean_preload if lean else self._preload
            started = self._backend.start(
                f"warm-{uuid.uuid4().hex[:12]}", Profile(profile.limits, preload)
            )
            await_ready(started, self._settings.pool_ready_timeout_s)
        except ActioncageError as exc:
            log.warning("warm pool: could not start a sandbox: %s", exc)
            if started is not None:
                self._backend.discard(started)
                started = None
            with self._cond:
                self.start_failures += 1
                profile.failed_until = time.monotonic() + _RETRY_AFTER_FAILURE_S
        with self._cond:
            profile.starting -= 1
            if started is not None and not self._closed:
                profile.ready.append(started)
                if lean:
                    self._lean_ids.add(started.sandbox_id)
                started = None
            self._cond.notify_all()
        if started is not None:  # closed while starting
            self._backend.discard(started)
