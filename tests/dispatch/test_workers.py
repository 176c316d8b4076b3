"""Executor workers for real: two `actioncage serve` processes and two `actioncage worker`
processes on RabbitMQ or Redis, PostgreSQL and Docker. Runs spread over the workers and
name them; host calls are answered by the control plane; a SIGKILLed worker's run ends
as executor lost and is never run again; a broker that goes away answers 503 quickly and
is used again once back, with no restart of any process."""

from __future__ import annotations

import json
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import docker
import pytest
import requests

from tests import fakes
from tests.conftest import SESSION, TEST_LABEL, wait_for
from tests.dispatch.conftest import (
    REFUND,
    REFUND_HOST,
    cluster,
    distributed,
    execute,
    get_run,
    make_action,
    refund_server,
    refunds_by_id,
)
from tests.rabbitmq_server import RabbitServer
from tests.served import ACTIONCAGE

pytestmark = [pytest.mark.docker, distributed]

ECHO = "def execute_action(context):\n    return context['args']\n"
NAP = "import time\ndef execute_action(context):\n    time.sleep(0.5)\n    return 'ok'\n"
HOLD = "import time\ndef execute_action(context):\n    time.sleep(3600)\n"


@pytest.fixture(params=["rabbitmq", "redis"])
def broker_url(request: pytest.FixtureRequest) -> str:
    """Each test runs on RabbitMQ and on Redis."""
    fixture = "amqp_url" if request.param == "rabbitmq" else "redis_url"
    url: str = request.getfixturevalue(fixture)
    return url


def _containers_of(client: docker.DockerClient, run_id: str) -> list[Any]:
    return client.containers.list(
        ignore_removed=True, all=True, filters={"label": f"io.actioncage.run-id={run_id}"}
    )


def _remove_containers_of(client: docker.DockerClient, run_id: str) -> None:
    for c in _containers_of(client, run_id):
        c.remove(force=True)


def test_runs_spread_over_both_workers_and_each_record_names_its_executor(
    tmp_path: Path, broker_url: str
) -> None:
    with cluster(tmp_path, broker_url) as c:
        a, b = c.start_api(), c.start_api()
        c.start_worker("w1", slots=2)
        c.start_worker("w2", slots=2)
        c.wait_live("w1", "w2")
        make_action(a, "echo", ECHO)
        make_action(a, "nap", NAP)

        run = execute(b, "echo", {"n": 1})
        assert run["httpStatus"] == 200 and run["status"] == "ok", run
        assert run["output"] == {"n": 1} and run["executor"] in ("w1", "w2")
        assert get_run(a, run["runId"])["executor"] == run["executor"]

        # Eight half-second runs through both API processes at once: four slots in all,
        # so both workers take some.
        with ThreadPoolExecutor(8) as pool:
            runs = list(pool.map(lambda i: execute((a, b)[i % 2], "nap", {}), range(8)))
        assert all(r["status"] == "ok" for r in runs), runs
        assert {r["executor"] for r in runs} == {"w1", "w2"}
        assert {get_run(a, r["runId"])["executor"] for r in runs} == {"w1", "w2"}

        # Both API processes list both workers: host, slots, busy, warm sandboxes, heartbeat.
        for base in (a, b):
            health = requests.get(base + "/health", timeout=10).json()
            assert health["status"] == "ok" and health["broker"] is True
            workers = {w["name"]: w for w in health["workers"]}
            assert set(workers) == {"w1", "w2"}
            assert all(w["slots"] == 2 and 0 <= w["busy"] <= 2 for w in workers.values())
            assert all(w["lastHeartbeatAgoS"] < 5 for w in workers.values())
            assert all("default" in w["warm"] for w in workers.values())

        # `actioncage workers` lists them from the broker (it needs no database either).
        env = c._env()
        env.pop("ACTIONCAGE_DATABASE_URL")
        out = subprocess.run(
            [*ACTIONCAGE, "workers", "--json"], env=env, capture_output=True, timeout=60
        )
        assert out.returncode == 0, out.stderr.decode()
        assert {w["name"] for w in json.loads(out.stdout)} == {"w1", "w2"}


def test_host_calls_from_a_worker_are_answered_by_the_control_plane_with_its_credentials(
    tmp_path: Path, amqp_url: str
) -> None:
    def answer(req: fakes.Request) -> tuple[int, dict[str, Any]]:
        return fakes.chat_completions(lambda system, user: "true")(req)

    with fakes.serve(answer) as (llm_url, seen), cluster(tmp_path, amqp_url) as c:
        base = c.start_api(
            ACTIONCAGE_LLM_BASE_URL=llm_url + "/v1", ACTIONCAGE_LLM_API_KEY=fakes.LLM_KEY
        )
        # The worker has no provider credentials (start_worker drops them).
        c.start_worker("w1")
        c.wait_live("w1")
        code = (
            "def execute_action(context):\n"
            "    return llm_classify_binary('Is this a refund request?', 'I want a refund')\n"
        )
        make_action(base, "llm", code)
        run = execute(base, "llm", {})
        assert run["status"] == "ok" and run["output"] is True, run
        assert run["executor"] == "w1"
        # The provider saw the control plane's key: the call came from there.
        assert len(seen) == 1 and seen[0].headers["authorization"] == f"Bearer {fakes.LLM_KEY}"


def test_a_sigkilled_worker_s_run_ends_executor_lost_and_never_runs_again_while_a_queued_run_moves_to_the_other(
    tmp_path: Path,
    amqp_url: str,
    rabbitmq_server: RabbitServer,
    docker_client: docker.DockerClient,
) -> None:
    with refund_server() as (port, seen), cluster(tmp_path, amqp_url) as c:
        base = c.start_api()
        c.start_worker("w1", slots=1)
        c.wait_live("w1")
        make_action(base, "refund", REFUND, timeoutMs=20_000, egress=[REFUND_HOST])
        with ThreadPoolExecutor(2) as pool:
            held = pool.submit(execute, base, "refund", {"id": "held", "port": port, "sleep": 3600})
            assert wait_for(lambda: refunds_by_id(seen).get("held") == 1, timeout=60)
            # w1's one slot is taken: this run waits on the queue.
            queued = pool.submit(execute, base, "refund", {"id": "queued", "port": port})
            assert wait_for(lambda: rabbitmq_server.ready_messages() == 1, timeout=30)
            assert not queued.done()
            c.kill_worker("w1")
            killed_at = time.monotonic()
            # The other worker gets the queued run, and the killed one's run again (Celery
            # redelivers the unacknowledged message): the start claim refuses that one.
            c.start_worker("w2", slots=2)
            lost = held.result(timeout=60)
            lost_after_s = time.monotonic() - killed_at
            moved = queued.result(timeout=120)
        try:
            assert lost["httpStatus"] == 503 and lost["status"] == "error", lost
            assert lost["error"]["type"] == "sandbox_error"
            assert "executor lost" in lost["error"]["message"] and lost["executor"] == "w1"
            # Within its deadline (20 s) plus 10 s: the silent worker is noticed sooner.
            assert lost_after_s < 30, lost_after_s
            assert moved["status"] == "ok" and moved["executor"] == "w2", moved
            assert wait_for(lambda: "refused" in c.log_of("worker-w2"), timeout=30), c.log_of(
                "worker-w2"
            )
            # Never run again: one refund each, and the held run only ever had one container.
            assert refunds_by_id(seen) == {"held": 1, "queued": 1}
            assert len(_containers_of(docker_client, lost["runId"])) <= 1
            assert get_run(base, lost["runId"])["error"]["type"] == "sandbox_error"
        finally:
            _remove_containers_of(docker_client, lost["runId"])


def test_with_the_broker_down_runs_answer_503_within_5_s_and_work_again_once_it_is_back(
    tmp_path: Path, amqp_url: str, rabbitmq_server: RabbitServer
) -> None:
    with cluster(tmp_path, amqp_url) as c:
        base = c.start_api()
        c.start_worker("w1")
        c.wait_live("w1")
        make_action(base, "echo", ECHO)
        assert execute(base, "echo", {"n": 1})["status"] == "ok"

        rabbitmq_server.stop()
        try:
            began = time.monotonic()
            down = execute(base, "echo", {"n": 2})
            took_s = time.monotonic() - began
            assert down["httpStatus"] == 503 and down["error"]["type"] == "sandbox_error", down
            assert took_s < 5, took_s
            assert requests.get(base + "/health", timeout=10).status_code == 503
        finally:
            rabbitmq_server.start()
        # No process restarted: the API and the worker reconnect on their own.
        assert wait_for(
            lambda: requests.get(base + "/health", timeout=10).status_code == 200, timeout=60
        ), c.log_of("worker-w1")
        back = execute(base, "echo", {"n": 3})
        assert back["status"] == "ok" and back["output"] == {"n": 3}, back
        assert all(proc.poll() is None for proc in [*c.workers.values(), *(p for _, p in c.apis)])


def test_another_worker_removes_the_sandboxes_a_sigkilled_one_left_and_never_a_live_one_s(
    tmp_path: Path, broker_url: str, docker_client: docker.DockerClient
) -> None:
    with refund_server() as (port, seen), cluster(tmp_path, broker_url) as c:
        base = c.start_api()
        c.start_worker("w1", slots=1)
        c.start_worker("w2", slots=1)
        c.wait_live("w1", "w2")
        make_action(base, "refund", REFUND, timeoutMs=60_000, egress=[REFUND_HOST])
        with ThreadPoolExecutor(2) as pool:
            held = [
                pool.submit(execute, base, "refund", {"id": f"h{i}", "port": port, "sleep": 3600})
                for i in range(2)
            ]
            # One run on each worker (one slot each), both inside their sandboxes.
            assert wait_for(lambda: refunds_by_id(seen) == {"h0": 1, "h1": 1}, timeout=60)
            sandboxes = {
                s.labels["io.actioncage.run-id"]: s
                for s in docker_client.containers.list(
                    ignore_removed=True, filters={"label": f"{TEST_LABEL}={SESSION}"}
                )
                if s.labels.get("io.actioncage.run-id", "").startswith("run_")
            }
            assert len(sandboxes) == 2, sandboxes
            c.kill_worker("w1")
            assert wait_for(lambda: any(f.done() for f in held), timeout=60)
            lost = next(f for f in held if f.done()).result()
            live = next(f for f in held if not f.done())
            assert lost["executor"] == "w1" and "executor lost" in lost["error"]["message"], lost
            dead_owner = sandboxes[lost["runId"]].labels["io.actioncage.owner"]
            (live_sandbox,) = [s for r, s in sandboxes.items() if r != lost["runId"]]
            try:
                # w2 hears w1's heartbeats stop, and removes what w1 left (its run's sandbox
                # and its warm one), never its own running sandbox.
                def dead_left() -> list[Any]:
                    owned = f"io.actioncage.owner={dead_owner}"
                    return docker_client.containers.list(
                        ignore_removed=True, all=True, filters={"label": owned}
                    )

                assert wait_for(lambda: not dead_left(), timeout=60), c.log_of("worker-w2")
                assert "dead workers left" in c.log_of("worker-w2")
                live_sandbox.reload()
                assert live_sandbox.status == "running" and not live.done()
            finally:
                live_sandbox.remove(force=True)
            assert live.result(timeout=60)["status"] == "error"
        assert refunds_by_id(seen) == {"h0": 1, "h1": 1}
