"""A real `redis-server` on a free loopback port in a temp dir, for the session; each test
that asks for ``redis_url`` gets it emptied."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.polling import wait_for


class _Exited(Exception):
    """The server exited before it answered."""


class RedisServer:
    """``redis-server`` on a free loopback port, its files in ``workdir``, nothing saved.
    Usable outside pytest (the bench starts one too)."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server is not installed (run `make packages`)")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port: int = s.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._proc = subprocess.Popen(
            [
                binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", str(workdir),
                "--save", "",
                "--appendonly", "no",
                "--protected-mode", "yes",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def wait_answering(self, timeout: float = 20) -> bool:
        """True once it answers PING (False if it exited or stayed silent)."""
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        proc = self._proc

        def answering() -> bool:
            if proc.poll() is not None:
                raise _Exited
            try:
                return bool(client.ping())
            except redis.exceptions.ConnectionError:
                return False

        try:
            return wait_for(answering, timeout=timeout)
        except _Exited:
            return False
        finally:
            client.close()

    def stop(self) -> None:
        self._proc.terminate()
        self._proc.wait(timeout=20)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a redis-server started for this session (stopped at its end). Skips
    locally without the binary (`make packages` installs it); fails when CI is set."""
    try:
        server = RedisServer(tmp_path_factory.mktemp("redis"))
    except FileNotFoundError as exc:
        if os.environ.get("CI"):
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    try:
        if not server.wait_answering():
            pytest.fail(f"redis-server did not answer on port {server.port}")
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: str) -> str:
    """The session's Redis, emptied for this test."""
    client = redis.Redis.from_url(redis_server)
    try:
        client.flushall()
    finally:
        client.close()
    return redis_server
