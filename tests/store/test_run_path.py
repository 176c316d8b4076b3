"""The run path's store calls: an action read together with its org's policy, a run's
record written on a plain connection, and a record written after the store was disposed."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import psycopg
import pytest

from actioncage.errors import ActionNotFoundError, RunAlreadyEndedError, RunNotFoundError
from actioncage.models import Action, Isolation, OrgPolicy, Policy, RunStatus
from actioncage.store import Store, repo
from tests import servers
from tests.runs.conftest import ok_run

CODE = "def execute_action(context):\n    return 1\n"


def _create(store: Store, org_id: str, name: str) -> Action:
    fields = {
        "name": name,
        "type": "python",
        "code": CODE,
        "parameters": None,
        "description": None,
        "policy": Policy(),
    }
    with store.session() as s:
        return repo.create_action(s, org_id, "key_1", fields)


def test_an_action_read_with_its_orgs_policy_matches_the_two_separate_reads(store: Store) -> None:
    greet = _create(store, "acme", "greet")
    # An action named like another's id: the id wins, as in get_action.
    _create(store, "acme", greet.id)
    _create(store, "globex", "greet")
    policy = OrgPolicy(
        max_timeout_ms=2000,
        max_cpus=0.5,
        restricted=True,
        runs_per_minute=7,
        egress=("api.example.com",),
        min_isolation=Isolation.GVISOR,
    )
    with store.session() as s:
        repo.set_org_policy(s, "globex", OrgPolicy(runs_per_minute=1))  # another org's
    with store.reading() as conn:
        for ref in ("greet", greet.id):
            action, org = repo.get_action_and_org_policy(conn, "acme", ref)
            assert action == repo.get_action(conn, "acme", ref)
            assert org is None  # acme has no policy; globex's is not acme's
        assert repo.get_action_and_org_policy(conn, "acme", greet.id)[0].id == greet.id
    with store.session() as s:
        repo.set_org_policy(s, "acme", policy)
    with store.reading() as conn:
        action, org = repo.get_action_and_org_policy(conn, "acme", "greet")
        assert action == repo.get_action(conn, "acme", "greet")
        assert org == policy == repo.find_org_policy(conn, "acme")
        with pytest.raises(ActionNotFoundError):
            repo.get_action_and_org_policy(conn, "acme", "missing")
        with pytest.raises(ActionNotFoundError):  # another org's action is not found
            repo.get_action_and_org_policy(conn, "initech", "greet")


def test_a_record_written_on_a_plain_connection_lands_or_rolls_back(store: Store) -> None:
    action = _create(store, "acme", "greet")
    with store.writing() as conn:
        repo.add_run(conn, ok_run(action, "run_1", {"n": 1}))
    with pytest.raises(RuntimeError), store.writing() as conn:
        repo.add_run(conn, ok_run(action, "run_2", {"n": 1}))
        raise RuntimeError("fails after the insert")
    with store.session() as s:
        assert repo.get_run(s, "acme", "run_1").output == {"n": 1}
        with pytest.raises(RunNotFoundError):
            repo.get_run(s, "acme", "run_2")


def test_a_placeholder_is_completed_once_on_a_plain_connection(store: Store) -> None:
    action = _create(store, "acme", "greet")
    with store.session() as s:
        repo.add_running_run(s, "run_1", action, "key_1", None)
    with store.writing() as conn:
        repo.add_run(conn, ok_run(action, "run_1", {"n": 1}), replaces_placeholder=True)
    with pytest.raises(RunAlreadyEndedError), store.writing() as conn:
        repo.add_run(
            conn,
            replace(ok_run(action, "run_1", None), status=RunStatus.ERROR),
            replaces_placeholder=True,
        )
    with store.session() as s:
        assert repo.get_run(s, "acme", "run_1").status is RunStatus.OK


def test_a_store_used_after_dispose_leaves_no_connection_open(tmp_path: Path) -> None:
    """A background run let go at shutdown may still write its record after the store is
    disposed: it must not leave an open connection behind for the garbage collector (which
    warns, and under pytest fails whichever test happens to be running then)."""
    store = Store(servers.postgres_url(tmp_path, "after_dispose"))
    store.upgrade()
    action = _create(store, "acme", "greet")
    with store.writing() as conn:  # a connection held across the dispose
        store.dispose()
        repo.add_run(conn, ok_run(action, "run_0", {"n": 1}))
    with store.writing() as conn:  # one asked for after it: the straggler's record lands
        repo.add_run(conn, ok_run(action, "run_1", {"n": 1}))
    with store.session() as s:
        assert repo.get_run(s, "acme", "run_0").status is RunStatus.OK
        assert repo.get_run(s, "acme", "run_1").status is RunStatus.OK
    database = store.engine.url.database
    with psycopg.connect(servers.postgres().dsn("postgres"), autocommit=True) as admin:
        open_ = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (database,)
        ).fetchone()
    assert open_ == (0,)
    store.dispose()
