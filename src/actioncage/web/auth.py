"""The bearer-key check."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from flask import current_app, g, request

from actioncage.errors import AuthError
from actioncage.models import ApiKey

if TYPE_CHECKING:
    from actioncage.components import Components
from actioncage.store import repo

_MAX_CACHED_KEYS = 10_000


class KeyCache:
    """Keys that authenticated recently, by their secret's hash, for ``ttl_s`` seconds.

    Every call of an action starts with this lookup; answering it from memory takes a
    database round trip off the hot path. Only successes are kept, so a new key works at
    once and an unknown one is always looked up. A key removed from the database directly
    keeps working in this process for at most ``ttl_s``. ``ttl_s`` 0 turns the cache off.
    """

    def __init__(self, ttl_s: float) -> None:
        self._ttl_s = ttl_s
        self._lock = threading.Lock()
        self._keys: dict[str, tuple[float, ApiKey]] = {}

    def find(self, secret: str) -> ApiKey | None:
        """The cached key for this secret, or None when not cached (or expired)."""
        if self._ttl_s <= 0:
            return None
        hashed = repo.hash_key(secret)
        with self._lock:
            entry = self._keys.get(hashed)
            if entry is None:
                return None
            if entry[0] <= time.monotonic():
                del self._keys[hashed]
                return None
            return entry[1]

    def remember(self, secret: str, key: ApiKey) -> None:
        if self._ttl_s <= 0:
            return
        with self._lock:
            if len(self._keys) >= _MAX_CACHED_KEYS:
                self._keys.clear()
            self._keys[repo.hash_key(secret)] = (time.monotonic() + self._ttl_s, key)


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
        with components.store.session() as s:
            key = repo.find_key(s, secret)
        if key is None:
            raise AuthError("unknown API key")
        components.keys.remember(secret, key)
    g.api_key = key
    return key


def require_key() -> None:
    """A ``before_request`` hook: every route of the blueprint needs a key."""
    authenticate(key_from_request())


def current_key() -> ApiKey:
    key: ApiKey = g.api_key
    return key
