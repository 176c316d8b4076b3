"""Kept-alive engine connections: reuse, reconnection, TCP engines, errors, start and remove."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from actioncage.errors import ConfigError, SandboxError
from actioncage.models import Policy
from actioncage.sandbox.backend import Profile, new_owner_id
from actioncage.sandbox.channel import await_ready
from actioncage.sandbox.docker.backend import DockerBackend
from actioncage.sandbox.docker.engine import EngineAPIError, EngineConnections, engine_address
from actioncage.sandbox.foreground import Foreground
from actioncage.sandbox.limits import effective_limits
from actioncage.settings import Settings
from tests.conftest import make_settings, session_containers

ENGINE_SOCKET = "/var/run/docker.sock"


class TcpToEngine:
    """A loopback TCP port in front of the real engine's unix socket, so the TCP code path
    talks to the real engine; drop() closes every connection it carries, as an engine that
    hangs up on idle connections would."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            engine = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            engine.connect(ENGINE_SOCKET)
            with self._lock:
                self._pairs.append((client, engine))
                self.accepted += 1
            for src, dst in ((client, engine), (engine, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def drop(self) -> None:
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for s in pair:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def close(self) -> None:
        self._listener.close()
        self.drop()


@pytest.fixture
def tcp_engine() -> Iterator[TcpToEngine]:
    forwarder = TcpToEngine()
    yield forwarder
    forwarder.close()


def _api_version() -> str:
    return str(docker.APIClient(version="auto").api_version)


@pytest.fixture
def engine() -> Iterator[EngineConnections]:
    connections = EngineConnections(f"unix://{ENGINE_SOCKET}", _api_version())
    yield connections
    connections.close()


@contextlib.contextmanager
def _backend(tmp_path: Path, **overrides: Any) -> Iterator[tuple[DockerBackend, Profile]]:
    """A DockerBackend with these settings and the default policy's profile."""
    settings = make_settings(tmp_path, **overrides)
    backend = DockerBackend(settings, new_owner_id(), Foreground(settings.engine_work_defer_ms))
    try:
        yield backend, Profile(effective_limits(Policy(), settings))
    finally:
        backend.close()


def test_engine_urls_are_parsed_and_unsupported_ones_refused() -> None:
    assert engine_address("unix:///var/run/docker.sock") == ("unix", "/var/run/docker.sock")
    assert engine_address("tcp://127.0.0.1:2375") == ("tcp", ("127.0.0.1", 2375))
    assert engine_address("http://engine.local") == ("tcp", ("engine.local", 2375))
    for bad in ("ssh://me@host", "https://host:2376", "npipe:////./pipe/docker", "unix://rel"):
        with pytest.raises(ValueError, match="unsupported engine URL"):
            engine_address(bad)
    with pytest.raises(ConfigError, match="ACTIONCAGE_DOCKER_URL"):
        Settings.from_env({"ACTIONCAGE_DOCKER_URL": "ssh://me@host"})


@pytest.mark.docker
def test_calls_from_one_thread_share_one_connection(engine: EngineConnections) -> None:
    for _ in range(5):
        assert engine.call("GET", "/info")["ID"]
    assert engine.opened == 1
    seen: list[int] = []
    worker = threading.Thread(
        target=lambda: seen.append(len(engine.call("GET", "/containers/json") or []))
    )
    worker.start()
    worker.join()
    assert seen and engine.opened == 2  # a thread of its own, a connection of its own


@pytest.mark.docker
def test_a_connection_the_engine_closed_is_reopened_once(tcp_engine: TcpToEngine) -> None:
    connections = EngineConnections(f"tcp://127.0.0.1:{tcp_engine.port}", _api_version())
    try:
        assert connections.call("GET", "/info")["ID"]
        tcp_engine.drop()  # the kept-alive connection is now dead
        assert connections.call("GET", "/info")["ID"]
        assert connections.opened == 2 and tcp_engine.accepted == 2
    finally:
        connections.close()


@pytest.mark.docker
def test_engine_errors_carry_the_status_and_the_engines_message(
    engine: EngineConnections,
) -> None:
    with pytest.raises(EngineAPIError) as caught:
        engine.call("POST", "/containers/no-such-container-here/start")
    assert caught.value.status == 404
    assert "no-such-container-here" in caught.value.engine_message
    with pytest.raises(EngineAPIError) as attach_error:
        engine.attach("no-such-container-here")
    assert attach_error.value.status == 404
    assert engine.call("GET", "/_ping") is None  # not JSON: no body to decode


@pytest.mark.docker
def test_a_missing_image_says_how_to_build_it(tmp_path: Path) -> None:
    with _backend(tmp_path, sandbox_image="actioncage-no-such-image:never") as (backend, profile):
        with pytest.raises(SandboxError, match="is missing: run `actioncage image build`"):
            backend.start("missing-image", profile)
        assert backend.live_count == 0


@pytest.mark.docker
def test_a_tcp_engine_runs_a_sandbox_and_removes_it(
    tmp_path: Path, tcp_engine: TcpToEngine, docker_client: docker.DockerClient
) -> None:
    url = f"tcp://127.0.0.1:{tcp_engine.port}"
    with _backend(tmp_path, docker_url=url) as (backend, profile):
        started = backend.start("tcp-engine-test", Profile(profile.limits, preload="json"))
        await_ready(started, timeout_s=30)
        assert started.alive()
        assert [c.name for c in session_containers(docker_client)] == ["actioncage-tcp-engine-test"]
        backend.discard(started)
        assert backend.drain(timeout_s=30)
        assert session_containers(docker_client) == []
        assert backend.live_count == 0


@pytest.mark.docker
def test_connections_of_ended_threads_are_closed(engine: EngineConnections) -> None:
    for _ in range(4):
        worker = threading.Thread(target=lambda: engine.call("GET", "/_ping"))
        worker.start()
        worker.join()
    assert engine.opened == 4
    engine.call("GET", "/_ping")
    assert engine.opened == 5 and engine.open_count == 1
    engine.close()
    assert engine.open_count == 0
