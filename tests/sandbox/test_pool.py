"""The warm pool: single use, preloaded, deadline from the envelope, recycling, cap, cleanup."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from flask import Flask
from flask.testing import FlaskClient

from actioncage import create_app
from actioncage.models import EffectiveLimits, Policy
from actioncage.sandbox.limits import effective_limits
from tests.conftest import API_KEY, make_settings, sandbox_subject, session_containers, wait_for

pytestmark = [pytest.mark.docker, sandbox_subject]
HEADERS = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture
def pool_app(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Flask]:
    overrides: dict[str, Any] = {"pool_size": 2, **getattr(request, "param", {})}
    app = create_app(make_settings(tmp_path, **overrides))
    yield app
    app.extensions["actioncage"].close()


def _default_limits(app: Flask) -> EffectiveLimits:
    return effective_limits(Policy(), app.extensions["actioncage"].settings)


def _wait_ready(app: Flask, count: int = 1) -> None:
    pool = app.extensions["actioncage"].pool
    assert pool.wait_ready(_default_limits(app), count, timeout=60), pool.stats()


def _execute(client: FlaskClient, action_id: str) -> dict[str, Any]:
    resp = client.post(f"/v1/actions/{action_id}/execute", json={}, headers=HEADERS)
    assert resp.status_code == 200, resp.get_json()
    body: dict[str, Any] = resp.get_json()
    return body


def _action(client: FlaskClient, code: str, name: str = "a", **fields: Any) -> str:
    resp = client.post("/v1/actions", json={"name": name, "code": code, **fields}, headers=HEADERS)
    assert resp.status_code == 201, resp.get_json()
    return str(resp.get_json()["id"])


def test_warm_runs_see_nothing_a_previous_run_left(pool_app: Flask) -> None:
    client = pool_app.test_client()
    action = _action(
        client,
        "import os, sys\n"
        "MARK = '/tmp/marker'\n"
        "def execute_action(context):\n"
        "    seen = os.path.exists(MARK)\n"
        "    open(MARK, 'w').write('x')\n"
        "    import builtins\n"
        "    had = hasattr(builtins, 'leak')\n"
        "    builtins.leak = True\n"
        "    sys.modules['requests'].leak = True\n"
        "    return {'seen': seen, 'had': had, 'host': os.uname().nodename}\n",
    )
    runner = pool_app.extensions["actioncage"].runner
    outputs = []
    for _ in range(3):
        _wait_ready(pool_app)
        outputs.append(_execute(client, action)["output"])
    assert outputs == [{"seen": False, "had": False, "host": "sandbox"}] * 3
    assert runner.warm_starts == 3 and runner.cold_starts == 0


def test_warm_sandbox_has_requests_and_holidays_imported(pool_app: Flask) -> None:
    client = pool_app.test_client()
    action = _action(
        client,
        "import sys\n"
        "def execute_action(context):\n"
        "    return sorted(m for m in ('requests', 'holidays') if m in sys.modules)\n",
    )
    _wait_ready(pool_app)
    assert _execute(client, action)["output"] == ["holidays", "requests"]


def test_deadline_counts_from_the_envelope_not_from_the_start(pool_app: Flask) -> None:
    client = pool_app.test_client()
    action = _action(
        client,
        "import time\ndef execute_action(context):\n    time.sleep(0.5)\n    return 'done'\n",
        policy={"timeoutMs": 1000},
    )
    _wait_ready(pool_app)
    # The behaviour under test is idle time: the warm sandbox idles past the run's deadline.
    time.sleep(1.5)
    run = _execute(client, action)
    assert run["status"] == "ok" and run["output"] == "done", run


def test_a_new_profile_falls_back_to_a_cold_start_at_once(pool_app: Flask) -> None:
    client = pool_app.test_client()
    action = _action(
        client, "def execute_action(context):\n    return 1\n", policy={"memoryMb": 96}
    )
    run = _execute(client, action)
    assert run["output"] == 1
    assert pool_app.extensions["actioncage"].runner.cold_starts == 1


@pytest.mark.parametrize("pool_app", [{"pool_max_idle_s": 0.5}], indirect=True)
def test_idle_sandboxes_are_recycled(pool_app: Flask) -> None:
    pool = pool_app.extensions["actioncage"].pool
    assert wait_for(lambda: pool.recycled >= 2), pool.stats()
    _wait_ready(pool_app)  # and replaced


@pytest.mark.parametrize("pool_app", [{"pool_size": 3, "max_live_containers": 1}], indirect=True)
def test_the_live_container_cap_bounds_the_pool(pool_app: Flask) -> None:
    components = pool_app.extensions["actioncage"]
    _wait_ready(pool_app, 1)
    stats = components.pool.stats()
    assert [(s.ready, s.starting) for s in stats] == [(1, 0)]
    assert components.runner.live_containers == 1
    # A run still gets a sandbox: the warm one, and the pool refills after its removal.
    action = _action(pool_app.test_client(), "def execute_action(context):\n    return 2\n")
    assert _execute(pool_app.test_client(), action)["output"] == 2
    _wait_ready(pool_app, 1)
    assert components.runner.live_containers <= 1


def test_closing_the_app_removes_every_sandbox(
    tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    app = create_app(make_settings(tmp_path, pool_size=2))
    _wait_ready(app, 2)
    assert len(session_containers(docker_client)) >= 2
    client = app.test_client()
    action = _action(client, "def execute_action(context):\n    return 3\n")
    assert _execute(client, action)["output"] == 3
    app.extensions["actioncage"].close()
    assert session_containers(docker_client) == []


def test_metrics_show_pool_and_runs(pool_app: Flask) -> None:
    client = pool_app.test_client()
    action = _action(client, "def execute_action(context):\n    return 4\n")
    _wait_ready(pool_app)
    _execute(client, action)
    resp = client.get("/metrics")
    assert resp.status_code == 200 and resp.mimetype == "text/plain"
    text = resp.get_data(as_text=True)
    assert 'actioncage_runs_total{error_type="",status="ok"} 1.0' in text
    assert "actioncage_warm_starts_total 1.0" in text
    assert 'actioncage_pool_ready{profile="default"}' in text
    assert "actioncage_run_duration_seconds_bucket" in text
    assert "actioncage_live_containers" in text and "actioncage_run_queue_depth 0.0" in text


@pytest.mark.parametrize(
    "pool_app", [{"pool_size": 1, "pool_pressure_window_s": 600}], indirect=True
)
def test_a_drained_pool_starts_lean_sandboxes_and_they_still_run(pool_app: Flask) -> None:
    components = pool_app.extensions["actioncage"]
    client = pool_app.test_client()
    action = _action(client, "def execute_action(context):\n    return 5\n")
    _wait_ready(pool_app)
    # The second run finds the pool drained while its replacement starts: pressure.
    assert [_execute(client, action)["output"] for _ in range(2)] == [5, 5]
    assert components.runner.cold_starts == 1
    _wait_ready(pool_app)
    # This take's replacement starts within the pressure window: lean, without the preload.
    assert _execute(client, action)["output"] == 5
    assert wait_for(lambda: components.pool.lean_starts >= 1)
    _wait_ready(pool_app)
    lean = _execute(
        client,
        _action(
            client,
            "import sys\ndef execute_action(context):\n    return 'requests' in sys.modules\n",
            name="b",
        ),
    )
    assert lean["output"] is False and components.runner.warm_starts == 3


@pytest.mark.parametrize(
    "pool_app", [{"pool_size": 3, "pool_pressure_window_s": 600}], indirect=True
)
def test_under_pressure_the_pool_starts_one_sandbox_at_a_time(pool_app: Flask) -> None:
    components = pool_app.extensions["actioncage"]
    client = pool_app.test_client()
    action = _action(client, "def execute_action(context):\n    return 5\n")
    _wait_ready(pool_app, 3)
    # Drain the pool faster than it refills: the run that finds it empty is pressure.
    while components.runner.cold_starts == 0:
        assert _execute(client, action)["output"] == 5
    _wait_ready(pool_app, 3)
    for _ in range(3):
        assert _execute(client, action)["output"] == 5
    most_starting = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        stats = components.pool.stats()[0]
        most_starting = max(most_starting, stats.starting)
        if stats.ready == 3:
            break
        time.sleep(0.02)
    assert components.pool.stats()[0].ready == 3 and most_starting == 1
