"""Durable background runs without an engine: the jobs table, its leases and the reaper,
with a real store; the run itself is a callable that records a result as the executor does."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from actioncage.errors import BusyError
from actioncage.models import Action, ErrorType, FrontDoor, RunResult, RunStatus
from actioncage.runs.background import BackgroundRuns
from actioncage.runs.callbacks import CallbackSender
from actioncage.runs.jobs import EXECUTOR_LOST, Jobs
from actioncage.runs.outbox import Outbox
from actioncage.settings import Settings
from actioncage.store import Store, repo
from actioncage.store import callbacks as outbox_repo
from actioncage.store import jobs as jobs_repo
from actioncage.web.wire import run_out
from tests.conftest import wait_for
from tests.runs.conftest import Receiver, ok_run

DEAD = "inst_dead"


def _body(run: RunResult) -> bytes:
    return json.dumps(run_out(run)).encode()


class _Made:
    """The Jobs components a test made, closed at its end."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings, self.store = settings, store
        self.made: list[tuple[Jobs, Outbox]] = []

    def __call__(self, owner: str, workers: int = 2, loops: bool = False) -> Jobs:
        outbox = Outbox(self.settings, self.store, CallbackSender(self.settings), owner)
        jobs = Jobs(self.settings, self.store, owner, BackgroundRuns(workers, 8), outbox, _body)
        if loops:
            jobs.start()
            outbox.start()
        self.made.append((jobs, outbox))
        return jobs

    def close(self) -> None:
        for jobs, outbox in self.made:
            jobs.close()
            outbox.close()


@pytest.fixture
def make_jobs(durable_settings: Settings, store: Store) -> Iterator[_Made]:
    made = _Made(durable_settings, store)
    yield made
    made.close()


def _dead_job(
    store: Store,
    action: Action,
    lease_until: datetime,
    callback_url: str | None = None,
    deadline: datetime | None = None,
) -> str:
    """A running job of a process that is gone: nobody renews its lease."""
    run_id = repo.new_id("run")
    now = repo.now()
    deadline = deadline or now + timedelta(minutes=5)
    with store.session() as s:
        repo.add_running_run(s, run_id, action, "key1", None)
        jobs_repo.add_queued_job(
            s,
            run_id,
            action.org_id,
            {"callback_url": callback_url},
            DEAD,
            now,
            lease_until,
            deadline,
        )
        assert jobs_repo.start_job(s, run_id, DEAD, now, deadline)
    return run_id


def _record_ok(store: Store, action: Action, run_id: str, output: object = "done") -> RunResult:
    """Complete the placeholder as the executor does for a run that returned ``output``."""
    run = ok_run(action, run_id, output)
    with store.session() as s:
        repo.add_run(s, run, replaces_placeholder=True)
    return run


def _run(store: Store, action: Action, run_id: str) -> RunResult:
    with store.session() as s:
        return repo.get_run(s, action.org_id, run_id)


def _job(store: Store, run_id: str) -> jobs_repo.Job:
    with store.session() as s:
        job = jobs_repo.find_job(s, run_id)
    assert job is not None
    return job


def _callbacks(store: Store, run_id: str) -> list[outbox_repo.Callback]:
    with store.session() as s:
        return outbox_repo.callbacks_for_run(s, run_id)


def _submit(
    jobs: Jobs,
    action: Action,
    run: Callable[[str], RunResult],
    callback_url: str | None = None,
    abandon: Callable[[], None] = lambda: None,
) -> tuple[str, object]:
    run_id = repo.new_id("run")
    future = jobs.submit(
        run_id, action, "key1", None, FrontDoor.NATIVE, callback_url, lambda: run(run_id), abandon
    )
    return run_id, future


def test_racing_reapers_end_each_lost_run_once_as_executor_lost(
    store: Store, action: Action, make_jobs: _Made
) -> None:
    expired = repo.now() - timedelta(seconds=1)
    run_ids = [_dead_job(store, action, expired, "http://127.0.0.1:9/hook") for _ in range(20)]
    reapers = [make_jobs("inst_a"), make_jobs("inst_b")]
    barrier = threading.Barrier(2)
    ended: list[int] = []

    def reap(jobs: Jobs) -> None:
        barrier.wait()
        ended.append(jobs.reap())

    threads = [threading.Thread(target=reap, args=(j,)) for j in reapers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(ended) == 20
    for run_id in run_ids:
        run = _run(store, action, run_id)
        assert run.status is RunStatus.ERROR and run.error is not None
        assert run.error.type is ErrorType.SANDBOX_ERROR
        assert run.error.message == EXECUTOR_LOST and "executor lost" in run.error.message
        assert _job(store, run_id).state == jobs_repo.DONE
        # One callback owed per run, carrying the completed record.
        (callback,) = _callbacks(store, run_id)
        body = json.loads(callback.body)
        assert callback.state == outbox_repo.PENDING and body["runId"] == run_id
        assert body["status"] == "error" and body["error"]["type"] == "sandbox_error"
    assert reapers[0].reap() == reapers[1].reap() == 0


def test_a_live_lease_is_left_alone(store: Store, action: Action, make_jobs: _Made) -> None:
    run_id = _dead_job(store, action, repo.now() + timedelta(seconds=30))
    assert make_jobs("inst_a").reap() == 0
    assert _run(store, action, run_id).status is RunStatus.RUNNING
    assert _job(store, run_id).state == jobs_repo.RUNNING


def test_a_run_recorded_before_its_process_died_keeps_its_outcome(
    store: Store, action: Action, make_jobs: _Made
) -> None:
    run_id = _dead_job(store, action, repo.now() - timedelta(seconds=1), "http://x.test/h")
    _record_ok(store, action, run_id, output={"n": 1})  # then the process died
    assert make_jobs("inst_a").reap() == 1
    run = _run(store, action, run_id)
    assert run.status is RunStatus.OK and run.output == {"n": 1}
    (callback,) = _callbacks(store, run_id)
    assert json.loads(callback.body)["output"] == {"n": 1}


def test_a_background_run_is_recorded_then_its_job_done_and_callback_delivered(
    store: Store, action: Action, make_jobs: _Made, receiver: Receiver
) -> None:
    jobs = make_jobs("inst_a", loops=True)
    run_id, future = _submit(jobs, action, lambda rid: _record_ok(store, action, rid), receiver.url)
    assert isinstance(future, object)
    assert _job(store, run_id).owner == "inst_a"
    assert wait_for(lambda: _job(store, run_id).state == jobs_repo.DONE, timeout=10)
    assert _run(store, action, run_id).status is RunStatus.OK
    assert wait_for(lambda: len(receiver.received) == 1, timeout=10)
    assert json.loads(receiver.received[0][1])["runId"] == run_id
    assert wait_for(lambda: _callbacks(store, run_id)[0].state == outbox_repo.DELIVERED)


def test_leases_are_renewed_until_the_deadline(
    store: Store, action: Action, make_jobs: _Made, durable_settings: Settings
) -> None:
    jobs = make_jobs("inst_a")  # its loops never run: renewal is called by hand
    assert jobs.renew() == 0  # an idle process writes nothing
    hold = threading.Event()

    def blocking(run_id: str) -> RunResult:
        hold.wait(10)
        return _record_ok(store, action, run_id)

    fresh, future = _submit(jobs, action, blocking)
    try:
        assert wait_for(lambda: _job(store, fresh).state == jobs_repo.RUNNING, timeout=10)
        before = _job(store, fresh).lease_until
        assert jobs.renew() == 1
        after = _job(store, fresh).lease_until
        assert before is not None and after is not None and after > before
    finally:
        hold.set()
    assert future.result(timeout=10).status is RunStatus.OK  # type: ignore[attr-defined]

    # A hung run past its deadline is not renewed: its lease lapses and the reaper ends it.
    now = repo.now()
    overdue = _dead_job(
        store, action, now + timedelta(seconds=1), deadline=now - timedelta(seconds=1)
    )
    with store.session() as s:
        later = now + timedelta(seconds=durable_settings.job_lease_s)
        assert jobs_repo.renew_leases(s, DEAD, now, later) == 0
    assert wait_for(lambda: jobs.reap() == 1, timeout=10)
    assert _run(store, action, overdue).status is RunStatus.ERROR


def test_a_run_that_raises_is_recorded_not_left_running(
    store: Store, action: Action, make_jobs: _Made
) -> None:
    def broken(_run_id: str) -> RunResult:
        raise RuntimeError("engine exploded")

    run_id, future = _submit(make_jobs("inst_a"), action, broken)
    with pytest.raises(RuntimeError):
        future.result(timeout=10)  # type: ignore[attr-defined]
    run = _run(store, action, run_id)
    assert run.status is RunStatus.ERROR and run.error is not None
    assert "engine exploded" in run.error.message
    assert _job(store, run_id).state == jobs_repo.DONE


def test_a_queued_run_ended_by_a_reaper_never_starts(
    store: Store, action: Action, make_jobs: _Made
) -> None:
    jobs = make_jobs("inst_a", workers=1)
    hold = threading.Event()
    started: list[str] = []
    abandoned: list[bool] = []

    def blocking(run_id: str) -> RunResult:
        hold.wait(10)
        return _record_ok(store, action, run_id)

    def second(run_id: str) -> RunResult:
        started.append(run_id)
        return _record_ok(store, action, run_id)

    _first_id, first = _submit(jobs, action, blocking)
    second_id, later = _submit(jobs, action, second, abandon=lambda: abandoned.append(True))
    assert _job(store, second_id).state == jobs_repo.QUEUED
    with store.session() as s:  # as a reaper would once its lease lapsed
        assert jobs_repo.end_job(s, second_id, repo.now(), EXECUTOR_LOST) is not None
    hold.set()
    run = later.result(timeout=10)  # type: ignore[attr-defined]
    assert first.result(timeout=10).status is RunStatus.OK  # type: ignore[attr-defined]
    assert run.status is RunStatus.ERROR and started == [] and abandoned == [True]


def test_close_refuses_new_runs_and_hands_unfinished_ones_to_the_reaper(
    store: Store, action: Action, durable_settings: Settings
) -> None:
    # The run's deadline is its 1 s timeout: close waits that long, then lets go.
    settings = replace(durable_settings, run_queue_wait_ms=0, job_deadline_margin_s=0)
    made = _Made(settings, store)
    jobs, reaper = made("inst_a"), made("inst_b")
    hold = threading.Event()

    def stuck(run_id: str) -> RunResult:
        hold.wait(30)
        raise RuntimeError("released by the test")

    try:
        run_id, _future = _submit(jobs, action, stuck)
        assert wait_for(lambda: _job(store, run_id).state == jobs_repo.RUNNING, timeout=10)
        jobs.close()
        with pytest.raises(BusyError):
            _submit(jobs, action, stuck)
        assert reaper.reap() == 1
        run = _run(store, action, run_id)
        assert run.status is RunStatus.ERROR and run.error is not None
        assert run.error.message == EXECUTOR_LOST
    finally:
        hold.set()
        made.close()
