"""Bounded run slots under the production server: slow runs don't block others; full is 429."""

from __future__ import annotations

import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from actioncage.sandbox.limits import OWNER_LABEL
from actioncage.store import Store, instances
from tests import fakes
from tests.conftest import IMAGE, SESSION, TEST_LABEL, wait_for
from tests.served import ACTIONCAGE, free_port, http, serve_env, served

pytestmark = pytest.mark.docker
H = {"Authorization": "Bearer concurrency-key"}
# Held inside a host call until the test releases it: it holds its run slot meanwhile.
SLOW = fakes.held_code("slow")
FAST = "def execute_action(context):\n    return 'fast'\n"


@pytest.fixture
def held() -> Iterator[fakes.HeldLlm]:
    with fakes.held_llm() as llm:
        yield llm


@pytest.fixture
def server(tmp_path: Path, held: fakes.HeldLlm) -> Iterator[str]:
    """`actioncage serve` (waitress) with 2 run slots and 1 queue place, no warm pool; its
    LLM host calls wait for ``held``."""
    with served(
        tmp_path,
        ACTIONCAGE_API_KEY="concurrency-key",
        ACTIONCAGE_MAX_CONCURRENT_RUNS="2",
        ACTIONCAGE_RUN_QUEUE_SIZE="1",
        ACTIONCAGE_POOL_SIZE="0",
        **held.serve_env(),
    ) as base:
        yield base


def _create(base: str, name: str, code: str) -> None:
    resp = http.post(f"{base}/v1/actions", headers=H, json={"name": name, "code": code}, timeout=10)
    assert resp.status_code == 201, resp.text


def _in_flight(base: str) -> float:
    text = http.get(f"{base}/metrics", timeout=10).text
    line = next(x for x in text.splitlines() if x.startswith("actioncage_runs_in_flight "))
    return float(line.split()[1])


def _execute_in_background(base: str, name: str, out: list[Any]) -> threading.Thread:
    def call() -> None:
        out.append(http.post(f"{base}/v1/actions/{name}/execute", headers=H, json={}, timeout=60))

    thread = threading.Thread(target=call)
    thread.start()
    return thread


def test_a_slow_run_does_not_block_a_fast_one(server: str, held: fakes.HeldLlm) -> None:
    _create(server, "slow", SLOW)
    _create(server, "fast", FAST)
    slow: list[Any] = []
    thread = _execute_in_background(server, "slow", slow)
    try:
        assert held.wait_entered(1), [r.text for r in slow]
        assert _in_flight(server) == 1
        fast = http.post(f"{server}/v1/actions/fast/execute", headers=H, json={}, timeout=60)
        assert fast.status_code == 200 and fast.json()["output"] == "fast"
        assert not slow, "the slow run ended before it was released"
    finally:
        held.release()
        thread.join(timeout=60)
    assert slow[0].json()["output"] == "slow"


def test_full_slots_and_queue_answer_429_with_retry_after(server: str, held: fakes.HeldLlm) -> None:
    _create(server, "slow", SLOW)
    _create(server, "fast", FAST)
    results: list[Any] = []
    threads = [_execute_in_background(server, "slow", results) for _ in range(2)]
    try:
        # Both slots are held, each run inside its host call.
        assert held.wait_entered(2), [r.text for r in results]
        threads.append(_execute_in_background(server, "fast", results))  # the queue place
        assert wait_for(
            lambda: "actioncage_run_queue_depth 1.0" in http.get(f"{server}/metrics").text,
            timeout=30,
        ), "the third run was not queued"
        refused = http.post(f"{server}/v1/actions/fast/execute", headers=H, json={}, timeout=60)
        assert refused.status_code == 429
        assert refused.headers["Retry-After"] == "1"
        assert refused.json()["error"]["type"] == "overloaded"
        assert not results, "a run ended before the slots were released"
    finally:
        held.release()
        for thread in threads:
            thread.join(timeout=60)
    assert sorted(r.json()["output"] for r in results) == ["fast", "slow", "slow"]
    assert "actioncage_runs_refused_total 1.0" in http.get(f"{server}/metrics").text


def test_serve_sweeps_a_dead_owners_leftovers_then_sigterm_removes_its_warm_pool(
    tmp_path: Path, docker_client: Any
) -> None:
    case = uuid.uuid4().hex[:12]
    port = free_port()
    env = serve_env(tmp_path, ACTIONCAGE_PORT=str(port), ACTIONCAGE_POOL_SIZE="2")
    # A process that died long ago: its row is stale, and it left a container behind.
    store = Store(env["ACTIONCAGE_DATABASE_URL"])
    store.create_all()
    with store.session() as s:
        instances.register(s, "ins_dead", "serve", "here", 1, datetime(2020, 1, 1, tzinfo=UTC))
    store.dispose()
    labels = {
        TEST_LABEL: SESSION,
        "io.actioncage.case": case,
        "io.actioncage.managed": "true",
        OWNER_LABEL: "ins_dead",
    }
    leftover = docker_client.containers.create(IMAGE, labels=labels, network_disabled=True)
    env["ACTIONCAGE_CONTAINER_LABELS"] = f"{TEST_LABEL}={SESSION},io.actioncage.case={case}"
    proc = subprocess.Popen(
        [*ACTIONCAGE, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )

    def ours() -> list[Any]:
        return docker_client.containers.list(
            ignore_removed=True, all=True, filters={"label": f"io.actioncage.case={case}"}
        )

    try:
        deadline = time.monotonic() + 60
        while True:
            assert time.monotonic() < deadline and proc.poll() is None, "no warm pool came up"
            try:
                text = http.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
                if 'actioncage_pool_ready{profile="default"} 2.0' in text:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        ids = {c.id for c in ours()}
        assert leftover.id not in ids and len(ids) == 2
    finally:
        proc.terminate()
        assert proc.wait(timeout=60) == 0
    assert ours() == []
