"""Runs handed to executor workers, without a broker or an engine: what the dispatching
process writes (nothing at dispatch; a durable record only for a run still out after
dispatch_record_after_ms), the signed handover ticket the task carries, and another
process recording the run from that ticket once the dispatcher is dead, with a real store.
The broker, workers and a SIGKILLed API process are in tests/dispatch/test_handover.py."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from actioncage.models import Action, FrontDoor, RunResult, RunStatus
from actioncage.runs.background import BackgroundRuns
from actioncage.runs.callbacks import CallbackSender
from actioncage.runs.jobs import Jobs
from actioncage.runs.outbox import Outbox
from actioncage.runs.sandboxes import handover_ticket
from actioncage.runs.tickets import Ticket, TicketInvalidError, Tickets
from actioncage.settings import Settings
from actioncage.store import Store, repo
from actioncage.store import instances as instance_rows
from actioncage.store import jobs as jobs_repo
from actioncage.store.repo import RunAlreadyEndedError
from tests.conftest import make_settings, wait_for
from tests.runs.conftest import ok_run

SECRET = "a" * 64
ARGS = {"id": "r-1", "amount": 12}


def _settings(tmp_path: Path, record_after_ms: int) -> Settings:
    return make_settings(
        tmp_path,
        job_lease_s=2.0,
        job_renew_s=0.2,
        job_reap_s=0.5,
        owner_stale_s=4.0,
        heartbeat_interval_s=1.0,
        dispatch_record_after_ms=record_after_ms,
    )


class _Process:
    """One control plane's Jobs, registered as a live instance (closed at the test's end)."""

    def __init__(self, settings: Settings, store: Store, owner: str, secret: str = SECRET):
        self.store, self.owner = store, owner
        outbox = Outbox(settings, store, CallbackSender(settings), owner)
        self.jobs = Jobs(
            settings,
            store,
            owner,
            BackgroundRuns(2, 8),
            outbox,
            lambda run: b"{}",
            tickets=Tickets(secret),
        )
        with store.session() as s:
            instance_rows.register(s, owner, "serve", "host", 1, repo.now())

    def dies(self) -> None:
        """Its heartbeat stops: a minute old, as a SIGKILLed process's would be."""
        with self.store.session() as s:
            instance_rows.heartbeat(s, self.owner, repo.now() - timedelta(minutes=1))


@pytest.fixture
def process(tmp_path: Path, store: Store) -> Iterator[Callable[..., _Process]]:
    """Makes control planes (``owner``, ``record_after_ms``, ``secret``), closed at the end."""
    made: list[_Process] = []

    def make(owner: str, record_after_ms: int = 60_000, secret: str = SECRET) -> _Process:
        made.append(_Process(_settings(tmp_path, record_after_ms), store, owner, secret))
        return made[-1]

    yield make
    for p in made:
        p.jobs.close()


def _record(store: Store, run: RunResult) -> None:
    """Record the run as the executor does for a run handed to a worker."""
    with store.session() as s:
        repo.add_run(s, run, replaces_placeholder=True)


def _stored(store: Store, action: Action, run_id: str) -> RunResult | None:
    with store.session() as s:
        try:
            return repo.get_run(s, action.org_id, run_id)
        except Exception:
            return None


def _job(store: Store, run_id: str) -> jobs_repo.Job | None:
    with store.session() as s:
        return jobs_repo.find_job(s, run_id)


def _dispatch(p: _Process, action: Action, run_id: str) -> tuple[str, threading.Event]:
    """Start a run "on a worker" in ``p`` on a thread: returns its ticket (read inside the
    block, as the dispatcher puts it in the task) and an event that ends the block without
    recording the run (the process died before the outcome came)."""
    token: list[str] = []
    entered, leave = threading.Event(), threading.Event()

    def hold() -> None:
        with p.jobs.handed_over(run_id, action, "key1", None, FrontDoor.MCP, ARGS):
            ticket = handover_ticket.get()
            assert ticket is not None
            token.append(ticket)
            entered.set()
            leave.wait(30)

    threading.Thread(target=hold, daemon=True).start()
    assert entered.wait(10)
    return token[0], leave


def test_a_run_back_before_the_delay_is_written_once_when_it_ends(
    store: Store, action: Action, process: Callable[..., _Process]
) -> None:
    # Nothing is written at dispatch: the run's record is its one INSERT, and no job row.
    p = process("inst_a")
    run_id = repo.new_id("run")
    with p.jobs.handed_over(run_id, action, "key1", None, FrontDoor.NATIVE, ARGS):
        assert _stored(store, action, run_id) is None
        _record(store, ok_run(action, run_id, "done"))
    assert _job(store, run_id) is None
    stored = _stored(store, action, run_id)
    assert stored is not None and stored.status is RunStatus.OK and stored.output == "done"


def test_a_run_still_out_after_the_delay_gets_a_running_record_and_job_completed_at_its_end(
    store: Store, action: Action, process: Callable[..., _Process]
) -> None:
    p = process("inst_a", record_after_ms=50)
    run_id = repo.new_id("run")
    with p.jobs.handed_over(run_id, action, "key1", None, FrontDoor.NATIVE, ARGS):

        def durable() -> bool:
            return _job(store, run_id) is not None and _stored(store, action, run_id) is not None

        assert wait_for(durable, timeout=10)
        job, run = _job(store, run_id), _stored(store, action, run_id)
        assert job is not None and job.state == jobs_repo.RUNNING and job.owner == "inst_a"
        assert run is not None and run.status is RunStatus.RUNNING and run.args == ARGS
        assert p.jobs.renew() == 1  # its lease is renewed while the run is away
        _record(store, ok_run(action, run_id, "done"))
    stored = _stored(store, action, run_id)
    assert stored is not None and stored.status is RunStatus.OK
    assert wait_for(lambda: getattr(_job(store, run_id), "state", None) == jobs_repo.DONE)
    assert p.jobs.renew() == 0  # done: nothing left to renew


@pytest.mark.parametrize("record_after_ms", [60_000, 0], ids=["no-record", "early-record"])
def test_a_run_that_never_started_leaves_nothing_whether_its_record_was_written_or_not(
    store: Store, action: Action, process: Callable[..., _Process], record_after_ms: int
) -> None:
    p = process("inst_a", record_after_ms=record_after_ms)
    run_id = repo.new_id("run")
    with (
        pytest.raises(RuntimeError),
        p.jobs.handed_over(run_id, action, "key1", None, FrontDoor.NATIVE, ARGS),
    ):
        if record_after_ms == 0:
            assert wait_for(lambda: _job(store, run_id) is not None, timeout=10)
        raise RuntimeError("no run slot")
    assert _stored(store, action, run_id) is None and _job(store, run_id) is None


def test_another_process_records_a_run_without_any_record_once_its_dispatcher_is_dead(
    store: Store, action: Action, process: Callable[..., _Process]
) -> None:
    a, b = process("inst_a"), process("inst_b")
    run_id = repo.new_id("run")
    token, leave = _dispatch(a, action, run_id)
    a.dies()
    completed: list[Ticket] = []

    def complete(ticket: Ticket) -> RunResult:
        completed.append(ticket)
        run = replace(ok_run(action, run_id, "late"), caller_key_id=ticket.key_id)
        _record(store, run)
        return run

    assert b.jobs.adopt(run_id, token, complete) is True
    (ticket,) = completed
    assert (ticket.org_id, ticket.action_id, ticket.args) == ("org1", action.id, ARGS)
    assert ticket.front_door == str(FrontDoor.MCP) and ticket.dispatcher == "inst_a"
    stored = _stored(store, action, run_id)
    assert stored is not None and stored.status is RunStatus.OK and stored.output == "late"
    assert _job(store, run_id) is None
    leave.set()


def test_a_dispatcher_alive_that_records_its_run_is_not_overridden(
    store: Store, action: Action, process: Callable[..., _Process]
) -> None:
    a, b = process("inst_a"), process("inst_b")
    run_id = repo.new_id("run")
    token, leave = _dispatch(a, action, run_id)
    completed: list[Ticket] = []

    def complete(ticket: Ticket) -> RunResult:
        completed.append(ticket)
        raise AssertionError("the live dispatcher's run was taken over")

    with ThreadPoolExecutor(1) as pool:
        adopted = pool.submit(b.jobs.adopt, run_id, token, complete)
        # The dispatcher is alive: the adopter waits; the dispatcher records the run.
        _record(store, ok_run(action, run_id, "mine"))
        leave.set()
        assert adopted.result(timeout=30) is False
    assert completed == []
    stored = _stored(store, action, run_id)
    assert stored is not None and stored.output == "mine"


def _tampered(token: str, **changes: object) -> str:
    body, signature = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload.update(changes)
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return f"{base64.urlsafe_b64encode(raw).rstrip(b'=').decode()}.{signature}"


def test_a_forged_altered_or_foreign_ticket_records_nothing(
    store: Store, action: Action, process: Callable[..., _Process]
) -> None:
    a, b = process("inst_a"), process("inst_b")
    other = process("inst_other", secret="b" * 64)
    run_id = repo.new_id("run")
    token, leave = _dispatch(a, action, run_id)
    foreign, leave_foreign = _dispatch(other, action, repo.new_id("run"))
    a.dies()
    leave.set()
    leave_foreign.set()
    bad = {
        "altered org": _tampered(token, orgId="org2"),
        "altered args": _tampered(token, args={"id": "r-1", "amount": 12_000}),
        "another deployment's": foreign,
        "not a ticket": "garbage",
    }
    for why, forged in bad.items():
        with pytest.raises(TicketInvalidError):
            Tickets(SECRET).read(forged, run_id)

        def complete(ticket: Ticket, why: str = why) -> RunResult:
            raise AssertionError(f"a ticket ({why}) was accepted")

        assert b.jobs.adopt(run_id, forged, complete) is False, why
    # A good ticket for another run is refused too.
    with pytest.raises(TicketInvalidError):
        Tickets(SECRET).read(token, "run_other")
    assert _stored(store, action, run_id) is None


def test_a_second_recording_of_a_recorded_run_is_refused_and_changes_nothing(
    store: Store, action: Action
) -> None:
    run_id = repo.new_id("run")
    _record(store, ok_run(action, run_id, "first"))
    with pytest.raises(RunAlreadyEndedError):
        _record(store, ok_run(action, run_id, "second"))
    stored = _stored(store, action, run_id)
    assert stored is not None and stored.output == "first"


def test_a_start_grant_holds_only_for_its_run_and_worker_under_this_deployments_key() -> None:
    tickets = Tickets(SECRET)
    grant = tickets.grant("run_1", "w1")
    assert tickets.granted(grant, "run_1", "w1")
    assert Tickets(SECRET).granted(grant, "run_1", "w1")  # any control plane of the deployment
    refused = {
        "another worker": (grant, "run_1", "w2"),
        "another run": (grant, "run_2", "w1"),
        "another deployment": (Tickets("b" * 64).grant("run_1", "w1"), "run_1", "w1"),
        "a ticket's key": (_b64mac(SECRET, "run_1", "w1"), "run_1", "w1"),
        "none": (None, "run_1", "w1"),
        "not base64": ("!" * 43, "run_1", "w1"),
        "not ASCII": ("é" * 43, "run_1", "w1"),
        "too long": (grant * 2, "run_1", "w1"),
        "names run together": (tickets.grant("run_1w", "1"), "run_1", "w1"),
    }
    for why, (token, run_id, worker) in refused.items():
        assert not tickets.granted(token, run_id, worker), why


def _b64mac(secret: str, run_id: str, worker: str) -> str:
    """A grant made with the tickets' key instead of the grants' own."""
    key = hmac.new(secret.encode(), b"actioncage handover ticket v1", "sha256").digest()
    message = json.dumps([run_id, worker], separators=(",", ":")).encode()
    mac = hmac.new(key, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
