"""runs/: admission, the one gate every run passes (the org's policy, rate and concurrency
limits per org and per key); HTTP-free."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from actioncage.models import OrgPolicy
from actioncage.runs.definitions import Definitions
from actioncage.runs.tenant_limits import TenantLimiter


@dataclass(frozen=True)
class Admission:
    """What admission read on the way in: the org's policy (None: the org has none)."""

    org: OrgPolicy | None


class Gate:
    """Admits runs under the org's and the key's limits. Every front door's runs pass here,
    triggered and background runs included."""

    def __init__(self, definitions: Definitions, limiter: TenantLimiter) -> None:
        self._definitions = definitions
        self._limiter = limiter

    def read(self, org_id: str) -> Admission:
        """The org's policy as of now, without holding a slot."""
        return Admission(self._definitions.org_policy(org_id))

    @contextmanager
    def admit(
        self, org_id: str, key_id: str | None, read: Admission | None = None
    ) -> Iterator[Admission]:
        """Hold a run slot for the org and the key while the block runs.

        Yields what it read (or ``read``, the org's policy as the caller just read it), so
        the run need not read the org's policy again. Raises RateLimitedError (carrying
        Retry-After) naming the limit that was hit.
        """
        admission = read if read is not None else self.read(org_id)
        with self._limiter.admit(org_id, key_id, admission.org):
            yield admission
