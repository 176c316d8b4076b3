"""A real `redis-server` on a free loopback port in a temp dir, for the session; each test
that asks for ``redis_url`` gets it emptied."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import wait_for
from tests.served import free_port


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.exceptions.ConnectionError:
        return False


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a redis-server started for this session (stopped at its end). Skips
    locally without the binary (`make packages` installs it); fails when CI is set."""
    binary = shutil.which("redis-server")
    if binary is None:
        problem = "redis-server is not installed (run `make packages`)"
        if os.environ.get("CI"):
            pytest.fail(problem)
        pytest.skip(problem)
    workdir: Path = tmp_path_factory.mktemp("redis")
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--dir", str(workdir),
            "--save", "",
            "--appendonly", "no",
            "--protected-mode", "yes",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    try:
        if not wait_for(lambda: proc.poll() is None and _answers(client), timeout=20):
            pytest.fail(f"redis-server did not answer on port {port}")
        yield url
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture
def redis_url(redis_server: str) -> str:
    """The session's Redis, emptied for this test."""
    client = redis.Redis.from_url(redis_server)
    try:
        client.flushall()
    finally:
        client.close()
    return redis_server
