"""Botpress callAction, driven by the official @botpress/client against a live server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.served import http
from tests.test_cli import server  # noqa: F401  (the live `actioncage serve` fixture)

CLIENT_DIR = Path(__file__).parent.parent / "botpress"


@pytest.fixture(scope="session")
def botpress_client() -> Path:
    """tests/botpress with its locked npm packages installed (npm ci, once)."""
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        if os.environ.get("CI"):
            pytest.fail("CI needs node and npm for the Botpress client test")
        pytest.skip("node and npm are not installed")
    if not (CLIENT_DIR / "node_modules" / "@botpress" / "client").is_dir():
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=CLIENT_DIR, check=True, timeout=300
        )
    return CLIENT_DIR


def _call(base: str, calls: list[dict[str, Any]], token: str = "quickstart-key") -> Any:
    job = {"apiUrl": base, "token": token, "botId": "bot_1", "calls": calls}
    done = subprocess.run(
        ["node", str(CLIENT_DIR / "call_action.js")],
        input=json.dumps(job).encode(),
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    return json.loads(done.stdout)


@pytest.mark.docker
def test_official_client_calls_actions(botpress_client: Path, server: str) -> None:  # noqa: F811
    h = {"Authorization": "Bearer quickstart-key"}
    code = (
        "def execute_action(context):\n"
        "    n = context['conversation']['metadata'].get('n', 0) + 1\n"
        "    set_conversation_metadata(context, 'n', n)\n"
        "    return {'greeting': 'hi ' + context['args']['name'], 'n': n}\n"
    )
    made = http.post(
        f"{server}/v1/actions", headers=h, json={"name": "greet", "code": code}, timeout=10
    )
    assert made.status_code == 201
    http.post(
        f"{server}/v1/actions",
        headers=h,
        json={"name": "fails", "code": "def execute_action(context):\n    raise KeyError('x')\n"},
        timeout=10,
    )
    key = {"Idempotency-Key": "once"}
    results = _call(
        server,
        [
            {
                "type": "myalias:greet",
                "input": {"name": "Ann", "conversationId": "bp-1"},
                "headers": key,
            },
            {
                "type": "myalias:greet",
                "input": {"name": "Ann", "conversationId": "bp-1"},
                "headers": key,
            },
            {"type": "greet", "input": {"name": "Ann", "conversationId": "bp-1"}},
            {"type": "missing", "input": {}},
            {"type": "fails", "input": {}},
            {"type": "greet", "input": {"name": "Bo"}, "botId": ""},
        ],
    )
    assert results[0] == {
        "ok": {"output": {"greeting": "hi Ann", "n": 1}, "meta": {"cached": False}}
    }
    assert results[1] == {
        "ok": {"output": {"greeting": "hi Ann", "n": 1}, "meta": {"cached": True}}
    }
    assert results[2]["ok"]["output"]["n"] == 2
    assert results[3]["error"]["class"] == "ResourceNotFoundError"
    assert results[3]["error"]["code"] == 404
    assert results[4]["error"]["class"] == "RuntimeError"
    assert "KeyError" in results[4]["error"]["message"]
    assert results[5]["error"]["class"] == "InvalidPayloadError"
    bad_key = _call(server, [{"type": "greet", "input": {"name": "x"}}], token="wrong")
    assert bad_key[0]["error"]["class"] == "UnauthorizedError"
