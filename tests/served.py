"""`actioncage serve` as a real process on a free loopback port, for tests over real HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from tests.conftest import IMAGE, SESSION, TEST_LABEL, database_url

ACTIONCAGE = [sys.executable, "-m", "actioncage.cli"]


def serve_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a test process: no outside ACTIONCAGE_*, this session's labels."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTIONCAGE_")}
    env.update(
        ACTIONCAGE_DATABASE_URL=database_url(tmp_path, "served"),
        ACTIONCAGE_CONTAINER_LABELS=f"{TEST_LABEL}={SESSION}",
        ACTIONCAGE_SANDBOX_IMAGE=IMAGE,
        **extra,
    )
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def served(tmp_path: Path, **env: str) -> Iterator[str]:
    """Run `actioncage serve` with ``env`` until the block ends; yields its base URL once
    /health answers (fails the test if it exits or stays silent for 30 s)."""
    port = free_port()
    proc = subprocess.Popen(
        [*ACTIONCAGE, "serve"],
        env=serve_env(tmp_path, ACTIONCAGE_PORT=str(port), **env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"serve exited: {proc.stderr.read().decode() if proc.stderr else ''}")
            if time.monotonic() > deadline:
                pytest.fail("serve did not answer within 30 s")
            try:
                requests.get(base + "/health", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.05)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stderr:
            proc.stderr.close()
