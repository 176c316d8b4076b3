"""Fixtures for the run service's durable parts: a real store and a loopback callback
receiver."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from actioncage.models import Action, Policy, RunResult, RunStatus
from actioncage.settings import Settings
from actioncage.store import Store, repo
from tests.conftest import make_settings


class Receiver:
    """A real HTTP server on loopback recording the callbacks it gets; it answers each with
    the next of ``answers`` (then 200)."""

    def __init__(self, answers: list[int] | None = None) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.answers = list(answers or [])
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver._lock:
                    receiver.received.append((dict(self.headers), body))
                    status = receiver.answers.pop(0) if receiver.answers else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/run"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def durable_settings(tmp_path: Path) -> Settings:
    """Loopback callbacks allowed, short back-off and leases, so tests need not wait long."""
    return make_settings(
        tmp_path,
        egress_allowed_cidrs="127.0.0.0/8",
        callback_backoff_ms=10,
        callback_timeout_ms=2000,
        callback_lease_s=3.0,
        job_lease_s=2.0,
        job_renew_s=0.5,
        job_reap_s=0.5,
    )


@pytest.fixture
def store(durable_settings: Settings) -> Iterator[Store]:
    s = Store(durable_settings.database_url)
    s.create_all()
    yield s
    s.dispose()


def ok_run(action: Action, run_id: str, output: object) -> RunResult:
    """The record the executor makes of ``action``'s run ``run_id`` that returned ``output``
    (no conversation, no effects), called by key1."""
    now = repo.now()
    return RunResult(
        run_id=run_id,
        org_id=action.org_id,
        action_id=action.id,
        action_version=action.version,
        status=RunStatus.OK,
        output=output,
        error=None,
        effects=(),
        effects_applied=False,
        logs="",
        duration_ms=5,
        started_at=now,
        finished_at=now,
        conversation_id=None,
        caller_key_id="key1",
        image_digest=None,
    )


@pytest.fixture
def action(store: Store) -> Action:
    with store.session() as s:
        return repo.create_action(
            s,
            "org1",
            "key1",
            {
                "name": "slow",
                "type": "python",
                "code": "def execute_action(context):\n    return 1\n",
                "parameters": None,
                "policy": Policy(timeout_ms=1000),
                "description": None,
            },
        )
