"""The worker's start claim on a real Redis broker: it goes out as Celery's consumer
receives the run's task (the task_received signal), before a pool thread takes the task;
the run's sandbox starts beside it (on a real Docker engine), but nothing of the run leaves
the worker (egress, host calls, the outcome) before the claim is granted, and a no discards
it; the pool thread waits for the run, and no second claim goes out."""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from actioncage.dispatch import broker, messages
from actioncage.dispatch.messages import RunTask
from actioncage.dispatch.worker import ExecutorWorker
from actioncage.egress.proxy import SOCKET_NAME
from actioncage.models import EffectiveLimits
from actioncage.sandbox.docker.backend import bare_runner
from actioncage.sandbox.envelope import build_envelope, host_reply
from actioncage.sandbox.limits import EGRESS_MOUNT
from actioncage.settings import Settings
from tests import fakes
from tests.conftest import make_settings, wait_for
from tests.dispatch.conftest import REFUND, REFUND_HOST

LIMITS = EffectiveLimits(
    timeout_ms=1000, memory_mb=128, cpus=0.5, pids=64, tmpfs_mb=16,
    max_output_bytes=65536, max_host_calls=10,
)  # fmt: skip
CONTROL_PLANE = "test.control-plane"


@contextmanager
def _worker_and_control_plane(
    redis_url: str, name: str, settings: Settings | None = None
) -> Iterator[tuple[ExecutorWorker, queue.Queue[dict[str, Any]]]]:
    """A real worker (one slot, cold sandboxes) and a stand-in control plane's inbox, both
    listening; the queue gets what reaches the control plane."""
    settings = settings or Settings(broker_url=redis_url, worker_heartbeat_s=0.5)
    claims: queue.Queue[dict[str, Any]] = queue.Queue()
    control_plane = broker.Inbox(redis_url, CONTROL_PLANE, claims.put)
    worker = ExecutorWorker(settings, name, 1, bare_runner(settings), None)
    try:
        assert control_plane.start(wait_s=5.0)
        assert worker._inbox.start(wait_s=5.0)
        yield worker, claims
    finally:
        control_plane.close()
        worker.close()


def _task(run_id: str, start_by: float) -> dict[str, Any]:
    return messages.task_body(RunTask(run_id, b'{"code": ""}\n', LIMITS, CONTROL_PLANE, start_by))


def test_the_start_claim_goes_out_as_the_task_arrives_and_the_run_waits_for_its_answer(
    redis_url: str,
) -> None:
    answers = broker.Publisher(redis_url)
    body = _task("run_early", time.time() + 30)
    try:
        with _worker_and_control_plane(redis_url, "w-early") as (worker, claims):
            # What Celery's consumer does as the task arrives, before any pool thread has it.
            worker._received(request=SimpleNamespace(name=broker.RUN_TASK, id="t-1", args=(body,)))
            claim = claims.get(timeout=10)
            assert (claim["type"], claim["runId"], claim["worker"]) == (
                "claim",
                "run_early",
                "w-early",
            )

            # The pool thread's part: it waits for the answer to that claim.
            executed = threading.Thread(target=worker.execute, args=(body, "t-1"))
            executed.start()
            executed.join(0.3)
            assert executed.is_alive(), "the run went on without its claim's answer"
            answers.send(claim["replyTo"], {"type": "claimed", "ok": False, "corr": claim["corr"]})
            executed.join(10)
            assert not executed.is_alive()
            assert worker.refused == 1
            assert claims.empty(), f"a second claim went out: {claims.get_nowait()}"
    finally:
        answers.close()


def test_a_task_that_is_not_a_run_sends_no_claim_and_is_claimed_when_it_runs(
    redis_url: str,
) -> None:
    """A malformed body is left to execute(), which drops it; a task the consumer could not
    claim for (here: never signalled) is claimed by the pool thread itself."""
    answers = broker.Publisher(redis_url)
    body = _task("run_late", time.time() + 30)
    try:
        with _worker_and_control_plane(redis_url, "w-late") as (worker, claims):
            worker._received(request=SimpleNamespace(name=broker.RUN_TASK, id="t-0", args=("x",)))
            worker.execute("x", "t-0")  # dropped as malformed, no claim
            executed = threading.Thread(target=worker.execute, args=(body, "t-2"))
            executed.start()
            claim = claims.get(timeout=10)
            assert claim["runId"] == "run_late"
            answers.send(claim["replyTo"], {"type": "claimed", "ok": False, "corr": claim["corr"]})
            executed.join(10)
            assert not executed.is_alive()
            assert worker.refused == 1
            assert wait_for(claims.empty, 1)
    finally:
        answers.close()


def test_a_task_past_its_start_by_time_is_dropped_unclaimed(redis_url: str) -> None:
    """Nobody waits for that run to start any more: neither Celery's consumer nor the pool
    thread claims it, and nothing runs. The run queue's messages carry no Celery expiry, so
    this is the only check."""
    stale, fresh = _task("run_stale", time.time() - 1), _task("run_fresh", time.time() + 30)
    with _worker_and_control_plane(redis_url, "w-stale") as (worker, claims):
        worker._received(request=SimpleNamespace(name=broker.RUN_TASK, id="t-s", args=(stale,)))
        started = time.monotonic()
        worker.execute(stale, "t-s")
        assert time.monotonic() - started < worker.claim_timeout_s  # it waited for no answer
        worker._received(request=SimpleNamespace(name=broker.RUN_TASK, id="t-f", args=(fresh,)))
        # The inbox delivers in order: a claim for the stale run would have come first.
        assert claims.get(timeout=10)["runId"] == "run_fresh"
        assert wait_for(claims.empty, 1)


# REFUND's call, on a thread, beside one host call; it returns when it started and the host
# call's answer. Both reach the worker's gates (the egress proxy, the host call relay) at once.
_REFUND_AND_ASK = (
    REFUND.replace("def execute_action(context):", "def refund(context):")
    + "def execute_action(context):\n"
    "    started = time.time()\n"
    "    import threading\n"
    "    out = threading.Thread(target=refund, args=(context,))\n"
    "    out.start()\n"
    "    verdict = llm_classify_binary('Refunded?', 'yes', fallback=None)\n"
    "    out.join()\n"
    "    return {'started': started, 'verdict': verdict}\n"
)


_Held = tuple[
    ExecutorWorker, queue.Queue[dict[str, Any]], dict[str, Any], list[float], broker.Publisher
]


@contextmanager
def _held_run(redis_url: str, tmp_path: Path, name: str) -> Iterator[_Held]:
    """A worker that may reach the loopback refund server, and the task of a run whose
    script calls it (through its egress proxy) and then makes a host call, received by the
    worker; yields the worker, the stand-in control plane's queue (holding the run's claim),
    the claim, when the refund server saw each request (time.time()), and a publisher to
    answer with."""
    egress_dir = tmp_path / "egress"
    settings = make_settings(
        tmp_path,
        broker_url=redis_url,
        worker_heartbeat_s=0.5,
        egress_allowed_cidrs="127.0.0.1/32",
        egress_resolve={REFUND_HOST: "127.0.0.1"},
        egress_dir=str(egress_dir),
    )
    refunded: list[float] = []

    def refund(req: fakes.Request) -> tuple[int, dict[str, Any]]:
        refunded.append(time.time())
        return 200, {"ok": True}

    answers = broker.Publisher(redis_url)
    with (
        fakes.serve(refund) as (url, _),
        _worker_and_control_plane(redis_url, name, settings) as (worker, to_control_plane),
    ):
        limits = dataclasses.replace(LIMITS, timeout_ms=20_000, egress=(REFUND_HOST,))
        args = {"port": int(url.rsplit(":", 1)[1]), "id": name}
        line = build_envelope(
            _REFUND_AND_ASK, args, None, limits, egress_socket=f"{EGRESS_MOUNT}/{SOCKET_NAME}"
        )
        body = messages.task_body(RunTask(f"run_{name}", line, limits, CONTROL_PLANE,
                                          time.time() + 30))  # fmt: skip
        request = SimpleNamespace(
            name=broker.RUN_TASK, id=f"t-{name}", args=(body,), delivery_info={}
        )
        worker._received(request=request)
        claim = to_control_plane.get(timeout=10)
        assert claim["type"] == "claim"
        # The run has begun on the worker (its egress proxy is up) with no answer yet;
        # the control plane is slow to answer: the script reaches its refund meanwhile.
        assert wait_for(lambda: any(egress_dir.glob("actioncage-egress-*")), 60)
        threading.Event().wait(3.0)
        executed = threading.Thread(target=worker.execute, args=(body, request.id))
        executed.start()
        try:
            yield worker, to_control_plane, claim, refunded, answers
        finally:
            executed.join(60)
            answers.close()
        assert not executed.is_alive()


def test_a_run_starts_before_its_claim_is_answered_and_nothing_of_it_leaves_until_granted(
    redis_url: str, tmp_path: Path
) -> None:
    with _held_run(redis_url, tmp_path, "w-ahead") as (worker, to_cp, claim, refunded, answers):
        assert refunded == [], "the run reached out before its claim was granted"
        assert to_cp.empty(), f"something left before the grant: {to_cp.get_nowait()}"
        granted_at = time.time()
        answers.send(claim["replyTo"], {"type": "claimed", "ok": True, "grant": "g-1",
                                        "corr": claim["corr"]})  # fmt: skip
        call = to_cp.get(timeout=30)
        assert (call["type"], call["grant"]) == ("host_call", "g-1")
        line = host_reply(call["frame"]["id"], True, True).decode()
        answers.send(call["replyTo"], {"type": "host_reply", "line": line,
                                       "corr": call["corr"]})  # fmt: skip
        outcome = to_cp.get(timeout=30)
        assert (outcome["type"], outcome["grant"]) == ("outcome", "g-1")
        answers.send(outcome["replyTo"], {"type": "outcome_ack", "corr": outcome["corr"]})
    frame = outcome["raw"]["resultFrame"]
    assert frame["status"] == "ok", (frame, outcome["raw"]["logs"])
    result = frame["output"]
    assert result["verdict"] is True
    # It ran before the grant; its refund went out after it, once.
    assert result["started"] < granted_at, (result, granted_at)
    assert len(refunded) == 1 and refunded[0] > granted_at
    assert worker.refused == 0


def test_a_run_started_before_its_claim_was_refused_leaves_nothing(
    redis_url: str, tmp_path: Path
) -> None:
    with _held_run(redis_url, tmp_path, "w-refused") as (worker, to_cp, claim, refunded, answers):
        answers.send(claim["replyTo"], {"type": "claimed", "ok": False,
                                        "corr": claim["corr"]})  # fmt: skip
    assert worker.refused == 1
    assert refunded == []
    assert to_cp.empty(), f"a refused run sent {to_cp.get_nowait()}"


def test_a_task_delivered_again_starts_nothing_before_its_claim_is_answered(
    redis_url: str, tmp_path: Path
) -> None:
    """Its claim is refused as a rule (its first worker started it): it would only take a
    slot meanwhile."""
    body = _task("run_again", time.time() + 30)
    with _worker_and_control_plane(redis_url, "w-again") as (worker, to_control_plane):
        request = SimpleNamespace(
            name=broker.RUN_TASK, id="t-a", args=(body,), delivery_info={"redelivered": True}
        )
        worker._received(request=request)
        claim = to_control_plane.get(timeout=10)
        assert claim["runId"] == "run_again"
        assert worker.status().busy == 0
        executed = threading.Thread(target=worker.execute, args=(body, "t-a"))
        executed.start()
        answers = broker.Publisher(redis_url)
        try:
            answers.send(claim["replyTo"], {"type": "claimed", "ok": False, "corr": claim["corr"]})
        finally:
            answers.close()
        executed.join(10)
        assert not executed.is_alive()
        assert worker.refused == 1
        assert worker._runner.warm_starts + worker._runner.cold_starts == 0
