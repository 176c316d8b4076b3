"""sandbox/: sandbox/runner.py: one run = a sandbox from the backend, the channel's exchange,
discard."""

from __future__ import annotations

import threading

from actioncage.errors import TierUnavailableError
from actioncage.models import EffectiveLimits, Isolation, RawOutcome
from actioncage.sandbox.backend import Profile, SandboxBackend, TierStatus
from actioncage.sandbox.channel import HostCallHandler, exchange
from actioncage.sandbox.foreground import Foreground


class SandboxRunner:
    """Runs one envelope in one new sandbox of ``backend`` (the warm pool, or a bare backend)
    and always discards it. Counts warm and cold starts; holds no other state."""

    def __init__(self, backend: SandboxBackend, foreground: Foreground) -> None:
        self.backend = backend
        # Runs in flight: removals and warm-pool refills wait for a quiet moment (bounded).
        self.foreground = foreground
        self._lock = threading.Lock()
        self.cold_starts = 0
        self.warm_starts = 0

    def run(
        self,
        run_id: str,
        envelope_line: bytes,
        limits: EffectiveLimits,
        on_host_call: HostCallHandler,
    ) -> RawOutcome:
        """Run one envelope to completion in a new sandbox, then discard it.

        The sandbox is a warm one when the backend is a pool with one ready for these limits
        (it has run nothing before), else a cold one started now. The deadline counts from
        when the envelope is sent.

        Raises SandboxError (EngineUnavailableError when no engine answers) when no run could
        be produced; every script failure is an outcome instead.
        """
        sandbox = self.backend.start(run_id, Profile(limits))
        with self._lock:
            if sandbox.profile.warm:
                self.warm_starts += 1
            else:
                self.cold_starts += 1
        try:
            return exchange(sandbox, envelope_line, limits, on_host_call)
        finally:
            self.backend.discard(sandbox)

    def image_digest(self) -> str:
        """The sandbox image's id. Raises SandboxError when it is missing."""
        return self.backend.image_digest()

    def ping(self) -> bool:
        """True when the engine answers."""
        return self.backend.ping()

    def tier(self, isolation: Isolation) -> TierStatus:
        """Whether ``isolation`` can run here, with its runtime's version and flags."""
        return self.backend.tier(isolation)

    def require_tier(self, isolation: Isolation) -> TierStatus:
        """The tier's status when it can run here. Raises TierUnavailableError naming it
        (a run is never moved to another tier)."""
        status = self.backend.tier(isolation)
        if not status.available:
            raise TierUnavailableError(
                f"isolation tier {isolation} is unavailable on this machine: {status.reason}",
                str(isolation),
            )
        return status

    @property
    def live_containers(self) -> int:
        """Sandboxes this process started and has not removed yet."""
        return self.backend.live_count
