"""`actioncage serve` as a real process on a free loopback port, for tests over real HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from tests.conftest import IMAGE, SESSION, TEST_LABEL, database_url, wait_for
from tests.openapi_check import http

__all__ = ["ACTIONCAGE", "free_port", "http", "serve_env", "served", "served_process"]

ACTIONCAGE = [sys.executable, "-m", "actioncage.cli"]


def serve_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a test process: no outside ACTIONCAGE_*, this session's labels,
    the test's database unless ``extra`` names one."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTIONCAGE_")}
    env.update(
        {
            "ACTIONCAGE_CONTAINER_LABELS": f"{TEST_LABEL}={SESSION}",
            "ACTIONCAGE_SANDBOX_IMAGE": IMAGE,
            **extra,
        }
    )
    if "ACTIONCAGE_DATABASE_URL" not in env:  # made only when the caller brings none
        env["ACTIONCAGE_DATABASE_URL"] = database_url(tmp_path, "served")
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def spawn(
    tmp_path: Path, port: int | None = None, **env: str
) -> tuple[subprocess.Popen[bytes], str]:
    """Start `actioncage serve` on ``port`` (default: a free one); returns the process and
    its base URL. Its stderr is a pipe: read it with ``stderr_of`` once it has exited."""
    port = port or free_port()
    proc = subprocess.Popen(
        [*ACTIONCAGE, "serve"],
        env=serve_env(tmp_path, ACTIONCAGE_PORT=str(port), **env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    return proc, f"http://127.0.0.1:{port}"


def wait_serving(proc: subprocess.Popen[bytes], base: str, timeout: float = 30) -> None:
    """Return once /health answers; fail the test if the process exits or stays silent."""

    def answers() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"serve exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            http.get(base + "/health", timeout=1)
            return True
        except requests.RequestException:  # not listening yet, or not serving yet
            return False

    if not wait_for(answers, timeout):
        pytest.fail(f"serve did not answer within {timeout} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
    proc.wait(timeout=60)
    if proc.stderr:
        proc.stderr.close()


@contextmanager
def served(tmp_path: Path, **env: str) -> Iterator[str]:
    """Run `actioncage serve` with ``env`` until the block ends; yields its base URL once
    /health answers (fails the test if it exits or stays silent for 30 s)."""
    with served_process(tmp_path, **env) as (base, _proc):
        yield base


@contextmanager
def served_process(tmp_path: Path, **env: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """As served(), also yielding the process (a test may signal or kill it; one still
    running at the end is terminated)."""
    proc, base = spawn(tmp_path, **env)
    try:
        wait_serving(proc, base)
        yield base, proc
    finally:
        stop(proc)
