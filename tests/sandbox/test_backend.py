"""The backend protocol: the engine error table, sweeping by owner, the pool over a backend."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

from actioncage.errors import EngineUnavailableError, SandboxError
from actioncage.models import Isolation, Policy
from actioncage.sandbox.backend import Profile, new_owner_id
from actioncage.sandbox.docker.backend import DockerBackend
from actioncage.sandbox.docker.engine import EngineAPIError
from actioncage.sandbox.docker.errors import engine_errors, translate
from actioncage.sandbox.envelope import build_envelope, host_reply
from actioncage.sandbox.foreground import Foreground
from actioncage.sandbox.limits import MANAGED_LABEL, effective_limits
from actioncage.sandbox.pool import WarmPool
from actioncage.sandbox.runner import SandboxRunner
from actioncage.settings import Settings
from tests.conftest import (
    IMAGE,
    SESSION,
    TEST_LABEL,
    make_settings,
    session_containers,
    wait_for,
)
from tests.served import free_port

IMAGE_NAME = "actioncage-sandbox:test"


def _answers() -> bool:
    return True


def _silent() -> bool:
    return False


def test_engine_errors_are_translated_in_one_table() -> None:
    missing = translate(docker.errors.ImageNotFound("gone"), IMAGE_NAME, _answers)
    assert isinstance(missing, SandboxError)
    assert str(missing) == f"sandbox image {IMAGE_NAME} is missing: run `actioncage image build`"
    no_image = translate(EngineAPIError(404, "No such image: x"), IMAGE_NAME, _answers)
    assert "is missing" in str(no_image)
    conflict = EngineAPIError(409, "name in use")
    assert translate(conflict, IMAGE_NAME, _answers) is conflict  # ours already
    api = translate(docker.errors.APIError("boom"), IMAGE_NAME, _answers)
    assert type(api) is SandboxError and "container engine error: boom" in str(api)
    refused = ConnectionRefusedError(111, "refused")
    assert type(translate(refused, IMAGE_NAME, _silent)) is EngineUnavailableError
    assert type(translate(refused, IMAGE_NAME, _answers)) is SandboxError
    unrelated = ValueError("not the engine's")
    assert translate(unrelated, IMAGE_NAME, _answers) is unrelated
    with pytest.raises(EngineUnavailableError) as caught, engine_errors(IMAGE_NAME, _silent):
        raise BrokenPipeError("engine went away")
    assert isinstance(caught.value.__cause__, BrokenPipeError)


@contextlib.contextmanager
def _backend(settings: Settings, owner: str | None = None) -> Iterator[DockerBackend]:
    backend = DockerBackend(settings, owner or new_owner_id(), Foreground(0))
    try:
        yield backend
    finally:
        backend.close()


def test_an_engine_that_does_not_answer_is_engine_unavailable(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, docker_url=f"tcp://127.0.0.1:{free_port()}")
    with _backend(settings) as backend:
        assert backend.ping() is False
        with pytest.raises(EngineUnavailableError):
            backend.start("nowhere", Profile(effective_limits(Policy(), settings)))


def test_a_tier_on_an_engine_that_does_not_answer_is_unavailable_and_never_raises(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path, docker_url=f"tcp://127.0.0.1:{free_port()}")
    with _backend(settings) as backend:
        for _ in range(2):  # nothing is remembered: the second call asks again
            status = backend.tier(Isolation.GVISOR)
            assert not status.available
            assert status.reason.startswith("no container engine answers: ")
            assert status.reason.count("no container engine answers") == 1


@pytest.mark.docker
def test_a_stale_tier_status_is_answered_at_once_and_refreshed_in_the_background(
    tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    """No run waits for ``docker info`` (or ``runsc --version``): past its time to live, the
    last status is still the answer while a background thread asks the engine again."""
    settings = make_settings(tmp_path)
    backend = DockerBackend(settings, new_owner_id(), Foreground(0), runtimes_ttl_s=0.0)
    try:
        first = backend.tier(Isolation.CONTAINER)  # the first answer is waited for
        assert first.available and first.runtime_version
        assert backend.tier(Isolation.CONTAINER) is first  # stale, answered from memory
        assert wait_for(lambda: backend.tier(Isolation.CONTAINER) is not first, timeout=30)
        assert backend.tier(Isolation.CONTAINER) == first  # the same engine, asked again
    finally:
        backend.close()


@pytest.mark.docker
def test_sweep_takes_only_dead_owners_and_old_unowned_sandboxes(
    tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    settings = make_settings(tmp_path)
    profile = Profile(effective_limits(Policy(), settings))
    with _backend(settings) as live, _backend(settings) as dead, _backend(settings) as sweeper:
        mine = sweeper.start("sweep-mine", profile)
        theirs = live.start("sweep-live", profile)
        left = dead.start("sweep-dead", profile)
        unowned = docker_client.containers.create(
            IMAGE, labels={MANAGED_LABEL: "true", TEST_LABEL: SESSION}, name="actioncage-legacy"
        )
        names = lambda: sorted(c.name for c in session_containers(docker_client))  # noqa: E731
        assert sweeper.sweep({dead.owner_id, sweeper.owner_id}, unowned_older_than_s=3600) == 1
        assert names() == ["actioncage-legacy", "actioncage-sweep-live", "actioncage-sweep-mine"]
        assert sweeper.sweep(set(), unowned_older_than_s=0) == 1
        assert names() == ["actioncage-sweep-live", "actioncage-sweep-mine"]
        assert unowned.id not in {c.id for c in session_containers(docker_client)}
        for sandbox, backend in ((mine, sweeper), (theirs, live), (left, dead)):
            backend.discard(sandbox)


@pytest.mark.docker
def test_the_pool_wraps_a_bare_backend_and_a_runner_runs_through_it(
    tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    settings = make_settings(tmp_path, pool_size=1)
    foreground = Foreground(settings.engine_work_defer_ms)
    pool = WarmPool(settings, DockerBackend(settings, new_owner_id(), foreground), foreground)
    runner = SandboxRunner(pool, foreground)
    limits = effective_limits(Policy(), settings)
    try:
        pool.keep_warm(limits)
        assert pool.wait_ready(limits, 1, timeout=60), pool.stats()
        code = (
            "def execute_action(context):\n"
            "    return [context['args']['n'], llm_classify_binary('p', 'i', fallback=None)]\n"
        )
        line = build_envelope(code, {"n": 7}, None, limits)
        raw = runner.run(
            "pool-over-backend", line, limits, lambda f: host_reply(f["id"], True, True)
        )
        assert raw.result_frame is not None and raw.result_frame.get("output") == [7, True], raw
        assert raw.host_calls == 1 and (runner.warm_starts, runner.cold_starts) == (1, 0)
        assert runner.image_digest().startswith("sha256:") and runner.ping()
    finally:
        pool.close()  # closes the backend it wraps, which finishes every removal
    assert session_containers(docker_client) == []
