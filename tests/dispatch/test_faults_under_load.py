"""Under load, with faults: a script whose side effect is a call to a loopback "refund"
server runs many times while one worker is SIGKILLed halfway, or while the broker is
restarted. The refund server sees at most one call per run, and exactly one for every run
reported ok; every run ends ok or with a clean sandbox_error."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_for
from tests.dispatch.conftest import (
    REFUND,
    REFUND_HOST,
    Cluster,
    cluster,
    distributed,
    execute,
    make_action,
    refund_server,
    refunds_by_id,
)
from tests.rabbitmq_server import RabbitServer

pytestmark = [pytest.mark.docker, distributed]

# The issue asks for 200; ACTIONCAGE_TEST_REFUND_RUNS lowers it where CI time is short.
RUNS = int(os.environ.get("ACTIONCAGE_TEST_REFUND_RUNS") or 200)


def _start(c: Cluster, port: int) -> tuple[str, str]:
    a, b = c.start_api(), c.start_api()
    c.start_worker("w1", slots=2, ACTIONCAGE_POOL_SIZE="2")
    c.start_worker("w2", slots=2, ACTIONCAGE_POOL_SIZE="2")
    c.wait_live("w1", "w2")
    make_action(a, "refund", REFUND, timeoutMs=20_000, egress=[REFUND_HOST])
    return a, b


def _run_all(
    bases: tuple[str, str], port: int, count: int, halfway: threading.Event
) -> list[dict[str, Any]]:
    """``count`` runs, eight at a time through both API processes; ``halfway`` is set once
    half of them have answered."""
    done = 0
    lock = threading.Lock()

    def one(i: int) -> dict[str, Any]:
        nonlocal done
        run = execute(bases[i % 2], "refund", {"id": f"r{i}", "port": port}, timeout=120)
        run["refundId"] = f"r{i}"
        with lock:
            done += 1
            if done >= count // 2:
                halfway.set()
        return run

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(count)))


def _check(runs: list[dict[str, Any]], seen: Any) -> tuple[int, int]:
    """Assert the guarantees; returns (ok runs, failed runs)."""
    refunds = refunds_by_id(seen)
    assert all(n == 1 for n in refunds.values()), {k: n for k, n in refunds.items() if n > 1}
    ok = [r for r in runs if r.get("status") == "ok"]
    failed = [r for r in runs if r.get("status") != "ok"]
    for run in ok:
        assert refunds.get(run["refundId"]) == 1, run
    for run in failed:
        # A clean error: the run (or no run) is reported as sandbox_error, 503.
        assert run["httpStatus"] == 503 and run["error"]["type"] == "sandbox_error", run
    return len(ok), len(failed)


def test_a_worker_sigkilled_halfway_through_many_refunds_never_refunds_twice(
    tmp_path: Path, amqp_url: str
) -> None:
    with refund_server() as (port, seen), cluster(tmp_path, amqp_url) as c:
        bases = _start(c, port)
        halfway = threading.Event()
        killer = threading.Thread(target=lambda: halfway.wait(600) and c.kill_worker("w1"))
        killer.start()
        runs = _run_all(bases, port, RUNS, halfway)
        killer.join(timeout=60)
        ok, failed = _check(runs, seen)
        print(f"{RUNS} runs, w1 SIGKILLed halfway: {ok} ok, {failed} sandbox_error")
        # Only what w1 held when it died may fail; the rest ran on w2.
        assert failed <= 4, failed
        assert {r["executor"] for r in runs if r["status"] == "ok"} == {"w1", "w2"}


def test_a_broker_restart_under_load_leaves_no_duplicate_refund_and_no_hung_run(
    tmp_path: Path, amqp_url: str, rabbitmq_server: RabbitServer
) -> None:
    count = max(RUNS // 4, 20)
    with refund_server() as (port, seen), cluster(tmp_path, amqp_url) as c:
        bases = _start(c, port)
        halfway = threading.Event()

        def restart() -> None:
            if halfway.wait(600):
                rabbitmq_server.stop()
                rabbitmq_server.start()

        restarter = threading.Thread(target=restart)
        restarter.start()
        runs = _run_all(bases, port, count, halfway)
        restarter.join(timeout=180)
        ok, failed = _check(runs, seen)
        print(f"{count} runs, broker restarted halfway: {ok} ok, {failed} sandbox_error")
        assert ok >= count // 2
        # Once it is back, runs work again with no process restarted.
        assert wait_for(lambda: execute(bases[0], "refund", {"id": "after", "port": port})
                        .get("status") == "ok", timeout=60)  # fmt: skip
        assert refunds_by_id(seen).get("after", 0) >= 1
