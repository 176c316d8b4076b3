"""web/: the bearer-key check and the cache of keys that authenticated."""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from flask import current_app, g, request

from actioncage.errors import AuthError
from actioncage.models import ApiKey
from actioncage.shared.state import Revocations

if TYPE_CHECKING:
    from actioncage.components import Components
from actioncage.store import repo

log = logging.getLogger(__name__)

_MAX_CACHED_KEYS = 10_000
# How often the revocation epoch is read: a key revoked anywhere stops working here within
# this (plus one read).
REVOCATION_CHECK_S = 0.5
# A background read older than this (the watcher stalled, or the store is slow): requests
# read the epoch themselves again, so revocation never waits on a stuck thread.
_WATCH_STALE_S = 4 * REVOCATION_CHECK_S


class KeyCache:
    """Keys that authenticated recently, by their secret's hash, for ``ttl_s`` seconds.

    Every call of an action starts with this lookup; answering it from memory takes a
    database round trip off the hot path. Only successes are kept, so a new key works at
    once and an unknown one is always looked up. A revoked key is forgotten within
    REVOCATION_CHECK_S: the cache reads the revocations' epoch (Redis, or the keys table)
    that often and starts afresh when it moved; the read is done by a watcher thread
    (start()), off the requests' path, or by a request when the watcher has not read it
    within _WATCH_STALE_S. A key deleted from the database directly keeps working in this
    process for at most ``ttl_s``. ``ttl_s`` 0 turns the cache off.
    """

    def __init__(self, ttl_s: float, revocations: Revocations) -> None:
        self._ttl_s = ttl_s
        self._revocations = revocations
        self._lock = threading.Lock()
        self._keys: dict[str, tuple[float, ApiKey]] = {}
        self._epoch: str | None = None
        self._next_check = 0.0
        self._watched_at = float("-inf")  # monotonic time of the watcher's last read
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        # Bumped whenever the cache starts afresh: a lookup begun before is not remembered.
        self.generation = 0

    def start(self) -> None:
        """Read the revocation epoch every REVOCATION_CHECK_S on a daemon thread."""
        if self._ttl_s <= 0 or self._watcher is not None:
            return
        self._watcher = threading.Thread(
            target=self._watch, name="actioncage-revocations", daemon=True
        )
        self._watcher.start()

    def close(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
            self._watcher = None

    def _watch(self) -> None:
        while not self._stop.is_set():
            if self._read_epoch():
                self._watched_at = time.monotonic()
            self._stop.wait(REVOCATION_CHECK_S)

    def find(self, secret: str) -> ApiKey | None:
        """The cached key for this secret, or None when not cached (or expired)."""
        if self._ttl_s <= 0:
            return None
        self._check_revocations()
        hashed = repo.hash_key(secret)
        with self._lock:
            entry = self._keys.get(hashed)
            if entry is None:
                return None
            if entry[0] <= time.monotonic():
                del self._keys[hashed]
                return None
            return entry[1]

    def remember(self, secret: str, key: ApiKey, generation: int) -> None:
        """Cache ``key``, found in the database when the cache's generation was
        ``generation`` (a revocation since then may concern it: it is not kept)."""
        if self._ttl_s <= 0:
            return
        with self._lock:
            if generation != self.generation:
                return
            if len(self._keys) >= _MAX_CACHED_KEYS:
                self._keys.clear()
            self._keys[repo.hash_key(secret)] = (time.monotonic() + self._ttl_s, key)

    def start_afresh(self) -> None:
        """Forget every cached key now (a revocation made in this process: it takes effect
        here at once, not at the next epoch check)."""
        with self._lock:
            self._keys.clear()
            self.generation += 1

    def _check_revocations(self) -> None:
        now = time.monotonic()
        if now - self._watched_at < _WATCH_STALE_S:
            return  # the watcher read it lately
        with self._lock:
            if now < self._next_check:
                return
            self._next_check = now + REVOCATION_CHECK_S  # one thread reads; others go on
        self._read_epoch()

    def _read_epoch(self) -> bool:
        """Read the epoch; start afresh when it moved or cannot be read (False then)."""
        try:
            epoch: str | None = self._revocations.epoch()
        except Exception:  # SharedStateError, or the store's own (a database hiccup)
            log.warning("revocations unreadable: trusting no cached key", exc_info=True)
            epoch = None
        with self._lock:
            if epoch is None or epoch != self._epoch:
                self._keys.clear()
                self.generation += 1
            self._epoch = epoch
        return epoch is not None


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
