"""Every timestamp read back is timezone-aware UTC, the same instant that was written."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from actioncage.models import Policy, RunResult, RunStatus
from actioncage.store import Store, repo

PARIS_SUMMER = timezone(timedelta(hours=2))


def _is_utc(value: datetime | None) -> bool:
    return value is not None and value.tzinfo is not None and value.utcoffset() == timedelta(0)


def _run(run_id: str, started_at: datetime) -> RunResult:
    return RunResult(
        run_id=run_id,
        org_id="acme",
        action_id="act_1",
        action_version=1,
        status=RunStatus.OK,
        output=None,
        error=None,
        effects=(),
        effects_applied=False,
        logs="",
        duration_ms=5,
        started_at=started_at,
        finished_at=started_at + timedelta(milliseconds=5),
        conversation_id=None,
        caller_key_id=None,
        image_digest=None,
    )


def test_everything_read_back_is_aware_utc(store: Store) -> None:
    with store.session() as s:
        repo.create_action(
            s,
            "acme",
            "key_1",
            {
                "name": "greet",
                "type": "python",
                "code": "def execute_action(context):\n    return 1\n",
                "parameters": None,
                "description": None,
                "policy": Policy(),
            },
        )
        repo.create_conversation(s, "acme", "c1", [], {}, [])
        repo.end_conversation(s, "acme", "c1")
        repo.add_run(s, _run("run_1", repo.now()))
    with store.session() as s:
        action = repo.get_action(s, "acme", "greet")
        conversation = repo.get_conversation(s, "acme", "c1")
        run = repo.get_run(s, "acme", "run_1")
    for value in (
        action.created_at,
        action.updated_at,
        conversation.created_at,
        conversation.updated_at,
        conversation.ended_at,
        run.started_at,
        run.finished_at,
    ):
        assert _is_utc(value), value


def test_a_time_written_in_another_zone_reads_back_as_the_same_instant(store: Store) -> None:
    started = datetime(2025, 7, 1, 14, 30, 15, 123456, tzinfo=PARIS_SUMMER)
    with store.session() as s:
        repo.add_run(s, _run("run_paris", started))
    with store.session() as s:
        run = repo.get_run(s, "acme", "run_paris")
    assert run.started_at == started
    assert run.started_at.tzinfo is UTC and run.started_at.hour == 12
    assert run.started_at.microsecond == 123456


def test_keyset_paging_by_time_crosses_zones_and_naive_cursors(store: Store) -> None:
    base = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
    with store.session() as s:
        for i in range(4):
            repo.add_run(s, _run(f"run_{i}", base + timedelta(minutes=i)))
    with store.session() as s:
        # The same instant as run_2, given in another zone, then as a naive UTC reading.
        in_paris = (base + timedelta(minutes=2)).astimezone(PARIS_SUMMER)
        older = repo.list_runs(s, "acme", before=(in_paris, "run_2"))
        naive = repo.list_runs(
            s, "acme", before=(in_paris.astimezone(UTC).replace(tzinfo=None), "run_2")
        )
    assert [r.run_id for r in older] == ["run_1", "run_0"]
    assert [r.run_id for r in naive] == ["run_1", "run_0"]
