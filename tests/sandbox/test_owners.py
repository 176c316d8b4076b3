"""Owners: a second `actioncage serve` never touches a live server's sandboxes; a dead one's
are swept. Real `serve` processes, real HTTP, the real engine and a shared database."""

from __future__ import annotations

import signal
import subprocess
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import docker
import pytest
import requests
from sqlalchemy import select

from actioncage.sandbox.limits import MANAGED_LABEL, OWNER_LABEL
from actioncage.store import Store
from actioncage.store.schema import InstanceRow
from tests import fakes
from tests.conftest import SESSION, TEST_LABEL, wait_for
from tests.served import ACTIONCAGE, serve_env, served, spawn, stop, wait_serving

pytestmark = pytest.mark.docker
KEY = "owners-key"
HEADERS = {"Authorization": f"Bearer {KEY}"}
# Fast heartbeats, so a killed owner is dead (and its sandboxes swept) within a second.
OWNERS_ENV = {
    "ACTIONCAGE_API_KEY": KEY,
    "ACTIONCAGE_POOL_SIZE": "1",
    "ACTIONCAGE_HEARTBEAT_INTERVAL_S": "0.2",
    "ACTIONCAGE_OWNER_STALE_S": "1",
}
HELD_CODE = (
    "def execute_action(context):\n"
    "    return {'verdict': llm_classify_binary('Hold?', 'until the test says so')}\n"
)


@pytest.fixture
def held_llm() -> Iterator[fakes.HeldLlm]:
    with fakes.held_llm() as llm:
        yield llm


def _containers(client: docker.DockerClient, owner: str | None = None) -> set[str]:
    """Ids of this session's sandbox containers (of ``owner`` only, when given)."""
    labels = [f"{MANAGED_LABEL}=true", f"{TEST_LABEL}={SESSION}"]
    if owner is not None:
        labels.append(f"{OWNER_LABEL}={owner}")
    return {c["Id"] for c in client.api.containers(all=True, filters={"label": labels})}


def _instances(tmp_path: Path) -> list[InstanceRow]:
    store = Store(serve_env(tmp_path)["ACTIONCAGE_DATABASE_URL"])
    try:
        with store.session() as s:
            return list(s.scalars(select(InstanceRow).order_by(InstanceRow.started_at)))
    finally:
        store.dispose()


def _pool_ready(base: str) -> bool:
    text = requests.get(base + "/metrics", timeout=10).text
    return 'actioncage_pool_ready{profile="default"} 1.0' in text


def _swept_once(tmp_path: Path, instance_id: str) -> bool:
    """True once the instance's heartbeat thread has passed one stale window and beaten
    again: its periodic sweep has run at least once."""
    row = next((r for r in _instances(tmp_path) if r.id == instance_id), None)
    window = timedelta(seconds=float(OWNERS_ENV["ACTIONCAGE_OWNER_STALE_S"]) + 0.4)
    return row is not None and row.heartbeat_at - row.started_at > window


def test_a_second_server_leaves_the_first_ones_run_and_warm_pool_alone(
    tmp_path: Path, docker_client: docker.DockerClient, held_llm: fakes.HeldLlm
) -> None:
    llm = held_llm
    # Its default run deadline (the warm pool's profile) lets the held run last.
    env = {**OWNERS_ENV, **llm.serve_env()}
    with served(tmp_path, **env) as first:
        (first_id,) = [r.id for r in _instances(tmp_path)]
        created = requests.post(
            first + "/v1/actions",
            headers=HEADERS,
            json={"name": "held", "code": HELD_CODE},
            timeout=10,
        )
        assert created.status_code == 201, created.text
        assert wait_for(lambda: _pool_ready(first), timeout=60)
        answers: list[requests.Response] = []
        run = threading.Thread(
            target=lambda: answers.append(
                requests.post(
                    first + "/v1/actions/held/execute", headers=HEADERS, json={}, timeout=90
                )
            )
        )
        run.start()
        try:
            # The run is in flight, inside its host call.
            assert llm.entered.wait(timeout=60), [a.text for a in answers]
            assert wait_for(lambda: _pool_ready(first), timeout=60)  # and the pool refilled
            before = _containers(docker_client, first_id)
            assert len(before) == 2  # the run's sandbox and a warm one
            with served(tmp_path, **env):
                (second_id,) = [r.id for r in _instances(tmp_path) if r.id != first_id]
                assert wait_for(lambda: _swept_once(tmp_path, second_id), timeout=30)
                assert _containers(docker_client, first_id) == before
        finally:
            llm.release()
            run.join(timeout=90)
        assert answers and answers[0].status_code == 200, answers
        assert answers[0].json()["status"] == "ok", answers[0].json()
        assert answers[0].json()["output"] == {"verdict": True}
        # Only the used sandbox went; the warm one is still there.
        assert wait_for(lambda: len(_containers(docker_client, first_id) & before) == 1)
        assert _pool_ready(first)


def test_starting_on_a_port_in_use_fails_before_touching_any_container(
    tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    with served(tmp_path, **OWNERS_ENV) as first:
        (first_id,) = [r.id for r in _instances(tmp_path)]
        assert wait_for(lambda: _pool_ready(first), timeout=60)
        before = _containers(docker_client)
        port = first.rsplit(":", 1)[1]
        out = subprocess.run(
            [*ACTIONCAGE, "serve"],
            env=serve_env(tmp_path, ACTIONCAGE_PORT=port, **OWNERS_ENV),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 2, out.stderr
        assert f"cannot listen on 127.0.0.1:{port}: address already in use" in out.stderr
        assert "serving on" not in out.stderr
        # It never registered, started or removed anything.
        assert [r.id for r in _instances(tmp_path)] == [first_id]
        assert _containers(docker_client) == before
        assert requests.get(first + "/health", timeout=10).status_code == 200


def test_a_killed_servers_sandboxes_are_swept_by_the_next_start(
    tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    proc, base = spawn(tmp_path, **OWNERS_ENV)
    try:
        wait_serving(proc, base)
        (dead_id,) = [r.id for r in _instances(tmp_path)]
        assert wait_for(lambda: _pool_ready(base), timeout=60)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        stop(proc)
    left = _containers(docker_client, dead_id)
    assert left  # the warm sandbox outlived its owner
    with served(tmp_path, **OWNERS_ENV) as second:
        assert wait_for(lambda: not _containers(docker_client, dead_id), timeout=30)
        assert wait_for(lambda: _pool_ready(second), timeout=60)  # its own pool is untouched
    # The dead owner's row stays (stale); the clean one's was removed at its shutdown.
    assert [r.id for r in _instances(tmp_path)] == [dead_id]
