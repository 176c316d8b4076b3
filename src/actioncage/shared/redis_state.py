"""shared/: the Redis implementations (ACTIONCAGE_REDIS_URL): every process on one Redis
counts as one. The only module importing `redis`; its errors become SharedStateError here.

Keys (all under ``actioncage:``):
  limits:...            `limits`' moving windows (rate limits)
  conc:<name>           sorted set of holders, scored by lease expiry (ms, Redis's clock)
  claim:<name>          an idempotency claim: SET NX PX, its value the holder's token
  keys:revoked-epoch    INCR'd by every revocation
  rasa:domains          hash (org NUL digest) -> domain JSON, with rasa:domains:age beside it
  containers            sorted set of live container ids, scored by lease expiry

Leases: one thread per process renews every lease it holds each ``min(1 s, lease_s / 3)`` in
one round trip; a process that dies stops renewing, and what it held is purged once
``lease_s`` passed. Redis calls time out after 2 s (SharedStateError: admission fails closed).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import redis
import redis.exceptions
from limits import RateLimitItemPerSecond
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter

from actioncage.errors import ConfigError, SharedStateError
from actioncage.shared.state import Full, Hold, SharedState

log = logging.getLogger(__name__)

PREFIX = "actioncage:"
DEFAULT_LEASE_S = 10.0
DOMAIN_CACHE_SIZE = 4096
DOMAIN_TTL_S = 24 * 3600
# A bigger domain is not cached: Rasa then sends it again (one more round trip for it).
MAX_DOMAIN_BYTES = 1024 * 1024

_NO_LIMIT = 2**50

# Redis's own clock in ms, so the leases of processes on different hosts agree.
_NOW = "local t = redis.call('TIME') local now = t[1] * 1000 + math.floor(t[2] / 1000) "

# KEYS: counters. ARGV: member, lease_ms, then one limit per counter. All or none.
# Returns {0} when held, else {i, held} for the first full counter.
_ACQUIRE = (
    _NOW
    + """
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  local held = redis.call('ZCARD', key)
  if held >= tonumber(ARGV[i + 2]) then return {i, held} end
end
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, now + tonumber(ARGV[2]), ARGV[1])
  redis.call('PEXPIRE', key, 2 * tonumber(ARGV[2]))
end
return {0}
"""
)

# KEYS: n sorted sets, then claim keys. ARGV: lease_ms, n, n members, then claim tokens.
# Renews only what is still ours: a lease already purged stays lost.
_RENEW = (
    _NOW
    + """
local lease = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
for i, key in ipairs(KEYS) do
  local value = ARGV[i + 2]
  if i <= n then
    if redis.call('ZSCORE', key, value) then
      redis.call('ZADD', key, now + lease, value)
      redis.call('PEXPIRE', key, 2 * lease)
    end
  elseif redis.call('GET', key) == value then
    redis.call('PEXPIRE', key, lease)
  end
end
return 0
"""
)

# KEYS[1]: a claim. ARGV[1]: the holder's token. Deletes it only if it is still ours.
_RELEASE_CLAIM = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS[1]: a sorted set of leases. Purges the stale, returns how many are left.
_COUNT = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZCARD', KEYS[1])
"""
)

# KEYS: the domains hash, its age index. ARGV: field, json, cap, ttl_ms.
_PUT_DOMAIN = (
    _NOW
    + """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], now, ARGV[1])
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[4]))
local over = redis.call('ZCARD', KEYS[2]) - #gone - tonumber(ARGV[3])
if over > 0 then
  for _, f in ipairs(redis.call('ZRANGE', KEYS[2], #gone, #gone + over - 1)) do
    table.insert(gone, f)
  end
end
for _, f in ipairs(gone) do
  redis.call('HDEL', KEYS[1], f)
  redis.call('ZREM', KEYS[2], f)
end
return #gone
"""
)


@contextmanager
def _translated(doing: str) -> Iterator[None]:
    try:
        yield
    except redis.exceptions.RedisError as exc:
        raise SharedStateError(f"Redis did not answer while {doing}: {exc}") from exc


class RedisShared:
    """One connection pool and one lease keeper for every Redis-backed interface."""

    def __init__(self, url: str, lease_s: float = DEFAULT_LEASE_S) -> None:
        """Connect to ``url``. Raises ConfigError when no Redis answers there."""
        self.lease_ms = max(1, int(lease_s * 1000))
        try:
            self.client = redis.Redis.from_url(
                url, socket_timeout=2, socket_connect_timeout=2, health_check_interval=30
            )
            self.client.ping()
        except (redis.exceptions.RedisError, ValueError) as exc:
            raise ConfigError(f"ACTIONCAGE_REDIS_URL: no Redis answers there ({exc})") from exc
        self.url = url
        self.acquire_script = self.client.register_script(_ACQUIRE)
        self.renew_script = self.client.register_script(_RENEW)
        self.release_claim_script = self.client.register_script(_RELEASE_CLAIM)
        self.count_script = self.client.register_script(_COUNT)
        self.put_domain_script = self.client.register_script(_PUT_DOMAIN)
        self._lock = threading.Lock()
        self._zset_leases: dict[tuple[str, str], int] = {}  # (key, member) -> holds
        self._claim_leases: dict[str, str] = {}  # key -> token
        self._tick_s = min(1.0, lease_s / 3)
        self._tick_hooks: list[Callable[[], None]] = []
        self._stop = threading.Event()
        self._keeper = threading.Thread(target=self._keep, name="actioncage-leases", daemon=True)
        self._keeper.start()

    # -- leases ---------------------------------------------------------------------------

    def keep_member(self, key: str, member: str) -> None:
        with self._lock:
            self._zset_leases[(key, member)] = self._zset_leases.get((key, member), 0) + 1

    def drop_member(self, key: str, member: str) -> None:
        with self._lock:
            left = self._zset_leases.pop((key, member), 1) - 1
            if left > 0:
                self._zset_leases[(key, member)] = left

    def keep_claim(self, key: str, token: str) -> None:
        with self._lock:
            self._claim_leases[key] = token

    def drop_claim(self, key: str) -> None:
        with self._lock:
            self._claim_leases.pop(key, None)

    def renew(self) -> None:
        """Extend every lease this process holds, in one round trip."""
        with self._lock:
            members = list(self._zset_leases)
            claims = list(self._claim_leases.items())
        if not members and not claims:
            return
        keys = [k for k, _ in members] + [k for k, _ in claims]
        args: list[Any] = [self.lease_ms, len(members)]
        args += [m for _, m in members] + [t for _, t in claims]
        with _translated("renewing leases"):
            self.renew_script(keys=keys, args=args)

    def on_tick(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` on the keeper's thread after each renewal (it must not raise)."""
        self._tick_hooks.append(hook)
        hook()

    def _keep(self) -> None:
        while not self._stop.wait(self._tick_s):
            try:
                self.renew()
            except SharedStateError:
                log.warning("could not renew shared leases", exc_info=True)
            for hook in self._tick_hooks:
                hook()

    def close(self) -> None:
        """Stop renewing, give back what this process still holds, close the connections."""
        self._stop.set()
        self._keeper.join(timeout=5)
        with self._lock:
            members = list(self._zset_leases)
            claims = list(self._claim_leases.items())
            self._zset_leases.clear()
            self._claim_leases.clear()
        try:
            with self.client.pipeline(transaction=False) as pipe:
                for key, member in members:
                    pipe.zrem(key, member)
                for key, token in claims:
                    self.release_claim_script(keys=[key], args=[token], client=pipe)
                pipe.execute()
        except redis.exceptions.RedisError:
            log.warning("could not give back shared leases at close", exc_info=True)
        self.client.close()


class RedisRateLimits:
    """Moving windows in Redis (`limits`' RedisStorage on our connection pool): each hit is
    one atomic script, so every process sees one count."""

    def __init__(self, shared: RedisShared) -> None:
        storage = RedisStorage(
            shared.url,
            connection_pool=shared.client.connection_pool,
            key_prefix=PREFIX + "limits",
        )
        self._limiter = MovingWindowRateLimiter(storage)

    def hit(self, name: str, limit: int, window_s: int) -> int | None:
        item = RateLimitItemPerSecond(limit, window_s)
        with _translated("counting a rate limit"):
            if self._limiter.hit(item, name):
                return None
            reset_at = self._limiter.get_window_stats(item, name).reset_time
        return max(1, math.ceil(reset_at - time.time()))


class _RedisHold:
    def __init__(self, release: Callable[[], None]) -> None:
        self._release = release
        self._done = False

    def release(self) -> None:
        if self._done:
            return
        self._done = True
        try:
            self._release()
        except redis.exceptions.RedisError:
            # The lease runs out by itself; the place is only held a little longer.
            log.warning("could not give a shared place back; its lease will", exc_info=True)


class RedisConcurrency:
    """Counters as sorted sets of holders scored by lease expiry; a full check purges the
    expired holders first, and checks and adds in one script (atomic)."""

    def __init__(self, shared: RedisShared) -> None:
        self._shared = shared

    def acquire(self, limits: Sequence[tuple[str, int]]) -> Hold | Full:
        if not limits:
            return _RedisHold(lambda: None)
        keys = [f"{PREFIX}conc:{name}" for name, _ in limits]
        member = uuid.uuid4().hex
        with _translated("taking a concurrency place"):
            got = self._shared.acquire_script(
                keys=keys, args=[member, self._shared.lease_ms, *(limit for _, limit in limits)]
            )
        if got[0]:
            name, limit = limits[int(got[0]) - 1]
            return Full(name, int(got[1]), limit)
        for key in keys:
            self._shared.keep_member(key, member)

        def release() -> None:
            for key in keys:
                self._shared.drop_member(key, member)
            with self._shared.client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.zrem(key, member)
                pipe.execute()

        return _RedisHold(release)


class RedisClaims:
    """Claims as ``SET NX PX`` with a per-holder token, renewed while held."""

    shared = True

    def __init__(self, shared: RedisShared) -> None:
        self._shared = shared

    def try_claim(self, name: str) -> Hold | None:
        key = f"{PREFIX}claim:{name}"
        token = uuid.uuid4().hex
        with _translated("claiming an Idempotency-Key"):
            if not self._shared.client.set(key, token, nx=True, px=self._shared.lease_ms):
                return None
        self._shared.keep_claim(key, token)

        def release() -> None:
            self._shared.drop_claim(key)
            self._shared.release_claim_script(keys=[key], args=[token])

        return _RedisHold(release)


class RedisRevocations:
    """A revocation epoch every process reads (at most twice a second, from web/auth.py)."""

    _KEY = PREFIX + "keys:revoked-epoch"

    def __init__(self, shared: RedisShared) -> None:
        self._client = shared.client

    def revoked(self, key_id: str) -> None:
        with _translated("announcing a revoked key"):
            self._client.incr(self._KEY)

    def epoch(self) -> str:
        with _translated("reading the revocation epoch"):
            value = self._client.get(self._KEY)
        if value is None:
            return "0"
        return value.decode() if isinstance(value, bytes) else str(value)


class RedisDomains:
    """Domains in one hash with an age index: at most ``size`` of them, none older than
    ``ttl_s``, none bigger than MAX_DOMAIN_BYTES. A Redis failure is a cache miss."""

    _HASH = PREFIX + "rasa:domains"
    _AGE = PREFIX + "rasa:domains:age"

    def __init__(
        self, shared: RedisShared, size: int = DOMAIN_CACHE_SIZE, ttl_s: int = DOMAIN_TTL_S
    ) -> None:
        self._shared = shared
        self._size = size
        self._ttl_ms = ttl_s * 1000

    def get(self, org_id: str, digest: str) -> dict[str, Any] | None:
        try:
            raw = self._shared.client.hget(self._HASH, f"{org_id}\0{digest}")
        except redis.exceptions.RedisError:
            log.warning("Rasa domain cache unreadable", exc_info=True)
            return None
        if raw is None:
            return None
        domain = json.loads(raw)
        return domain if isinstance(domain, dict) else None

    def put(self, org_id: str, digest: str, domain: dict[str, Any]) -> None:
        encoded = json.dumps(domain, separators=(",", ":"))
        if len(encoded) > MAX_DOMAIN_BYTES:
            return
        try:
            self._shared.put_domain_script(
                keys=[self._HASH, self._AGE],
                args=[f"{org_id}\0{digest}", encoded, self._size, self._ttl_ms],
            )
        except redis.exceptions.RedisError:
            log.warning("Rasa domain cache unwritable", exc_info=True)


class RedisLiveSet:
    """Live members (container ids) of every process, leased like concurrency places.

    count() never waits on Redis (the warm pool asks under its lock): it answers the total
    read at the lease keeper's last tick (at most a second old) plus this process's changes
    since. Best effort: without Redis a run still runs, and the count is this process's.
    """

    _KEY = PREFIX + "containers"

    def __init__(self, shared: RedisShared) -> None:
        self._shared = shared
        self._lock = threading.Lock()
        self._mine: set[str] = set()
        self._total: int | None = None  # every process's, as of the last tick; None: unknown
        self._delta = 0  # this process's adds minus discards since then
        shared.on_tick(self._refresh)

    def add(self, member: str) -> None:
        with self._lock:
            self._mine.add(member)
            self._delta += 1
        self._shared.keep_member(self._KEY, member)
        try:
            # The acquire script with no real limit: leased on Redis's clock like the rest.
            self._shared.acquire_script(
                keys=[self._KEY], args=[member, self._shared.lease_ms, _NO_LIMIT]
            )
        except redis.exceptions.RedisError:
            log.warning("could not count a live container in Redis", exc_info=True)

    def discard(self, member: str) -> None:
        with self._lock:
            if member in self._mine:
                self._mine.discard(member)
                self._delta -= 1
        self._shared.drop_member(self._KEY, member)
        try:
            self._shared.client.zrem(self._KEY, member)
        except redis.exceptions.RedisError:
            log.warning("could not uncount a live container in Redis", exc_info=True)

    def count(self) -> int:
        with self._lock:
            if self._total is None:
                return len(self._mine)
            return max(len(self._mine), self._total + self._delta)

    def _refresh(self) -> None:
        with self._lock:
            delta_before = self._delta
        try:
            total = int(self._shared.count_script(keys=[self._KEY]))
        except redis.exceptions.RedisError:
            log.warning("could not count live containers in Redis", exc_info=True)
            total = None
        with self._lock:
            self._total = total
            self._delta -= delta_before


def on_redis(url: str, lease_s: float = DEFAULT_LEASE_S) -> SharedState:
    """Every interface on the Redis at ``url``. Raises ConfigError when none answers."""
    shared = RedisShared(url, lease_s)
    return SharedState(
        rates=RedisRateLimits(shared),
        concurrency=RedisConcurrency(shared),
        claims=RedisClaims(shared),
        revocations=RedisRevocations(shared),
        domains=RedisDomains(shared),
        containers=RedisLiveSet(shared),
        close=shared.close,
    )
