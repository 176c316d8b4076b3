"""sandbox/: sandbox/tiers.py: the isolation tiers as one backend: each run goes to its tier's
backend (chosen by its profile's limits), and a tier that cannot run here is refused, never
silently run in another."""

from __future__ import annotations

from collections.abc import Collection, Mapping

from actioncage.errors import TierUnavailableError
from actioncage.models import Isolation
from actioncage.sandbox.backend import Profile, Sandbox, SandboxBackend, TierStatus


class TieredBackend:
    """Holds one backend per tier (one backend may serve several: Docker runs ``container``
    and ``gvisor``) and is a backend itself: the warm pool wraps it, and keys its sandboxes
    by limits, which carry the tier. ``default`` answers for the engine (ping, digest).
    """

    def __init__(self, backends: Mapping[Isolation, SandboxBackend], default: Isolation) -> None:
        self._backends = dict(backends)
        self._default = self._backends[default]
        # Each distinct backend once, for the calls that go to all of them.
        self._distinct: list[SandboxBackend] = []
        for backend in self._backends.values():
            if all(backend is not b for b in self._distinct):
                self._distinct.append(backend)

    def _backend(self, isolation: Isolation) -> SandboxBackend:
        backend = self._backends.get(isolation)
        status = (
            backend.tier(isolation)
            if backend is not None
            else TierStatus(isolation, False, reason="no backend runs it in this process")
        )
        if backend is None or not status.available:
            raise TierUnavailableError(
                f"isolation tier {isolation} is unavailable on this machine: {status.reason}",
                str(isolation),
            )
        return backend

    def start(self, run_id: str, profile: Profile) -> Sandbox:
        """Start a sandbox in the tier of ``profile.limits``. Raises TierUnavailableError
        when that tier cannot run here, else what its backend's start() raises."""
        return self._backend(profile.limits.isolation).start(run_id, profile)

    def discard(self, sandbox: Sandbox) -> None:
        backend = self._backends.get(sandbox.profile.limits.isolation, self._default)
        backend.discard(sandbox)

    def tier(self, isolation: Isolation) -> TierStatus:
        backend = self._backends.get(isolation)
        if backend is None:
            return TierStatus(isolation, False, reason="no backend runs it in this process")
        return backend.tier(isolation)

    def tiers(self) -> list[TierStatus]:
        """Every tier's status, weakest first."""
        return [self.tier(isolation) for isolation in Isolation]

    def require(self, isolation: Isolation) -> TierStatus:
        """The tier's status when it is available. Raises TierUnavailableError naming it."""
        self._backend(isolation)
        return self.tier(isolation)

    def ping(self) -> bool:
        return self._default.ping()

    def image_digest(self) -> str:
        return self._default.image_digest()

    def sweep(self, dead_owners: Collection[str], unowned_older_than_s: float) -> int:
        return sum(b.sweep(dead_owners, unowned_older_than_s) for b in self._distinct)

    @property
    def live_count(self) -> int:
        return sum(b.live_count for b in self._distinct)

    @property
    def pending_removals(self) -> int:
        return sum(b.pending_removals for b in self._distinct)

    def drain(self, timeout_s: float = 30.0) -> bool:
        return all([b.drain(timeout_s) for b in self._distinct])

    def close(self) -> None:
        # The default last: the jail's backend asks it (Docker) for its image until it closes.
        for backend in self._distinct:
            if backend is not self._default:
                backend.close()
        self._default.close()
