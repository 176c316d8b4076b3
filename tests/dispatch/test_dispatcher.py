"""The dispatcher on a real Redis broker: its start waits for a worker's heartbeat (or one
and a half heartbeat intervals) sleeping, never spinning; the yes to a start claim carries a
signed start grant, and a run's host calls, outcome and handed-over outcome count only with
the grant of that run to that worker (another worker that got the task and names the winner
is ignored)."""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from actioncage.dispatch import broker, messages
from actioncage.dispatch.dispatcher import Dispatcher
from actioncage.models import EffectiveLimits, WorkerStatus
from actioncage.runs.sandboxes import SandboxRun, handover_ticket
from actioncage.runs.tickets import Ticket, Tickets
from actioncage.sandbox.foreground import Foreground
from actioncage.settings import Settings
from tests.conftest import wait_for

SECRET = "s" * 64
LIMITS = EffectiveLimits(
    timeout_ms=1000, memory_mb=128, cpus=0.5, pids=64, tmpfs_mb=16,
    max_output_bytes=65536, max_host_calls=10,
)  # fmt: skip


def _dispatcher(redis_url: str) -> Dispatcher:
    settings = Settings(broker_url=redis_url, worker_heartbeat_s=2.0, worker_stale_s=6.0)
    foreground = Foreground(settings.engine_work_defer_ms)
    return Dispatcher(settings, "test-instance", foreground, Tickets(SECRET))


def test_with_no_worker_start_waits_the_heartbeat_window_asleep(redis_url: str) -> None:
    dispatcher = _dispatcher(redis_url)
    try:
        wall, cpu = time.monotonic(), time.thread_time()
        dispatcher.start()
        wall, cpu = time.monotonic() - wall, time.thread_time() - cpu
        assert dispatcher.workers.live() == []
        assert 2.9 <= wall < 5.0  # 1.5 heartbeat intervals, after the inbox connected
        # A loop polling an event already set burns the whole window on this thread.
        assert cpu < 0.3, f"start() used {cpu:.2f} s of CPU while waiting {wall:.2f} s"
    finally:
        dispatcher.close()


def test_start_returns_as_soon_as_a_worker_is_heard(redis_url: str) -> None:
    dispatcher = _dispatcher(redis_url)
    publisher = broker.Publisher(redis_url)
    stop = threading.Event()
    status = WorkerStatus("w1", "host1", 2, 0, {}, None, False, 0.0, time.time())

    def beat() -> None:  # a worker's heartbeats, until the test ends
        while not stop.is_set():
            publisher.broadcast(messages.heartbeat_body(status))
            stop.wait(0.2)

    beats = threading.Thread(target=beat, daemon=True)
    try:
        beats.start()
        wall = time.monotonic()
        dispatcher.start()
        wall = time.monotonic() - wall
        assert [w.name for w in dispatcher.workers.live()] == ["w1"]
        assert wall < 2.5, f"start() took {wall:.2f} s with a worker heard"
    finally:
        stop.set()
        beats.join()
        publisher.close()
        dispatcher.close()


def _ticket(tickets: Tickets, run_id: str) -> str:
    now = datetime.now(UTC)
    deadline = now + timedelta(seconds=60)
    return tickets.issue(
        Ticket(run_id, "org1", "act1", None, None, None, {}, now, "inst_a", deadline)
    )


class _FakeWorker:
    """A worker's side of the wire, by hand: takes a run off the run queue, claims it,
    relays host calls and sends outcomes."""

    def __init__(self, redis_url: str) -> None:
        self._url = redis_url
        self.answers: queue.Queue[dict[str, Any]] = queue.Queue()
        self.inbox = broker.Inbox(redis_url, "test.worker", self.answers.put)
        self.publisher = broker.Publisher(redis_url)
        assert self.inbox.start(wait_s=5.0)

    def take_run(self) -> dict[str, Any]:
        with broker.connection(self._url) as conn:
            runs = conn.SimpleQueue(broker.RUN_QUEUE)
            try:
                message = runs.get(timeout=10)
                message.ack()
                (task,), _kwargs, _embed = message.payload  # Celery's task message
                return dict(task)
            finally:
                runs.close()

    def ask(self, to: str, body: dict[str, Any]) -> dict[str, Any]:
        corr = uuid.uuid4().hex
        self.publisher.send(to, {**body, "corr": corr, "replyTo": "test.worker"})
        answer = self.answers.get(timeout=10)
        assert answer["corr"] == corr
        return answer

    def outcome(self, run_id: str, worker: str, grant: Any, note: str) -> dict[str, Any]:
        return {"type": "outcome", "runId": run_id, "worker": worker, "grant": grant,
                "error": note, "imageDigest": None, "egress": [], "raw": None}  # fmt: skip

    def close(self) -> None:
        self.publisher.close()
        self.inbox.close()


def _quick(redis_url: str) -> Settings:
    return Settings(
        broker_url=redis_url, run_queue_wait_ms=10_000, dispatch_grace_s=1.0, worker_heartbeat_s=0.2
    )


def test_only_the_granted_worker_can_relay_host_calls_and_answer_for_a_run(
    redis_url: str,
) -> None:
    tickets = Tickets(SECRET)
    a = Dispatcher(_quick(redis_url), "inst_a", Foreground(0), tickets)
    worker = _FakeWorker(redis_url)
    run_id = "run_granted"
    ran: list[SandboxRun] = []
    try:
        a.start()

        def dispatch() -> None:
            handover_ticket.set(_ticket(tickets, run_id))
            ran.append(a.run(run_id, b"{}\n", LIMITS, lambda frame: b"answered\n"))

        caller = threading.Thread(target=dispatch, daemon=True)
        caller.start()
        task = worker.take_run()
        reply_to = task["replyTo"]
        assert task["runId"] == run_id
        claim = {"type": "claim", "runId": run_id}
        won = worker.ask(reply_to, {**claim, "worker": "w1"})
        assert won["ok"] is True and tickets.granted(won["grant"], run_id, "w1")
        lost = worker.ask(reply_to, {**claim, "worker": "w2"})  # a second claim: no grant
        assert lost["ok"] is False and "grant" not in lost

        call = {"type": "host_call", "runId": run_id, "worker": "w1", "frame": {"id": 1}}
        for forged in (None, "", lost.get("grant"), tickets.grant(run_id, "w2"), won["grant"][:-1]):
            refused = worker.ask(reply_to, {**call, "grant": forged})
            assert "not running on this worker" in refused["line"], forged
        assert worker.ask(reply_to, {**call, "grant": won["grant"]})["line"] == "answered\n"

        # An outcome naming w1 without its grant is ignored (and acknowledged, so that its
        # sender does not hand it over); w1's own, after it in the same inbox, is the run's.
        for forged in (None, tickets.grant(run_id, "w2"), Tickets("t" * 64).grant(run_id, "w1")):
            ack = worker.ask(reply_to, worker.outcome(run_id, "w1", forged, "forged"))
            assert ack["type"] == "outcome_ack"
        worker.publisher.send(reply_to, worker.outcome(run_id, "w1", won["grant"], "granted"))
        caller.join(timeout=10)
        assert [(r.error, r.executor) for r in ran] == [("granted", "w1")]
    finally:
        a.close()
        worker.close()


def test_a_handed_over_outcome_is_taken_only_with_its_runs_grant_to_its_worker(
    redis_url: str,
) -> None:
    tickets = Tickets(SECRET)
    adopted: list[tuple[str, str | None, str | None]] = []

    def adopt(run_id: str, token: str, parse: Callable[[EffectiveLimits], SandboxRun]) -> bool:
        got = parse(LIMITS)
        adopted.append((run_id, got.executor, got.error))
        return True

    b = Dispatcher(_quick(redis_url), "inst_b", Foreground(0), tickets)
    b.adopt = adopt
    worker = _FakeWorker(redis_url)
    run_id = "run_handed"
    ticket, grant = _ticket(tickets, run_id), tickets.grant(run_id, "w1")
    try:
        b.start()
        sent = {
            "no grant": ("w1", None),
            "w1's grant under w2's name": ("w2", grant),
            "another run's grant": ("w1", tickets.grant("run_other", "w1")),
            "another deployment's grant": ("w1", Tickets("t" * 64).grant(run_id, "w1")),
            "granted": ("w1", grant),
        }
        # Each holds the run's real ticket, as every worker the task reached does.
        for note, (name, token) in sent.items():
            body = {**worker.outcome(run_id, name, token, note), "handover": True, "ticket": ticket}
            worker.publisher.send(broker.HANDOVER_QUEUE, body)
        # In order on one consumer: once the granted one is taken, the others were weighed.
        assert wait_for(lambda: len(adopted) >= 1, timeout=10)
        assert adopted == [(run_id, "w1", "granted")]
    finally:
        b.close()
        worker.close()
