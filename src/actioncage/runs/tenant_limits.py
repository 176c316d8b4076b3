"""runs/: runs-per-minute and concurrent-run limits per org and per key, counted in the
shared state (shared/): in-process by default, so with N processes the effective limits are
N times the configured ones; one count for every process with ACTIONCAGE_REDIS_URL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from actioncage.errors import RateLimitedError
from actioncage.models import OrgPolicy
from actioncage.settings import Settings
from actioncage.shared.state import Concurrency, Full, RateLimits

WINDOW_S = 60
# A caller refused for concurrency is told to come back after this long.
_CONCURRENCY_RETRY_S = 1


class TenantLimiter:
    """Admits a run if its org and its key are under their limits; ``None``/0 is unlimited."""

    def __init__(self, settings: Settings, rates: RateLimits, concurrency: Concurrency) -> None:
        self._key_rpm = settings.key_runs_per_minute or None
        self._key_concurrent = settings.key_concurrent_runs or None
        self._rates = rates
        self._concurrency = concurrency

    @contextmanager
    def admit(self, org_id: str, key_id: str | None, org: OrgPolicy | None) -> Iterator[None]:
        """Hold a run slot for the org and the key while the block runs.

        Takes the concurrency places first (all or none, one shared round trip), then counts
        the run against each per-minute limit (one round trip each that is set); a refusal
        gives the places back. A run refused by the key's rate still counted against the
        org's. Raises RateLimitedError (with ``retry_after_s``) naming the limit that was
        hit; SharedStateError when the shared state does not answer.
        """
        checks: list[tuple[str, int | None, int | None, str]] = [
            (
                f"org:{org_id}",
                None if org is None else org.runs_per_minute,
                None if org is None else org.concurrent_runs,
                f"org {org_id}",
            )
        ]
        if key_id is not None:
            checks.append((f"key:{key_id}", self._key_rpm, self._key_concurrent, "this API key"))
        places = [(name, concurrent) for name, _, concurrent, _ in checks if concurrent]
        hold = None
        if places:
            got = self._concurrency.acquire(places)
            if isinstance(got, Full):
                who = next(w for name, _, _, w in checks if name == got.name)
                raise RateLimitedError(
                    f"{who} already has {got.held} runs in progress (limit {got.limit})",
                    _CONCURRENCY_RETRY_S,
                )
            hold = got
        try:
            for name, rpm, _, who in checks:
                if rpm:
                    wait_s = self._rates.hit(name, rpm, WINDOW_S)
                    if wait_s is not None:
                        raise RateLimitedError(
                            f"{who} reached its limit of {rpm} runs per minute", wait_s
                        )
            yield
        finally:
            if hold is not None:
                hold.release()
