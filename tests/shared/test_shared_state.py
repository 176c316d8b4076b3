"""Shared state without an engine: limits, leases, idempotency claims and the domain cache
behave as one across two instances on one Redis (each with its own connections, as two
processes would be), and in-process as before."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from actioncage.components import build_shared
from actioncage.errors import ConfigError, RateLimitedError
from actioncage.models import OrgPolicy
from actioncage.runs.idempotency import Idempotency
from actioncage.runs.tenant_limits import TenantLimiter
from actioncage.settings import Settings
from actioncage.shared.memory import MemoryDomains, in_process
from actioncage.shared.redis_state import RedisDomains, RedisShared, on_redis
from actioncage.shared.state import Full, SharedState
from actioncage.store import Store
from tests.conftest import make_settings, wait_for
from tests.served import free_port

ORG = OrgPolicy(runs_per_minute=10)


@pytest.fixture
def two_on_redis(redis_url: str) -> Iterator[tuple[SharedState, SharedState]]:
    a, b = on_redis(redis_url), on_redis(redis_url)
    yield a, b
    a.close()
    b.close()


@pytest.fixture(params=["memory", "redis"])
def one_state(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SharedState]:
    if request.param == "memory":
        state = in_process(Store(f"sqlite:///{tmp_path / 'db.sqlite'}"))
    else:
        state = on_redis(request.getfixturevalue("redis_url"))
    yield state
    state.close()


def _limiter(tmp_path: Path, state: SharedState) -> TenantLimiter:
    return TenantLimiter(make_settings(tmp_path), state.rates, state.concurrency)


# --- rate and concurrency limits -----------------------------------------------------------


def test_two_limiters_on_one_redis_admit_exactly_the_orgs_runs_per_minute(
    tmp_path: Path, two_on_redis: tuple[SharedState, SharedState]
) -> None:
    limiters = [_limiter(tmp_path, s) for s in two_on_redis]
    admitted = 0
    refusals: list[RateLimitedError] = []
    for i in range(14):
        try:
            with limiters[i % 2].admit("acme", "key_1", ORG):
                admitted += 1
        except RateLimitedError as exc:
            refusals.append(exc)
    assert admitted == 10 and len(refusals) == 4
    assert all(1 <= r.retry_after_s <= 60 and "10 runs per minute" in str(r) for r in refusals)
    # Another org counts on its own.
    with limiters[1].admit("other", "key_2", ORG):
        pass


def test_in_process_limiters_each_count_their_own(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    limiters = [_limiter(tmp_path, in_process(store)) for _ in range(2)]
    for limiter in limiters:
        for _ in range(10):
            with limiter.admit("acme", None, ORG):
                pass
        with pytest.raises(RateLimitedError), limiter.admit("acme", None, ORG):
            pass


def test_concurrency_limit_holds_across_two_limiters(
    tmp_path: Path, two_on_redis: tuple[SharedState, SharedState]
) -> None:
    a, b = (_limiter(tmp_path, s) for s in two_on_redis)
    org = OrgPolicy(concurrent_runs=2)
    with contextlib.ExitStack() as held:
        held.enter_context(a.admit("acme", None, org))
        held.enter_context(b.admit("acme", None, org))
        for limiter in (a, b):
            with pytest.raises(RateLimitedError) as exc, limiter.admit("acme", None, org):
                pass
            assert exc.value.retry_after_s == 1
            assert "already has 2 runs in progress (limit 2)" in str(exc.value)
    with a.admit("acme", None, org), b.admit("acme", None, org):
        pass  # both places came back


def test_per_key_concurrency_and_rate_across_two_limiters(
    tmp_path: Path, two_on_redis: tuple[SharedState, SharedState]
) -> None:
    settings = make_settings(tmp_path, key_concurrent_runs=1, key_runs_per_minute=3)
    a, b = (TenantLimiter(settings, s.rates, s.concurrency) for s in two_on_redis)
    with a.admit("acme", "key_1", None):
        with pytest.raises(RateLimitedError) as exc, b.admit("acme", "key_1", None):
            pass
        assert "this API key already has 1 runs in progress" in str(exc.value)
        with b.admit("acme", "key_2", None):
            pass
    with b.admit("acme", "key_1", None), contextlib.nullcontext():
        pass
    with a.admit("acme", "key_1", None):
        pass
    with pytest.raises(RateLimitedError) as exc, b.admit("acme", "key_1", None):
        pass
    assert "this API key reached its limit of 3 runs per minute" in str(exc.value)


def test_the_rate_window_slides(one_state: SharedState) -> None:
    rates = one_state.rates
    assert rates.hit("slide", 2, 1) is None and rates.hit("slide", 2, 1) is None
    assert rates.hit("slide", 2, 1) == 1
    assert wait_for(lambda: rates.hit("slide", 2, 1) is None, timeout=5)


def test_concurrency_is_all_or_none(one_state: SharedState) -> None:
    places = one_state.concurrency
    b = places.acquire([("b", 1)])
    assert not isinstance(b, Full)
    full = places.acquire([("a", 1), ("b", 1)])
    assert full == Full("b", 1, 1)
    a = places.acquire([("a", 1)])  # "a" was not taken by the refused acquire
    assert not isinstance(a, Full)
    a.release()
    a.release()  # releasing twice gives back once
    b.release()
    both = places.acquire([("a", 1), ("b", 1)])
    assert not isinstance(both, Full)
    both.release()


def _lease_score(redis_url: str, key: str) -> float:
    client = redis.Redis.from_url(redis_url)
    try:
        scores = client.zrange(key, 0, -1, withscores=True)
        return max((score for _, score in scores), default=0.0)
    finally:
        client.close()


def test_a_held_place_is_renewed_past_its_lease(redis_url: str) -> None:
    holder, other = on_redis(redis_url, lease_s=0.3), on_redis(redis_url)
    try:
        held = holder.concurrency.acquire([("acme", 1)])
        assert not isinstance(held, Full)
        first = _lease_score(redis_url, "actioncage:conc:acme")
        # The keeper moves the expiry on (every lease_s / 3) well past the first lease.
        assert wait_for(lambda: _lease_score(redis_url, "actioncage:conc:acme") > first + 600)
        assert isinstance(other.concurrency.acquire([("acme", 1)]), Full)
        held.release()
        assert not isinstance(got := other.concurrency.acquire([("acme", 1)]), Full)
        got.release()
    finally:
        holder.close()
        other.close()


@contextlib.contextmanager
def _process(script: str, *args: str) -> Iterator[subprocess.Popen[str]]:
    """A Python process running ``script``; the test kills it (SIGKILL: no clean-up runs)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", script, *args], stdout=subprocess.PIPE, text=True
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        assert proc.stdout is not None
        proc.stdout.close()


_HOLD_A_PLACE = """
import sys, threading
from actioncage.shared.redis_state import on_redis
from actioncage.shared.state import Full
state = on_redis(sys.argv[1], lease_s=1.0)
assert not isinstance(state.concurrency.acquire([("acme", 1)]), Full)
state.containers.add("c-of-the-dead")
print("held", flush=True)
threading.Event().wait()
"""


def test_a_dead_processs_place_and_containers_come_free_after_its_lease(redis_url: str) -> None:
    other = on_redis(redis_url)
    try:
        with _process(_HOLD_A_PLACE, redis_url) as proc:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
            assert isinstance(other.concurrency.acquire([("acme", 1)]), Full)
            assert wait_for(lambda: other.containers.count() == 1, timeout=5)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        # Within the dead process's lease (1 s) plus a margin, its place and container go.
        assert wait_for(lambda: other.containers.count() == 0 and _free(other), timeout=5)
    finally:
        other.close()


def _free(state: SharedState) -> bool:
    got = state.concurrency.acquire([("acme", 1)])
    if isinstance(got, Full):
        return False
    got.release()
    return True


def test_live_containers_are_counted_over_every_instance(
    two_on_redis: tuple[SharedState, SharedState],
) -> None:
    a, b = two_on_redis
    a.containers.add("c1")
    assert a.containers.count() == 1  # its own at once
    b.containers.add("c2")
    # Another process's within a keeper tick (count() itself never waits on Redis).
    assert wait_for(lambda: a.containers.count() == b.containers.count() == 2, timeout=5)
    a.containers.discard("c1")
    assert a.containers.count() == 1
    assert wait_for(lambda: b.containers.count() == 1, timeout=5)


# --- idempotency claims --------------------------------------------------------------------


def _idempotency(tmp_path: Path, state: SharedState, max_wait_s: float = 20) -> Idempotency:
    store = Store(f"sqlite:///{tmp_path / 'shared.db'}")
    store.create_all()
    return Idempotency(store, state.claims, 3600, max_wait_s)


def test_a_duplicate_on_another_instance_waits_and_replays(
    tmp_path: Path, two_on_redis: tuple[SharedState, SharedState]
) -> None:
    a, b = (_idempotency(tmp_path, s) for s in two_on_redis)
    running, finish = threading.Event(), threading.Event()
    first: list[tuple[Any, int, bool]] = []

    def slow() -> tuple[Any, int]:
        running.set()
        finish.wait(20)
        return {"ran": "first"}, 200

    worker = threading.Thread(
        target=lambda: first.append(a.once("acme", "idem-1", "scope", {"x": 1}, slow))
    )
    worker.start()
    assert running.wait(20)
    second: list[tuple[Any, int, bool]] = []
    waiter = threading.Thread(
        target=lambda: second.append(b.once("acme", "idem-1", "scope", {"x": 1}, _never_runs))
    )
    waiter.start()
    assert not wait_for(lambda: bool(second), timeout=0.3)  # it waits while the first runs
    finish.set()
    worker.join(20)
    waiter.join(20)
    assert first == [({"ran": "first"}, 200, False)]
    assert second == [({"ran": "first"}, 200, True)]


def _never_runs() -> tuple[Any, int]:
    raise AssertionError("a duplicate ran its call")


_HOLD_A_CLAIM = """
import sys, threading
from actioncage.runs.idempotency import Idempotency
from actioncage.shared.redis_state import on_redis
from actioncage.store import Store
store = Store(sys.argv[2])
store.create_all()
claims = on_redis(sys.argv[1], lease_s=1.0).claims

def forever():
    print("running", flush=True)
    threading.Event().wait()

Idempotency(store, claims, 3600, 60).once("acme", "idem-2", "scope", {"x": 1}, forever)
"""


def test_a_claim_whose_process_died_is_released_after_its_lease(
    tmp_path: Path, redis_url: str
) -> None:
    state = on_redis(redis_url)
    try:
        idempotency = _idempotency(tmp_path, state)
        with _process(_HOLD_A_CLAIM, redis_url, f"sqlite:///{tmp_path / 'shared.db'}") as proc:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "running"
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        out = idempotency.once("acme", "idem-2", "scope", {"x": 1}, lambda: ({"ran": 2}, 200))
        assert out == ({"ran": 2}, 200, False)
        replay = idempotency.once("acme", "idem-2", "scope", {"x": 1}, _never_runs)
        assert replay == ({"ran": 2}, 200, True)
    finally:
        state.close()


# --- the Rasa domain cache -----------------------------------------------------------------


def test_a_domain_cached_by_one_instance_is_found_by_the_other(
    two_on_redis: tuple[SharedState, SharedState],
) -> None:
    a, b = two_on_redis
    domain = {"slots": {"city": {"type": "text"}}}
    assert b.domains.get("acme", "d1") is None
    a.domains.put("acme", "d1", domain)
    assert b.domains.get("acme", "d1") == domain
    assert b.domains.get("other-org", "d1") is None


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_the_domain_cache_keeps_at_most_its_size(kind: str, request: pytest.FixtureRequest) -> None:
    shared = None
    if kind == "memory":
        cache: Any = MemoryDomains(size=3)
    else:
        shared = RedisShared(request.getfixturevalue("redis_url"))
        cache = RedisDomains(shared, size=3)
    try:
        for i in range(5):
            cache.put("acme", f"d{i}", {"n": i})
        assert [cache.get("acme", f"d{i}") for i in range(5)] == [
            None,
            None,
            {"n": 2},
            {"n": 3},
            {"n": 4},
        ]
    finally:
        if shared is not None:
            shared.close()


# --- configuration -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["http://localhost:6379", "redis://", "redis://host:port", "redis://h/db", "unix://"],
)
def test_a_malformed_redis_url_stops_start_up_naming_the_variable(url: str) -> None:
    with pytest.raises(ConfigError, match="ACTIONCAGE_REDIS_URL") as exc:
        Settings.from_env({"ACTIONCAGE_REDIS_URL": url})
    assert url not in str(exc.value) or url in ("redis://", "unix://")


def test_an_unreachable_redis_stops_start_up_naming_the_variable(tmp_path: Path) -> None:
    settings = Settings(redis_url=f"redis://:secret@127.0.0.1:{free_port()}/0")
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with pytest.raises(ConfigError, match="ACTIONCAGE_REDIS_URL: no Redis answers") as exc:
        build_shared(settings, store)
    assert "secret" not in str(exc.value)
