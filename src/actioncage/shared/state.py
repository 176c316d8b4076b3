"""shared/: the interfaces of the state shared by every process, and the bundle of them
components.build_shared makes (in-process: memory.py; Redis: redis_state.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol


class RateLimits(Protocol):
    """Moving-window event counts per name (the `limits` library underneath)."""

    def hit(self, name: str, limit: int, window_s: int) -> int | None:
        """Count one event for ``name`` if fewer than ``limit`` were counted in the last
        ``window_s`` seconds. Returns None when counted, else the whole seconds (at least 1)
        until one more would be. Raises SharedStateError."""
        ...


@dataclass(frozen=True)
class Full:
    """A concurrency counter that had no room: its name, what it held and its limit."""

    name: str
    held: int
    limit: int


class Hold(Protocol):
    """Places held in one or more concurrency counters, until released."""

    def release(self) -> None:
        """Give the places back (idempotent; never raises)."""
        ...


class Concurrency(Protocol):
    """Counters of things in progress. A holder keeps a lease that its process renews; a
    process that dies stops renewing, and its places come free when the lease runs out."""

    def acquire(self, limits: Sequence[tuple[str, int]]) -> Hold | Full:
        """A place in every named counter under its limit, all or none: the Hold, or the
        first counter that was Full. Raises SharedStateError."""
        ...


class Claims(Protocol):
    """Exclusive claims on names (Idempotency-Keys), leased like concurrency places."""

    @property
    def shared(self) -> bool:
        """True when every process sees the claims (so an unclaimed name is nobody's)."""
        ...

    def try_claim(self, name: str) -> Hold | None:
        """The claim on ``name``, or None while someone else holds it.
        Raises SharedStateError."""
        ...


class Revocations(Protocol):
    """Tells every process's key cache that a key was revoked."""

    def revoked(self, key_id: str) -> None:
        """Announce that ``key_id`` was revoked (its row already says so)."""
        ...

    def epoch(self) -> str:
        """A value that changes whenever any key is revoked. Raises SharedStateError."""
        ...


class DomainCache(Protocol):
    """Rasa domains by (org, domain_digest): Rasa sends a digest and the domain only when
    we ask (449). A digest names one domain's content, so a cached entry is never stale."""

    def get(self, org_id: str, digest: str) -> dict[str, Any] | None:
        """The cached domain, or None."""
        ...

    def put(self, org_id: str, digest: str, domain: dict[str, Any]) -> None:
        """Cache ``domain`` (the oldest entries make room past the cap)."""
        ...


class LiveSet(Protocol):
    """Names of live things (containers) in every process, for a cap over all of them."""

    def add(self, member: str) -> None:
        """Count ``member`` as live (best effort: never raises)."""
        ...

    def discard(self, member: str) -> None:
        """Stop counting ``member`` (best effort: never raises)."""
        ...

    def count(self) -> int:
        """How many are live in every process (best effort: never raises)."""
        ...


@dataclass(frozen=True)
class SharedState:
    """One implementation of every interface, and how to close them."""

    rates: RateLimits
    concurrency: Concurrency
    claims: Claims
    revocations: Revocations
    domains: DomainCache
    containers: LiveSet
    close: Callable[[], None]
