"""The definitions cache: a run's action and its org's policy come from memory while nothing
changed them. A write through this process's store is seen at once; a write by another
process (another Store on the same database) within the epoch check; a row changed by hand
within the TTL. Only writes that land move the epoch."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text

from actioncage.errors import ActionNotFoundError, ConflictError
from actioncage.models import Action, OrgPolicy, Policy
from actioncage.runs.definitions import Definitions
from actioncage.shared.epochs import EPOCH_CHECK_S, EpochCache
from actioncage.store import Store, repo
from tests.conftest import wait_for


def _fields(name: str, output: int) -> dict[str, Any]:
    return {
        "name": name,
        "type": "python",
        "code": f"def execute_action(context):\n    return {output}\n",
        "parameters": None,
        "description": None,
        "policy": Policy(),
    }


def _code_of(definitions: Definitions, ref: str = "greet") -> str:
    return definitions.action("acme", ref).code


def _epoch(store: Store) -> str:
    with store.reading() as conn:
        return repo.definitions_epoch(conn)


@pytest.fixture
def definitions(store: Store) -> Iterator[Definitions]:
    definitions = Definitions(store, ttl_s=60.0)
    definitions.start()
    yield definitions
    definitions.close()


@pytest.fixture
def other_process(db_url: str, store: Store) -> Iterator[Store]:
    """Another process's store on the same (upgraded) database."""
    other = Store(db_url)
    yield other
    other.dispose()


def _created_and_cached(writer: Store, definitions: Definitions) -> Action:
    """Create "greet" through ``writer``; read it and the org's policy through the cache."""
    with writer.session() as s:
        created = repo.create_action(s, "acme", "key_1", _fields("greet", 1))
    assert _code_of(definitions).endswith("return 1\n")
    assert definitions.org_policy("acme") is None
    return created


def _hand_edit(store: Store, code: str) -> None:
    """Change the action's code in the database without a repository (no epoch moves)."""
    with store.session() as s:
        s.execute(text("UPDATE action_versions SET code = :code"), {"code": code})


def test_a_run_reads_the_action_and_policy_once_until_something_changes(
    store: Store, definitions: Definitions
) -> None:
    with store.session() as s:
        created = repo.create_action(s, "acme", "key_1", _fields("greet", 1))
    action, org = definitions.action_and_policy("acme", "greet")
    assert (action, org) == (created, None)
    assert definitions.action("acme", created.id) == created
    _hand_edit(store, "changed by hand")
    # Served from memory: the hand edit moved no epoch.
    assert definitions.action_and_policy("acme", "greet") == (created, None)
    assert definitions.org_policy("acme") is None


def test_a_write_through_this_process_is_seen_at_once(
    store: Store, definitions: Definitions
) -> None:
    created = _created_and_cached(store, definitions)
    with store.session() as s:
        repo.update_action(s, "acme", created.id, "key_1", _fields("greet", 2))
    assert _code_of(definitions).endswith("return 2\n")
    assert definitions.action("acme", created.id).version == 2
    policy = OrgPolicy(runs_per_minute=3)
    with store.session() as s:
        repo.set_org_policy(s, "acme", policy)
    assert definitions.org_policy("acme") == policy
    assert definitions.action_and_policy("acme", "greet")[1] == policy
    with store.session() as s:
        repo.delete_action(s, "acme", created.id)
    with pytest.raises(ActionNotFoundError):
        definitions.action("acme", "greet")


def test_a_write_by_another_process_is_seen_within_the_epoch_check(
    store: Store, other_process: Store, definitions: Definitions
) -> None:
    # Not cached before: a new action runs at once everywhere.
    created = _created_and_cached(other_process, definitions)
    with other_process.session() as s:
        repo.update_action(s, "acme", created.id, "key_1", _fields("greet", 2))
        repo.set_org_policy(s, "acme", OrgPolicy(max_timeout_ms=1000))
    assert wait_for(lambda: _code_of(definitions).endswith("return 2\n"), timeout=4 * EPOCH_CHECK_S)
    assert definitions.org_policy("acme") == OrgPolicy(max_timeout_ms=1000)
    with other_process.session() as s:
        repo.delete_action(s, "acme", created.id)

    def gone() -> bool:
        try:
            definitions.action("acme", "greet")
        except ActionNotFoundError:
            return True
        return False

    assert wait_for(gone, timeout=4 * EPOCH_CHECK_S)


def test_only_writes_that_land_move_the_epoch(store: Store) -> None:
    assert _epoch(store) == "0"  # no write yet: no row, read as 0
    with store.session() as s:
        created = repo.create_action(s, "acme", "key_1", _fields("greet", 1))
    assert _epoch(store) == "1"
    with pytest.raises(ConflictError), store.session() as s:
        repo.create_action(s, "acme", "key_1", _fields("greet", 1))  # the name is taken
    with pytest.raises(RuntimeError), store.session() as s:
        repo.update_action(s, "acme", created.id, "key_1", _fields("greet", 2))
        raise RuntimeError("the unit of work fails after the write")
    assert _epoch(store) == "1"
    with store.reading() as conn:
        assert repo.get_action(conn, "acme", "greet").version == 1
    with store.session() as s:
        repo.set_org_policy(s, "acme", OrgPolicy(restricted=True))
        repo.update_action(s, "acme", created.id, "key_1", _fields("greet", 2))
    assert _epoch(store) == "3"


def test_a_rolled_back_write_leaves_the_cache_alone(store: Store) -> None:
    with store.session() as s:
        created = repo.create_action(s, "acme", "key_1", _fields("greet", 1))
    # Started after the create, so every epoch it reads is the create's: a cache started
    # before it would start afresh at its watcher's next read of the moved epoch, which a
    # slow machine lets fall anywhere in this test.
    definitions = Definitions(store, ttl_s=60.0)
    definitions.start()
    try:
        assert definitions.action("acme", "greet") == created
        _hand_edit(store, "by hand")
        with pytest.raises(RuntimeError), store.session() as s:
            repo.update_action(s, "acme", created.id, "key_1", _fields("greet", 2))
            raise RuntimeError("the unit of work fails after the write")
        # Still from memory (a cache started afresh would read the hand edit).
        assert definitions.action("acme", "greet") == created
    finally:
        definitions.close()


def test_a_hand_edit_is_seen_within_the_ttl(store: Store) -> None:
    definitions = Definitions(store, ttl_s=0.3)
    _created_and_cached(store, definitions)
    _hand_edit(store, "by hand")
    assert wait_for(lambda: _code_of(definitions) == "by hand", timeout=5)


def test_with_the_cache_off_every_run_reads_the_database(store: Store) -> None:
    definitions = Definitions(store, ttl_s=0)
    _created_and_cached(store, definitions)
    _hand_edit(store, "by hand")
    assert _code_of(definitions) == "by hand"


def test_an_unreadable_epoch_trusts_nothing_cached(store: Store, definitions: Definitions) -> None:
    _created_and_cached(store, definitions)
    _hand_edit(store, "by hand")
    with store.session() as s:
        s.execute(text("DROP TABLE epochs"))
    # Every epoch read fails from now on: nothing read before it is served.
    assert wait_for(lambda: _code_of(definitions) == "by hand", timeout=4 * EPOCH_CHECK_S)


def test_a_lookup_begun_before_the_cache_started_afresh_is_not_remembered() -> None:
    cache: EpochCache[str, int] = EpochCache("test", 60.0, lambda: "1")
    generation = cache.generation
    cache.start_afresh()  # a write committed while the lookup was reading
    cache.remember("k", 1, generation)
    assert cache.find("k") is None
    cache.remember("k", 2, cache.generation)
    assert cache.find("k") == 2


def test_the_cache_is_bounded_by_what_its_values_weigh() -> None:
    cache: EpochCache[str, str] = EpochCache("test", 60.0, lambda: "1", weigh=len, max_weight=10)
    assert cache.find("a") is None  # the first lookup reads the epoch
    cache.remember("a", "aaaaaa", cache.generation)
    cache.remember("a", "aaaaa", cache.generation)  # replacing an entry frees its weight
    cache.remember("b", "bbbb", cache.generation)
    assert (cache.find("a"), cache.find("b")) == ("aaaaa", "bbbb")
    cache.remember("c", "ccc", cache.generation)  # 12 > 10: the cache starts afresh
    assert (cache.find("a"), cache.find("b"), cache.find("c")) == (None, None, "ccc")
    cache.remember("d", "d" * 11, cache.generation)  # heavier than the bound alone
    assert cache.find("d") is None and cache.find("c") == "ccc"


def test_an_org_with_many_large_actions_does_not_grow_the_cache_past_its_bound(
    store: Store, definitions: Definitions
) -> None:
    big = "def execute_action(context):\n    return 1\n" + "#" * 200_000 + "\n"
    with store.session() as s:
        for i in range(3):
            repo.create_action(s, "acme", "key_1", {**_fields(f"big{i}", 1), "code": big})
    small = Definitions(store, ttl_s=60.0, max_bytes=450_000)
    for cache in (definitions, small):
        assert [cache.action("acme", f"big{i}").code for i in range(3)] == [big] * 3
    _hand_edit(store, "by hand")
    # The default bound holds all three: each is served from memory.
    assert [definitions.action("acme", f"big{i}").code for i in range(3)] == [big] * 3
    # Two fitted in 450 kB; the third started it afresh: only that one is still in memory.
    assert [small.action("acme", f"big{i}").code for i in range(3)] == ["by hand"] * 2 + [big]
