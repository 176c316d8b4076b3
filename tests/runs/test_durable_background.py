"""Durable background runs across real `actioncage serve` processes sharing one database:
a SIGKILLed process's run is ended by the survivor and its callback delivered once; a
SIGTERMed process finishes the run it holds."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
import requests

from actioncage.store import Store
from actioncage.store import callbacks as outbox_repo
from actioncage.store import jobs as jobs_repo
from tests import fakes
from tests.conftest import wait_for
from tests.runs.conftest import Receiver
from tests.served import served_process

KEY = "durable-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
HOLD = "import time\ndef execute_action(context):\n    time.sleep(3600)\n"


@pytest.fixture(params=["sqlite"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The database both processes share (PostgreSQL joins as another param)."""
    assert request.param == "sqlite"
    return f"sqlite:///{tmp_path / 'shared.db'}"


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    """The test's own view of the shared database."""
    s = Store(database_url)
    yield s
    s.dispose()


def _env(database_url: str) -> dict[str, str]:
    return {
        "ACTIONCAGE_DATABASE_URL": database_url,
        "ACTIONCAGE_API_KEY": KEY,
        "ACTIONCAGE_POOL_SIZE": "0",
        "ACTIONCAGE_EGRESS_ALLOWED_CIDRS": "127.0.0.0/8",
        # Defaults for the lease (15 s) and the reaper (every 5 s): the 30 s promise holds
        # with what an operator gets.
    }


def _run(base: str, run_id: str) -> dict[str, Any]:
    body: dict[str, Any] = requests.get(f"{base}/v1/runs/{run_id}", headers=AUTH, timeout=10).json()
    return body


def _running_container(client: docker.DockerClient, run_id: str) -> bool:
    return bool(
        client.containers.list(
            ignore_removed=True, filters={"label": f"io.actioncage.run-id={run_id}"}
        )
    )


@contextlib.contextmanager
def _removing_containers_of(client: docker.DockerClient, run_id: str) -> Iterator[None]:
    """A killed process leaves its run's container; remove it at the end."""
    try:
        yield
    finally:
        for c in client.containers.list(
            ignore_removed=True, all=True, filters={"label": f"io.actioncage.run-id={run_id}"}
        ):
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                c.remove(force=True)


def _answers(base: str) -> bool:
    try:
        requests.get(f"{base}/health", timeout=5)
    except requests.ConnectionError:
        return False
    return True


def _start_background(base: str, code: str, callback_url: str) -> str:
    created = requests.post(
        f"{base}/v1/actions", json={"name": "bg", "code": code}, headers=AUTH, timeout=10
    )
    assert created.status_code == 201, created.text
    resp = requests.post(
        f"{base}/v1/actions/bg/execute",
        json={"args": {}, "waitMs": 0, "callbackUrl": callback_url},
        headers=AUTH,
        timeout=30,
    )
    assert resp.status_code == 202, resp.text
    run_id: str = resp.json()["runId"]
    return run_id


def _signed_by(base: str, headers: dict[str, str], body: bytes) -> bool:
    secret = requests.get(f"{base}/v1/webhook-secret", headers=AUTH, timeout=10).json()[
        "webhookSecret"
    ]
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(headers["X-Actioncage-Signature"], expected)


@pytest.mark.docker
def test_a_sigkilled_process_s_background_run_ends_sandbox_error_within_30_s_handled_by_the_survivor(
    tmp_path: Path,
    database_url: str,
    store: Store,
    receiver: Receiver,
    docker_client: docker.DockerClient,
) -> None:
    env = _env(database_url)
    # Both start before the run: a starting process sweeps this session's containers.
    with (
        served_process(tmp_path, **env) as (base_a, proc_a),
        served_process(tmp_path, **env) as (base_b, _proc_b),
    ):
        run_id = _start_background(base_a, HOLD, receiver.url)
        with _removing_containers_of(docker_client, run_id):
            assert wait_for(lambda: _running_container(docker_client, run_id), timeout=60)
            assert _run(base_b, run_id)["status"] == "running"
            proc_a.send_signal(signal.SIGKILL)
            proc_a.wait(timeout=10)
            killed_at = time.monotonic()

            assert wait_for(lambda: _run(base_b, run_id)["status"] != "running", timeout=30)
            ended_after_s = time.monotonic() - killed_at
            run = _run(base_b, run_id)
            assert run["status"] == "error", run
            assert run["error"]["type"] == "sandbox_error"
            assert "executor lost" in run["error"]["message"]
            print(f"the dead process's run ended {ended_after_s:.1f} s after SIGKILL")

            # Its callback is delivered once, by the survivor, signed.
            assert wait_for(lambda: len(receiver.received) >= 1, timeout=30)
            with store.session() as s:
                (callback,) = outbox_repo.callbacks_for_run(s, run_id)
                job = jobs_repo.find_job(s, run_id)
            assert callback.state == outbox_repo.DELIVERED and callback.attempts == 1
            assert job is not None and job.state == jobs_repo.DONE
            ((headers, body),) = receiver.received
            assert json.loads(body)["runId"] == run_id
            assert json.loads(body)["error"]["type"] == "sandbox_error"
            assert _signed_by(base_b, headers, body)
            # Never re-run: the only container the run ever had is the dead process's.
            assert (
                len(
                    docker_client.containers.list(
                        ignore_removed=True,
                        all=True,
                        filters={"label": f"io.actioncage.run-id={run_id}"},
                    )
                )
                <= 1
            )


@pytest.mark.docker
def test_a_sigtermed_process_finishes_the_background_run_it_holds(
    tmp_path: Path,
    database_url: str,
    store: Store,
    receiver: Receiver,
    docker_client: docker.DockerClient,
) -> None:
    with (
        fakes.held_llm() as llm,
        served_process(tmp_path, **_env(database_url), **llm.serve_env()) as (base, proc),
    ):
        # The run is held in its LLM call until the process is shutting down.
        run_id = _start_background(base, fakes.held_code("done"), receiver.url)
        with _removing_containers_of(docker_client, run_id):
            assert llm.wait_entered(1)
            proc.send_signal(signal.SIGTERM)
            # It stopped listening: it is shutting down, and still holds the run.
            assert wait_for(lambda: not _answers(base), timeout=60)
            assert proc.poll() is None
            llm.release()
            assert proc.wait(timeout=60) == 0
    with store.session() as s:
        job = jobs_repo.find_job(s, run_id)
        (callback,) = outbox_repo.callbacks_for_run(s, run_id)
    assert job is not None and job.state == jobs_repo.DONE
    body = json.loads(callback.body)
    assert body["status"] == "ok" and body["output"] == "done"
    # Its callback went out before the process exited.
    assert callback.state == outbox_repo.DELIVERED
    assert [json.loads(b)["runId"] for _h, b in receiver.received] == [run_id]
