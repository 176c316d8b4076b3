"""web/: the bearer-key check and the cache of keys that authenticated."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import current_app, g, request

from actioncage.errors import AuthError
from actioncage.models import ApiKey
from actioncage.shared.epochs import EpochCache
from actioncage.shared.state import Revocations

if TYPE_CHECKING:
    from actioncage.components import Components
from actioncage.store import repo


class KeyCache(EpochCache[str, ApiKey]):
    """Keys that authenticated recently, by their secret's hash, for ``ttl_s`` seconds.

    Every call of an action starts with this lookup; answering it from memory takes a
    database round trip off the hot path. Only successes are kept, so a new key works at
    once and an unknown one is always looked up. A revoked key is forgotten within
    EPOCH_CHECK_S: the cache follows the revocations' epoch (Redis, or the keys table; see
    EpochCache). A key deleted from the database directly keeps working in this process for
    at most ``ttl_s``. ``ttl_s`` 0 turns the cache off.
    """

    def __init__(self, ttl_s: float, revocations: Revocations) -> None:
        super().__init__("revocations", ttl_s, revocations.epoch)

    def find(self, key: str) -> ApiKey | None:
        """The cached key whose secret is ``key``, or None when not cached (or expired)."""
        return super().find(repo.hash_key(key))

    def remember(self, key: str, value: ApiKey, generation: int) -> None:
        """Cache ``value``, the key whose secret is ``key``, found in the database when the
        cache's generation was ``generation`` (a revocation since then may concern it: it
        is not kept)."""
        super().remember(repo.hash_key(key), value, generation)


def key_from_request() -> str | None:
    """The key from ``Authorization: Bearer``, or None."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def authenticate(secret: str | None) -> ApiKey:
    """The key whose secret this is, stored on ``g.api_key``. Raises AuthError."""
    if not secret:
        raise AuthError("missing API key: send Authorization: Bearer <key>")
    components: Components = current_app.extensions["actioncage"]
    key: ApiKey | None = components.keys.find(secret)
    if key is None:
        generation = components.keys.generation
        with components.store.session() as s:
            key = repo.find_key(s, secret)
        if key is None:
            raise AuthError("unknown or revoked API key")
        components.keys.remember(secret, key, generation)
    g.api_key = key
    return key


def require_key() -> None:
    """A ``before_request`` hook: every route of the blueprint needs a key."""
    authenticate(key_from_request())


def current_key() -> ApiKey:
    key: ApiKey = g.api_key
    return key
