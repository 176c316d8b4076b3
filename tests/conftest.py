"""Fixture chain: settings -> app -> client -> auth_headers; plus the real Docker engine.

The database is SQLite, or with ACTIONCAGE_TEST_DB=postgresql a fresh database per test on
a PostgreSQL 15 this session starts (tests/servers.py).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

import docker  # noqa: E402
import docker.errors  # noqa: E402
from flask import Flask  # noqa: E402
from flask.testing import FlaskClient  # noqa: E402

from actioncage import create_app  # noqa: E402
from actioncage.settings import Settings  # noqa: E402
from tests.openapi_check import CheckedClient  # noqa: E402

# Every app's test client, including apps a test makes itself, checks every response it
# receives against the OpenAPI document (tests/openapi_check.py).
Flask.test_client_class = CheckedClient

# Fixtures of the servers tests start: redis_server, redis_url, rabbitmq_server, amqp_url.
pytest_plugins = ["tests.redis_server", "tests.rabbitmq_server"]
from tests import servers  # noqa: E402
from tests.polling import wait_for as wait_for  # noqa: E402  (tests import it from here)

TEST_LABEL = "io.actioncage.test"
# Unique per test session, so parallel sessions on one engine never remove each other's.
SESSION = uuid.uuid4().hex[:12]
IMAGE = os.environ.get("ACTIONCAGE_SANDBOX_IMAGE") or "actioncage-sandbox:latest"
API_KEY = "test-key-org-default"
TEST_DB = os.environ.get("ACTIONCAGE_TEST_DB") or "sqlite"
if TEST_DB not in ("sqlite", "postgresql"):
    raise pytest.UsageError(f"ACTIONCAGE_TEST_DB={TEST_DB!r}: use sqlite or postgresql")
# The isolation tiers the outcome, limit and attack tests run on (the `tier` fixture). The
# tier matrix does not depend on the database, so by default only the SQLite pass runs it
# and the PostgreSQL pass runs the default tier: the suite runs twice, the matrix once.
TEST_TIERS = tuple(
    (
        os.environ.get("ACTIONCAGE_TEST_TIERS")
        or ("jail,container,gvisor" if TEST_DB == "sqlite" else "container")
    ).split(",")
)


# For tests whose subject is the sandbox (outcomes and limits, attacks, egress, the warm pool,
# the audit battery), not the store: the PostgreSQL pass leaves them to the SQLite pass, as it
# does the tier matrix, and spends its time on what the database changes.
sandbox_subject = pytest.mark.skipif(
    TEST_DB == "postgresql",
    reason="the sandbox is this test's subject, not the store: it runs in the SQLite pass",
)


def database_url(tmp_path: Path, name: str = "actioncage", backend: str | None = None) -> str:
    """The URL of this test's database ``name``: an SQLite file in ``tmp_path``, or (backend
    or ACTIONCAGE_TEST_DB ``postgresql``) a PostgreSQL database dropped after the test. The
    same arguments give the same database.

    SQLite starts empty; PostgreSQL starts as a copy of a database migrated once per session
    (tests/store/ checks the migrations on empty ones, ``postgresql_url``)."""
    if (backend or TEST_DB) == "postgresql":
        return servers.postgres_url(tmp_path, name, migrated=True)
    return f"sqlite:///{tmp_path / (name + '.db')}"


@pytest.fixture(scope="session", autouse=True)
def _postgres_server() -> Iterator[None]:
    yield
    servers.stop_postgres()


@pytest.fixture(autouse=True)
def _drop_test_databases() -> Iterator[None]:
    yield
    server = servers.running_postgres()
    if server is not None:
        server.drop_created()


@pytest.fixture
def postgresql_url(tmp_path: Path) -> str:
    """A fresh, empty PostgreSQL database whatever ACTIONCAGE_TEST_DB says."""
    return servers.postgres_url(tmp_path, "pg")


def _engine() -> docker.DockerClient | None:
    try:
        client = docker.from_env(timeout=30)
        client.ping()
        return client
    except docker.errors.DockerException:
        return None


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    """The real engine with the sandbox image built. Skips locally without one; fails in CI."""
    client = _engine()
    problem = None
    if client is None:
        problem = "no Docker engine answers (run `make test`, which starts one)"
    else:
        try:
            client.images.get(IMAGE)
        except docker.errors.ImageNotFound:
            problem = f"image {IMAGE} is missing (run `make image`)"
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"CI needs the real sandbox: {problem}")
        pytest.skip(problem)
    assert client is not None
    yield client
    for container in client.containers.list(
        ignore_removed=True, all=True, filters={"label": f"{TEST_LABEL}={SESSION}"}
    ):
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            container.remove(force=True)  # a served process's removal may still be finishing
    client.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Tests marked docker get the engine fixture, so they skip or fail with its reason.
    for item in items:
        if item.get_closest_marker("docker") and "docker_client" not in getattr(
            item, "fixturenames", []
        ):
            item.fixturenames.append("docker_client")  # type: ignore[attr-defined]


_TIER_PROBLEMS: dict[str, str | None] = {}


def tier_problem(isolation: str) -> str | None:
    """Why an isolation tier cannot run on this machine (None: it can), asked once."""
    if isolation not in _TIER_PROBLEMS:
        from actioncage.components import build_backend
        from actioncage.models import Isolation
        from actioncage.sandbox.backend import new_owner_id
        from actioncage.sandbox.foreground import Foreground

        backend = build_backend(Settings(sandbox_image=IMAGE), new_owner_id(), Foreground(0))
        try:
            status = backend.tier(Isolation(isolation))
        finally:
            backend.close()
        _TIER_PROBLEMS[isolation] = None if status.available else status.reason
    return _TIER_PROBLEMS[isolation]


@pytest.fixture(params=TEST_TIERS)
def tier(request: pytest.FixtureRequest, docker_client: docker.DockerClient) -> str:
    """Each isolation tier of ACTIONCAGE_TEST_TIERS in turn. A tier that cannot run here
    skips locally with the reason and fails when ``CI`` is set (make test sets it up)."""
    isolation: str = request.param
    problem = tier_problem(isolation)
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI needs the {isolation} tier: {problem}")
        pytest.skip(f"the {isolation} tier is unavailable here: {problem}")
    return isolation


def jail_leftovers(app: Flask) -> list[str]:
    """The jail cgroups (one per live jail) this app's process still has."""
    from actioncage.sandbox.jail.cgroups import Cgroups

    owner = app.extensions["actioncage"].instance.id
    cgroups = Cgroups()
    found: list[str] = []
    for base in cgroups.bases():
        with contextlib.suppress(FileNotFoundError):
            found += [str(p) for p in (base / owner).iterdir() if p.is_dir()]
    return found


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "api_key": API_KEY,
        "container_labels": {TEST_LABEL: SESSION},
        "sandbox_image": IMAGE,
        # The warm pool is off unless a test turns it on (tests/sandbox/test_pool.py).
        "pool_size": 0,
    }
    values.update(overrides)
    if "database_url" not in values:
        values["database_url"] = database_url(tmp_path)
    return Settings(**values)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def app(settings: Settings) -> Iterator[Flask]:
    app = create_app(settings)
    app.config["TESTING"] = True
    yield app
    app.extensions["actioncage"].close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def auth_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture
def make_action(client: FlaskClient, auth_headers: dict[str, str]) -> Any:
    """Create a Python action from code; returns its JSON."""

    def _make(code: str, name: str = "act", **fields: Any) -> dict[str, Any]:
        resp = client.post(
            "/v1/actions", json={"name": name, "code": code, **fields}, headers=auth_headers
        )
        assert resp.status_code == 201, resp.get_json()
        body: dict[str, Any] = resp.get_json()
        return body

    return _make


@pytest.fixture
def execute(client: FlaskClient, auth_headers: dict[str, str]) -> Any:
    """Execute an action by id or name; returns (status code, JSON)."""

    def _execute(
        ref: str, args: dict[str, Any] | None = None, conversation_id: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        body: dict[str, Any] = {"args": args or {}}
        if conversation_id:
            body["conversationId"] = conversation_id
        resp = client.post(f"/v1/actions/{ref}/execute", json=body, headers=auth_headers)
        return resp.status_code, resp.get_json()

    return _execute


@pytest.fixture
def run_code(make_action: Any, execute: Any) -> Any:
    """Create an action from code and execute it once; returns the run JSON."""

    def _run(
        code: str,
        args: dict[str, Any] | None = None,
        conversation_id: str | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        action = make_action(code, **fields)
        status, body = execute(action["id"], args, conversation_id)
        assert status in (200, 422, 503), body
        result: dict[str, Any] = body
        return result

    return _run


def session_containers(docker_client: docker.DockerClient, app: Flask | None = None) -> list[Any]:
    """This session's sandbox containers (parallel sessions may share the engine).

    Removal runs off the request path, so with an ``app`` first wait until its queued
    removals are done.
    """
    if app is not None:
        assert app.extensions["actioncage"].runner.backend.drain(timeout_s=30)
        assert jail_leftovers(app) == []
    containers: list[Any] = docker_client.containers.list(
        ignore_removed=True,
        all=True,
        filters={"label": ["io.actioncage.managed=true", f"{TEST_LABEL}={SESSION}"]},
    )
    return containers
