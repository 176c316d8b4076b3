"""The worker's start claim on a real Redis broker: it goes out as Celery's consumer
receives the run's task (the task_received signal), before a pool thread takes the task;
the pool thread then waits for that claim's answer, sends no second claim, and starts
nothing until the answer is a yes (here, a no: the run is dropped unrun)."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

from actioncage.dispatch import broker, messages
from actioncage.dispatch.messages import RunTask
from actioncage.dispatch.worker import ExecutorWorker
from actioncage.models import EffectiveLimits
from actioncage.sandbox.docker.backend import bare_runner
from actioncage.settings import Settings
from tests.conftest import wait_for

LIMITS = EffectiveLimits(
    timeout_ms=1000, memory_mb=128, cpus=0.5, pids=64, tmpfs_mb=16,
    max_output_bytes=65536, max_host_calls=10,
)  # fmt: skip
CONTROL_PLANE = "test.control-plane"


@contextmanager
def _worker_and_control_plane(
    redis_url: str, name: str
) -> Iterator[tuple[ExecutorWorker, queue.Queue[dict[str, Any]]]]:
    """A real worker (one slot, no engine behind it) and a stand-in control plane's inbox,
    both listening; the queue gets what reaches the control plane."""
    settings = Settings(broker_url=redis_url, worker_heartbeat_s=0.5)
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
