"""Background engine work (removals, pool refills) waits for the runs in flight, never past
its bound."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from flask import Flask

from actioncage import create_app
from actioncage.models import Policy
from actioncage.sandbox.foreground import Foreground
from actioncage.sandbox.limits import RUN_ID_LABEL, effective_limits
from tests.conftest import API_KEY, SESSION, TEST_LABEL, make_settings, wait_for

HEADERS = {"Authorization": f"Bearer {API_KEY}"}
CODE = "def execute_action(context):\n    return {'ok': True}\n"


def test_wait_quiet_returns_at_once_when_no_run_is_in_flight() -> None:
    foreground = Foreground(max_defer_ms=60_000)
    began = time.monotonic()
    assert foreground.wait_quiet() is True
    assert time.monotonic() - began < 5 and foreground.deferred == 0


def test_wait_quiet_waits_for_the_last_run_in_flight() -> None:
    foreground = Foreground(max_defer_ms=60_000)
    answers: list[bool] = []
    waiter = threading.Thread(target=lambda: answers.append(foreground.wait_quiet()))
    with foreground.run():
        with foreground.run():
            waiter.start()
            assert wait_for(lambda: foreground.deferred == 1, timeout=30)
        assert foreground.active == 1 and waiter.is_alive() and not answers
    waiter.join(timeout=10)
    assert answers == [True] and foreground.overdue == 0


def test_wait_quiet_goes_ahead_at_the_bound_counted_from_when_the_work_was_queued() -> None:
    foreground = Foreground(max_defer_ms=300)
    with foreground.run():
        began = time.monotonic()
        assert foreground.wait_quiet() is False
        assert time.monotonic() - began >= 0.3
        # Work queued long enough ago does not wait at all.
        assert foreground.wait_quiet(since=time.monotonic() - 1) is False
    assert foreground.overdue == 2


def test_on_quiet_is_called_when_the_last_run_ends() -> None:
    foreground = Foreground(max_defer_ms=60_000)
    calls: list[int] = []
    foreground.on_quiet(lambda: calls.append(foreground.active))
    with foreground.run():
        with foreground.run():
            pass
        assert calls == []
    assert calls == [0]


@pytest.fixture
def deferring_app(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Flask]:
    overrides: dict[str, Any] = {"engine_work_defer_ms": 60_000, **getattr(request, "param", {})}
    app = create_app(make_settings(tmp_path, **overrides))
    yield app
    app.extensions["actioncage"].close()


def _execute(app: Flask, code: str = CODE) -> str:
    client = app.test_client()
    created = client.post("/v1/actions", json={"name": "a", "code": code}, headers=HEADERS)
    assert created.status_code in (201, 409), created.get_json()
    resp = client.post("/v1/actions/a/execute", json={}, headers=HEADERS)
    assert resp.status_code == 200 and resp.get_json()["status"] == "ok", resp.get_json()
    return str(resp.get_json()["runId"])


def _containers_of(docker_client: docker.DockerClient, run_id: str) -> list[Any]:
    # The summaries of one list call: no per-container inspect to race the removal.
    found: list[Any] = docker_client.api.containers(
        all=True, filters={"label": [f"{RUN_ID_LABEL}={run_id}", f"{TEST_LABEL}={SESSION}"]}
    )
    return found


@pytest.mark.docker
def test_a_used_container_is_removed_once_no_run_is_in_flight(
    deferring_app: Flask, docker_client: docker.DockerClient
) -> None:
    runner = deferring_app.extensions["actioncage"].runner
    with runner.foreground.run():  # another caller's run, still going
        run_id = _execute(deferring_app)
        assert wait_for(lambda: runner.foreground.deferred >= 1, timeout=30)
        assert len(_containers_of(docker_client, run_id)) == 1
    assert wait_for(lambda: not _containers_of(docker_client, run_id), timeout=30)
    assert runner.foreground.overdue == 0


@pytest.mark.docker
@pytest.mark.parametrize("deferring_app", [{"engine_work_defer_ms": 200}], indirect=True)
def test_a_removal_is_never_put_off_past_the_bound(
    deferring_app: Flask, docker_client: docker.DockerClient
) -> None:
    runner = deferring_app.extensions["actioncage"].runner
    with runner.foreground.run():  # runs stay in flight for longer than the bound
        run_id = _execute(deferring_app)
        assert wait_for(lambda: not _containers_of(docker_client, run_id), timeout=30)
        assert runner.foreground.overdue >= 1


@pytest.mark.docker
@pytest.mark.parametrize("deferring_app", [{"pool_size": 2}], indirect=True)
def test_a_pool_with_sandboxes_left_refills_once_no_run_is_in_flight(
    deferring_app: Flask,
) -> None:
    components = deferring_app.extensions["actioncage"]
    settings = components.settings
    options = effective_limits(Policy(), settings)
    pool, runner = components.pool, components.runner
    assert pool.wait_ready(options, 2, timeout=60), pool.stats()
    with runner.foreground.run():
        _execute(deferring_app)
        assert runner.warm_starts == 1
        # The starter saw the gap and waits for the run in flight (as does the removal of
        # the used sandbox) instead of starting a replacement now.
        assert wait_for(
            lambda: runner.foreground.deferred >= 2 and pool.stats()[0].starting, timeout=30
        )
        stats = pool.stats()[0]
        assert (stats.ready, stats.starting) == (1, 1)
        assert not pool.wait_ready(options, 2, timeout=1.5)
    assert pool.wait_ready(options, 2, timeout=60), pool.stats()


def test_hold_marks_a_run_in_flight_until_released_once() -> None:
    foreground = Foreground(max_defer_ms=60_000)
    quiet_calls: list[int] = []
    foreground.on_quiet(lambda: quiet_calls.append(foreground.active))
    release = foreground.hold()
    with foreground.run():
        assert foreground.active == 2
    assert foreground.active == 1 and quiet_calls == []
    release()
    release()  # a second call changes nothing
    assert foreground.active == 0 and quiet_calls == [0]
    with foreground.run():
        pass
    assert foreground.active == 0 and quiet_calls == [0, 0]


def test_after_this_run_waits_for_the_outermost_run_in_flight_on_its_thread() -> None:
    """What a run starts elsewhere at its end (a worker's outcome acknowledgement) waits for
    the request holding it: its response is still being written."""
    foreground = Foreground(max_defer_ms=60_000)
    called: list[str] = []
    foreground.after_this_run(lambda: called.append("none in flight"))
    assert called == ["none in flight"]

    def failing() -> None:
        raise RuntimeError("a broken callback")

    responding = foreground.hold()  # the request, until its response is written
    with foreground.run():  # its run
        foreground.after_this_run(failing)
        foreground.after_this_run(lambda: called.append("acknowledged"))
    assert called == ["none in flight"], "called as the run ended, before its response"
    elsewhere = threading.Thread(
        target=foreground.after_this_run, args=(lambda: called.append("another thread"),)
    )
    elsewhere.start()
    elsewhere.join()
    assert called == ["none in flight", "another thread"]  # no run in flight there
    responding()
    assert called == ["none in flight", "another thread", "acknowledged"]
    assert foreground.active == 0
    responding()  # once only
    assert called == ["none in flight", "another thread", "acknowledged"]


def test_after_this_run_goes_to_the_outermost_run_after_an_inner_one_ended() -> None:
    """Each run in flight keeps its own list, found by identity: an inner run that ended with
    nothing to call leaves the outer one's list in place, empty as it is."""
    foreground = Foreground(max_defer_ms=60_000)
    called: list[str] = []
    responding = foreground.hold()
    with foreground.run():
        pass
    foreground.after_this_run(lambda: called.append("acknowledged"))
    assert called == []
    responding()
    assert called == ["acknowledged"]
