"""Migrations: they build exactly the models' schema, adopt create_all databases, run once."""

from __future__ import annotations

import subprocess
import threading
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, make_url, text

from actioncage.errors import ConfigError
from actioncage.store import Store, migrate, repo
from actioncage.store.schema import Base
from tests.conftest import wait_for
from tests.served import ACTIONCAGE, serve_env


def _schema_diff(store: Store) -> list[Any]:
    with store.engine.connect() as conn:
        diff: list[Any] = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    return diff


def _revisions(store: Store) -> list[str]:
    with store.engine.connect() as conn:
        return [row[0] for row in conn.execute(text("SELECT version_num FROM alembic_version"))]


def test_migrations_build_exactly_the_models_schema(db_url: str) -> None:
    store = Store(db_url)
    try:
        assert store.upgrade() == migrate.head() == "tiers_1"
        assert _schema_diff(store) == []
        assert set(inspect(store.engine).get_table_names()) == {
            *Base.metadata.tables,
            "alembic_version",
        }
    finally:
        store.dispose()


def test_upgrading_a_current_database_changes_nothing(store: Store) -> None:
    with store.session() as s:
        key, secret = repo.create_key(s, "acme")
    assert store.upgrade() == migrate.head()
    assert _revisions(store) == [migrate.head()]
    with store.session() as s:
        assert repo.find_key(s, secret) == key


def _legacy_database(url: str) -> None:
    """What create_all of an earlier release left: no alembic_version, fewer tables and
    columns, and data."""
    engine = create_engine(url)
    with engine.begin() as conn:
        Base.metadata.create_all(conn)
        for table in ("jobs", "callbacks", "instances", "server_secrets"):
            conn.execute(text(f"DROP TABLE {table}"))
        conn.execute(text("ALTER TABLE api_keys DROP COLUMN revoked_at"))
        conn.execute(text("ALTER TABLE runs DROP COLUMN front_door"))
        conn.execute(
            text("INSERT INTO orgs (id, created_at) VALUES ('acme', :ts)"), {"ts": repo.now()}
        )
        conn.execute(
            text(
                "INSERT INTO api_keys (id, org_id, key_hash, created_at)"
                " VALUES ('key_1', 'acme', :hash, :ts)"
            ),
            {"hash": repo.hash_key("old-secret"), "ts": repo.now()},
        )
    engine.dispose()


def test_a_database_made_by_create_all_is_adopted_with_its_data(db_url: str) -> None:
    _legacy_database(db_url)
    store = Store(db_url)
    try:
        assert store.upgrade() == migrate.head()
        assert _revisions(store) == [migrate.head()]
        assert _schema_diff(store) == []
        with store.session() as s:
            key = repo.find_key(s, "old-secret")
        assert key is not None and key.id == "key_1" and key.org_id == "acme"
    finally:
        store.dispose()


def test_a_legacy_table_missing_a_required_column_is_refused_by_name(db_url: str) -> None:
    engine = create_engine(db_url)
    with engine.begin() as conn:
        Base.metadata.create_all(conn)
        conn.execute(text("ALTER TABLE runs DROP COLUMN logs"))
    engine.dispose()
    store = Store(db_url)
    try:
        with pytest.raises(ConfigError, match="table runs.*column logs"):
            store.upgrade()
        # Nothing was half done: the database is still unversioned.
        assert "alembic_version" not in inspect(store.engine).get_table_names()
    finally:
        store.dispose()


def test_processes_upgrading_at_once_all_succeed_and_migrate_once(
    db_url: str, tmp_path: Any
) -> None:
    env = {**serve_env(tmp_path), "ACTIONCAGE_DATABASE_URL": db_url}
    procs = [
        subprocess.Popen(
            [*ACTIONCAGE, "db", "upgrade"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outcomes = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    assert all(code == 0 for code, _, _ in outcomes), outcomes
    assert all(out.strip().endswith(f"at revision {migrate.head()}") for _, out, _ in outcomes), (
        outcomes
    )
    # Exactly one of them did the work.
    assert (
        sum(f"upgraded from nothing to {migrate.head()}" in err for _, _, err in outcomes) == 1
    ), outcomes
    store = Store(db_url)
    try:
        assert _revisions(store) == [migrate.head()] and _schema_diff(store) == []
    finally:
        store.dispose()


def test_db_upgrade_names_the_database_without_its_password(db_url: str, tmp_path: Any) -> None:
    url = make_url(db_url)
    if url.get_backend_name() == "postgresql":
        url = url.set(password="s3cret-pw")  # trust auth: any password gets in
    shown = url.render_as_string(hide_password=False)
    proc = subprocess.run(
        [*ACTIONCAGE, "db", "upgrade"],
        env={**serve_env(tmp_path), "ACTIONCAGE_DATABASE_URL": shown},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert (
        proc.stdout.strip()
        == f"{url.render_as_string(hide_password=True)}: at revision {migrate.head()}"
    )
    assert "s3cret-pw" not in proc.stdout + proc.stderr


def test_db_upgrade_of_an_unreachable_database_fails_naming_the_variable(tmp_path: Any) -> None:
    proc = subprocess.run(
        [*ACTIONCAGE, "db", "upgrade"],
        env={
            **serve_env(tmp_path),
            "ACTIONCAGE_DATABASE_URL": "postgresql+psycopg://nobody:pw@127.0.0.1:1/nothing",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "ACTIONCAGE_DATABASE_URL" in proc.stderr and "pw@" not in proc.stderr


def test_an_in_memory_database_is_one_database_for_every_thread() -> None:
    store = Store("sqlite:///:memory:")
    try:
        assert store.upgrade() == migrate.head()
        with store.session() as s:
            repo.create_key(s, "acme", "mem-secret")
        found: list[Any] = []
        thread = threading.Thread(
            target=lambda: found.append(_find(store, "mem-secret")), daemon=True
        )
        thread.start()
        thread.join(timeout=30)
        assert found and found[0] is not None and found[0].org_id == "acme"
    finally:
        store.dispose()


def _find(store: Store, secret: str) -> Any:
    with store.session() as s:
        return repo.find_key(s, secret)


def test_an_upgrade_waits_for_the_one_already_running(postgresql_url: str, tmp_path: Any) -> None:
    from actioncage.store import _MIGRATION_LOCK

    engine = create_engine(postgresql_url)
    waiting = text(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE wait_event_type = 'Lock' AND wait_event = 'advisory'"
    )

    def upgrade_is_waiting() -> bool:
        # A fresh connection each time: a transaction sees one snapshot of the statistics.
        with engine.connect() as watcher:
            return watcher.execute(waiting).scalar() == 1

    with engine.connect() as holder:
        holder.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
        proc = subprocess.Popen(
            [*ACTIONCAGE, "db", "upgrade"],
            env={**serve_env(tmp_path), "ACTIONCAGE_DATABASE_URL": postgresql_url},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert wait_for(upgrade_is_waiting, timeout=60)
            assert proc.poll() is None
        except BaseException:
            proc.kill()
            proc.communicate()
            raise
        finally:
            holder.rollback()  # ends the transaction, so releases the lock
    engine.dispose()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and out.strip().endswith(f"at revision {migrate.head()}"), err
