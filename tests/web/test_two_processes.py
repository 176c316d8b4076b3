"""Two `actioncage serve` processes on one PostgreSQL and one Redis behave as one product:
limits hold across both, a revoked key stops on both, a starting process harms no run in
flight, and a SIGKILLed process's background run is ended by a survivor and called back once.

The deployment (PostgreSQL, Redis, both processes) is started once for the module; each test
uses an org, a key or an extra process of its own so the tests do not depend on each other.
Real processes, real HTTP, the real engine; only the LLM is a local stand-in, used to hold a
run in flight for exactly as long as a test wants.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
import redis
import requests
from sqlalchemy import select

from actioncage.runs.jobs import EXECUTOR_LOST
from actioncage.store import Store
from actioncage.store import callbacks as outbox_repo
from actioncage.store import jobs as jobs_repo
from actioncage.store.schema import InstanceRow
from tests import fakes
from tests.conftest import SESSION, TEST_LABEL, wait_for
from tests.runs.conftest import Receiver
from tests.served import ACTIONCAGE, http, serve_env, served_process, spawn, stop, wait_serving
from tests.servers import kept_postgres_url

pytestmark = pytest.mark.docker

KEY = "two-processes-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
OK = "def execute_action(context):\n    return 1\n"
HEARTBEAT_S, STALE_S = 0.5, 3.0


@dataclass
class Deployment:
    """Two serve processes sharing ``database_url`` and ``redis_url``."""

    tmp: Path
    env: dict[str, str]
    database_url: str
    a: str
    b: str
    llm: fakes.HeldLlm  # process a's LLM: holds a run of a's until released

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run `actioncage ARGS` against the deployment's database and Redis."""
        out = subprocess.run(
            [*ACTIONCAGE, *args],
            env=serve_env(self.tmp, **self.env),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        return out

    def new_key(self, org: str) -> tuple[str, str]:
        """A new API key of ``org`` made by the CLI: (key id, secret)."""
        out = self.cli("keys", "create", "--org", org)
        key_id = out.stderr.split("key id ", 1)[1].split()[0]
        return key_id, out.stdout.strip()

    def store(self) -> Store:
        return Store(self.database_url)


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory, redis_server: str, docker_client: Any
) -> Iterator[Deployment]:
    tmp = tmp_path_factory.mktemp("two-processes")
    client = redis.Redis.from_url(redis_server)
    try:
        client.flushall()
    finally:
        client.close()
    database_url = kept_postgres_url(tmp, "deployment")
    env = {
        "ACTIONCAGE_DATABASE_URL": database_url,
        "ACTIONCAGE_REDIS_URL": redis_server,
        "ACTIONCAGE_API_KEY": KEY,
        "ACTIONCAGE_POOL_SIZE": "0",
        # Callbacks to the loopback receiver are allowed.
        "ACTIONCAGE_EGRESS_ALLOWED_CIDRS": "127.0.0.0/8",
        # Quick heartbeats so a start-up's and a periodic sweep are seen within seconds;
        # job leases and the reaper keep their defaults (the 30 s promise is the operator's).
        "ACTIONCAGE_HEARTBEAT_INTERVAL_S": str(HEARTBEAT_S),
        "ACTIONCAGE_OWNER_STALE_S": str(STALE_S),
    }
    with fakes.held_llm() as llm:
        # Both start at once on an empty database: each upgrades it at start, safely.
        proc_a, a = spawn(tmp, **env, **llm.serve_env())
        proc_b, b = spawn(tmp, **env)
        try:
            wait_serving(proc_a, a, timeout=90)
            wait_serving(proc_b, b, timeout=90)
            yield Deployment(tmp, env, database_url, a, b, llm)
        finally:
            stop(proc_a)
            stop(proc_b)


def _instances(deployment: Deployment) -> list[InstanceRow]:
    store = deployment.store()
    try:
        with store.session() as s:
            return list(s.scalars(select(InstanceRow).order_by(InstanceRow.started_at)))
    finally:
        store.dispose()


def _swept_once(deployment: Deployment, instance_id: str) -> bool:
    """True once the instance has heartbeaten past one stale window since it started: its
    periodic sweep of dead owners' sandboxes has run at least once."""
    row = next((r for r in _instances(deployment) if r.id == instance_id), None)
    return row is not None and row.heartbeat_at - row.started_at > timedelta(seconds=STALE_S + 0.5)


def _run(base: str, run_id: str) -> dict[str, Any]:
    resp = http.get(f"{base}/v1/runs/{run_id}", headers=AUTH, timeout=10)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def _create(base: str, name: str, code: str, headers: dict[str, str] = AUTH) -> None:
    resp = http.post(
        f"{base}/v1/actions", json={"name": name, "code": code}, headers=headers, timeout=30
    )
    assert resp.status_code == 201, resp.text


def test_an_org_limited_to_10_runs_a_minute_gets_exactly_10_whichever_process_answers(
    deployment: Deployment,
) -> None:
    _key_id, secret = deployment.new_key("limited")
    headers = {"Authorization": f"Bearer {secret}"}
    out = deployment.cli("org", "set-policy", "limited", "--runs-per-minute", "10")
    assert json.loads(out.stdout)["runs_per_minute"] == 10
    _create(deployment.a, "ok", OK, headers)
    answers = [
        http.post(f"{base}/v1/actions/ok/execute", json={"args": {}}, headers=headers, timeout=90)
        for base in [deployment.a, deployment.b] * 7
    ]
    assert [r.status_code for r in answers] == [200] * 10 + [429] * 4, [r.text for r in answers]
    assert all(r.json()["status"] == "ok" and r.json()["output"] == 1 for r in answers[:10])
    for refused in answers[10:]:
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert refused.json()["error"]["type"] == "rate_limited"
    # Another org is not limited by this one's count.
    _create(deployment.b, "ok", OK)
    other = http.post(
        f"{deployment.b}/v1/actions/ok/execute", json={"args": {}}, headers=AUTH, timeout=90
    )
    assert other.status_code == 200 and other.json()["output"] == 1, other.text


def test_an_action_changed_through_one_process_is_run_changed_by_both_within_a_second(
    deployment: Deployment,
) -> None:
    _key_id, secret = deployment.new_key("editing")
    headers = {"Authorization": f"Bearer {secret}"}

    def needs(x: str) -> dict[str, Any]:
        return {"type": "object", "required": [x], "properties": {x: {"type": "integer"}}}

    def missing(base: str) -> str:
        """The argument a call with none is refused for (invalid_args: no sandbox starts)."""
        resp = http.post(
            f"{base}/v1/actions/edited/execute", json={"args": {}}, headers=headers, timeout=30
        )
        assert resp.status_code == 422 and resp.json()["error"]["type"] == "invalid_args"
        return str(resp.json()["error"]["message"]).split("'")[1]

    created = http.post(
        f"{deployment.a}/v1/actions",
        json={"name": "edited", "code": OK, "parameters": needs("x")},
        headers=headers,
        timeout=30,
    )
    assert created.status_code == 201, created.text
    # Both processes now hold the action (and the org's policy) in memory.
    assert missing(deployment.a) == "x" and missing(deployment.b) == "x"
    patched = http.patch(
        f"{deployment.b}/v1/actions/{created.json()['id']}",
        json={"parameters": needs("y")},
        headers=headers,
        timeout=30,
    )
    assert patched.status_code == 200, patched.text
    changed_at = time.monotonic()
    assert missing(deployment.b) == "y"  # the process that wrote it: at once
    assert wait_for(lambda: missing(deployment.a) == "y", timeout=1.0)
    assert time.monotonic() - changed_at < 2.0


def test_a_key_revoked_with_the_cli_is_refused_by_both_processes_within_a_second(
    deployment: Deployment,
) -> None:
    key_id, secret = deployment.new_key("revoking")
    headers = {"Authorization": f"Bearer {secret}"}

    def status(base: str) -> int:
        return http.get(f"{base}/v1/actions", headers=headers, timeout=10).status_code

    # Both processes now trust the key from their caches.
    assert status(deployment.a) == 200 and status(deployment.b) == 200
    out = deployment.cli("keys", "revoke", key_id)
    assert f"key {key_id} of org revoking revoked at" in out.stdout
    revoked_at = time.monotonic()
    assert wait_for(lambda: status(deployment.b) == 401, timeout=1.0)
    assert wait_for(lambda: status(deployment.a) == 401, timeout=1.0)
    assert time.monotonic() - revoked_at < 2.0
    resp = http.get(f"{deployment.a}/v1/actions", headers=headers, timeout=10)
    assert resp.json()["error"]["type"] == "unauthorized"
    # The other keys still work on both.
    assert http.get(f"{deployment.a}/v1/actions", headers=AUTH, timeout=10).status_code == 200
    assert http.get(f"{deployment.b}/v1/actions", headers=AUTH, timeout=10).status_code == 200


def _run_containers(client: docker.DockerClient, run_id: str, all_: bool = True) -> list[Any]:
    labels = [f"io.actioncage.run-id={run_id}", f"{TEST_LABEL}={SESSION}"]
    found: list[Any] = client.containers.list(
        ignore_removed=True, all=all_, filters={"label": labels}
    )
    return found


def test_starting_a_third_process_leaves_a_run_in_flight_on_the_first_ok(
    deployment: Deployment, docker_client: docker.DockerClient
) -> None:
    llm = deployment.llm
    _create(deployment.a, "held", fakes.held_code("held"))
    answers: list[requests.Response] = []
    run = threading.Thread(
        target=lambda: answers.append(
            http.post(f"{deployment.a}/v1/actions/held/execute", headers=AUTH, json={}, timeout=120)
        )
    )
    run.start()
    try:
        # The run is in its sandbox, inside its host call, until released.
        assert llm.wait_entered(1), [a.text for a in answers]
        before = {r.id for r in _instances(deployment)}
        with served_process(deployment.tmp, **deployment.env) as (third, _proc):
            (third_id,) = [r.id for r in _instances(deployment) if r.id not in before]
            # Its start-up sweep is done (it serves) and one periodic sweep has run too.
            assert wait_for(lambda: _swept_once(deployment, third_id), timeout=30)
            # It serves the same product meanwhile.
            assert http.get(f"{third}/v1/actions/held", headers=AUTH, timeout=10).ok
        assert not answers, [a.text for a in answers]  # still held: nothing killed it
    finally:
        llm.release()
        run.join(timeout=120)
    assert answers and answers[0].status_code == 200, answers
    assert answers[0].json()["status"] == "ok", answers[0].json()
    assert answers[0].json()["output"] == "held"


@contextlib.contextmanager
def _removing_containers_of(client: docker.DockerClient, run_id: list[str]) -> Iterator[None]:
    """A killed process leaves its run's container behind: remove it at the end."""
    try:
        yield
    finally:
        for rid in run_id:
            for c in _run_containers(client, rid):
                with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                    c.remove(force=True)


def test_a_sigkilled_process_s_background_run_ends_executor_lost_on_a_survivor_called_back_once(
    deployment: Deployment, docker_client: docker.DockerClient
) -> None:
    receiver = Receiver()
    run_ids: list[str] = []
    with (
        fakes.held_llm() as llm,
        _removing_containers_of(docker_client, run_ids),
        contextlib.closing(receiver),
    ):
        # A third process joins the deployment; it will hold a background run and die.
        proc, victim = spawn(deployment.tmp, **deployment.env, **llm.serve_env())
        try:
            wait_serving(proc, victim, timeout=90)
            _create(victim, "bg", fakes.held_code("never"))
            resp = http.post(
                f"{victim}/v1/actions/bg/execute",
                json={"args": {}, "waitMs": 0, "callbackUrl": receiver.url},
                headers=AUTH,
                timeout=30,
            )
            assert resp.status_code == 202, resp.text
            run_id: str = resp.json()["runId"]
            run_ids.append(run_id)
            assert llm.wait_entered(1)  # in its sandbox, held
            assert _run(deployment.a, run_id)["status"] == "running"
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            killed_at = time.monotonic()
        finally:
            stop(proc)

        # A survivor ends it within 30 s, as sandbox_error, without running it again.
        assert wait_for(lambda: _run(deployment.b, run_id)["status"] != "running", timeout=30)
        ended_after_s = time.monotonic() - killed_at
        record = _run(deployment.a, run_id)
        assert record["status"] == "error", record
        assert record["error"] == {"type": "sandbox_error", "message": EXECUTOR_LOST}, record
        assert record["finishedAt"] is not None
        print(f"the killed process's run ended {ended_after_s:.1f} s after SIGKILL")

        # Its callback is delivered exactly once (by a survivor), and the outbox says done.
        assert wait_for(lambda: len(receiver.received) >= 1, timeout=30)
        store = deployment.store()
        try:
            assert wait_for(lambda: _delivered(store, run_id), timeout=30)
            with store.session() as s:
                (callback,) = outbox_repo.callbacks_for_run(s, run_id)
                job = jobs_repo.find_job(s, run_id)
        finally:
            store.dispose()
        assert callback.attempts == 1
        assert job is not None and job.state == jobs_repo.DONE
        ((_headers, body),) = receiver.received
        sent = json.loads(body)
        assert sent["runId"] == run_id and sent["error"]["type"] == "sandbox_error"
        # Never re-run: the only container the run ever had is the dead process's.
        assert len(_run_containers(docker_client, run_id)) <= 1
        assert llm.wait_entered(1) and not llm.wait_entered(2, timeout=0)


def _delivered(store: Store, run_id: str) -> bool:
    with store.session() as s:
        rows = outbox_repo.callbacks_for_run(s, run_id)
    return len(rows) == 1 and rows[0].state == outbox_repo.DELIVERED
