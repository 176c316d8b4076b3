"""Instances: each process heartbeats in the shared store; a silent one is dead."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from actioncage.errors import ConfigError
from actioncage.instances import Instance
from actioncage.settings import Settings
from actioncage.store import Store
from actioncage.store import instances as rows
from actioncage.store.schema import InstanceRow
from tests.conftest import make_settings, wait_for


def _store(tmp_path: Path) -> Store:
    store = Store(f"sqlite:///{tmp_path / 'instances.db'}")
    store.create_all()
    return store


def test_an_instance_heartbeats_and_a_silent_one_is_dead(tmp_path: Path) -> None:
    store = _store(tmp_path)
    settings = make_settings(tmp_path, heartbeat_interval_s=0.05, owner_stale_s=1.0)
    long_ago = datetime.now(UTC) - timedelta(minutes=5)
    with store.session() as s:
        rows.register(s, "ins_killed", "serve", "elsewhere", 1, long_ago)
    instance, other = Instance(settings, store, "serve"), Instance(settings, store, "worker")
    instance.start()
    other.start()
    try:
        assert instance.id.startswith("ins_") and instance.id != other.id
        assert wait_for(lambda: instance.heartbeats >= 3, timeout=30)
        with store.session() as s:
            row = s.get(InstanceRow, instance.id)
            assert row is not None and row.heartbeat_at > row.started_at and row.role == "serve"
        assert instance.dead_owners() == {"ins_killed"}
        assert instance.live_owners() == {instance.id, other.id}
    finally:
        other.close()
        instance.close()
    with store.session() as s:
        # A clean shutdown forgets the instance; a killed one's row stays, stale.
        assert list(s.scalars(select(InstanceRow.id))) == ["ins_killed"]
    store.dispose()


def test_periodic_jobs_run_once_per_stale_window(tmp_path: Path) -> None:
    store = _store(tmp_path)
    settings = make_settings(tmp_path, heartbeat_interval_s=0.05, owner_stale_s=0.2)
    instance = Instance(settings, store, "serve")
    runs: list[int] = []
    instance.every_stale_window(lambda: runs.append(instance.heartbeats))
    instance.every_stale_window(lambda: 1 / 0)  # a failing job stops neither beats nor jobs
    instance.start()
    try:
        assert wait_for(lambda: len(runs) >= 2, timeout=30)
        assert runs[0] >= 3  # not before a stale window of heartbeats had passed
    finally:
        instance.close()
    store.dispose()


def test_a_stale_window_shorter_than_two_heartbeats_is_refused() -> None:
    with pytest.raises(ConfigError, match="ACTIONCAGE_OWNER_STALE_S"):
        Settings.from_env({"ACTIONCAGE_HEARTBEAT_INTERVAL_S": "5", "ACTIONCAGE_OWNER_STALE_S": "6"})
