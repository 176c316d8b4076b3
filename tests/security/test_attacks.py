"""Every attack of the audit catalogue, plus a few more, through HTTP against the real engine.

Each case asserts the safe outcome, that no container or process outlives the run, and that
the server still serves the next request.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import docker
import pytest
from flask import Flask
from flask.testing import FlaskClient

from actioncage.audit.battery import AUDIT_EGRESS_CEILING, CATALOGUE, Attack, Observed, no_survivors
from actioncage.models import OrgPolicy
from actioncage.settings import Settings
from actioncage.store import repo
from tests.conftest import make_settings, sandbox_subject, session_containers

pytestmark = [pytest.mark.docker, sandbox_subject]


@pytest.fixture
def settings(tmp_path: Path, tier: str) -> Settings:
    """The whole catalogue runs on each isolation tier (ACTIONCAGE_TEST_TIERS): this is what
    `actioncage audit --isolation TIER` runs, through HTTP."""
    return make_settings(tmp_path, isolation=tier)


_FINE = "def execute_action(context):\n    return context['args']['n'] + 1\n"


def _policy(attack: Attack) -> dict[str, Any]:
    wire = {
        "timeoutMs": attack.policy.timeout_ms,
        "memoryMb": attack.policy.memory_mb,
        "egress": list(attack.policy.egress) or None,
    }
    return {k: v for k, v in wire.items() if v is not None}


def _still_serves(make_action: Any, execute: Any) -> None:
    fine = make_action(_FINE, name="still_fine")
    status, body = execute(fine["id"], {"n": 41})
    assert status == 200 and body["status"] == "ok" and body["output"] == 42, body


def test_the_catalogue_covers_every_category() -> None:
    categories = {a.category for a in CATALOGUE}
    assert len(CATALOGUE) >= 30
    assert categories >= {
        "cpu",
        "memory",
        "processes",
        "disk",
        "output",
        "network",
        "privilege",
        "secrets",
        "isolation",
        "interpreter",
        "helpers",
    }


@pytest.mark.parametrize("attack", CATALOGUE, ids=lambda a: a.name)
def test_attack_is_contained(
    attack: Attack,
    tier: str,
    app: Flask,
    client: FlaskClient,
    auth_headers: dict[str, str],
    make_action: Any,
    execute: Any,
    docker_client: docker.DockerClient,
) -> None:
    with app.extensions["actioncage"].store.session() as s:
        repo.set_org_policy(s, "default", OrgPolicy(egress=AUDIT_EGRESS_CEILING))
    conversation_id = None
    if attack.needs_conversation:
        resp = client.post("/v1/conversations", json={"id": "victim"}, headers=auth_headers)
        assert resp.status_code == 201
        conversation_id = "victim"
    if attack.before is not None:
        before = make_action(attack.before, name="before")
        status, body = execute(before["id"])
        assert status == 200 and body["status"] == "ok", body
    action = make_action(attack.code, name="attack", policy=_policy(attack))
    status, body = execute(action["id"], None, conversation_id)
    assert status == 200, body
    assert body["isolation"] == tier, body
    assert attack.check(Observed.from_wire(body)), body
    if attack.after is not None:
        assert attack.after()
    if conversation_id is not None and body["status"] != "ok":
        conversation = client.get(f"/v1/conversations/{conversation_id}", headers=auth_headers)
        assert conversation.get_json()["tags"] == []
    assert session_containers(docker_client, app) == []
    _still_serves(make_action, execute)


def test_a_daemon_child_dies_with_the_container_at_the_deadline(
    run_code: Any, docker_client: docker.DockerClient, app: Flask
) -> None:
    run = run_code(
        "import os, subprocess, time\n"
        "def execute_action(context):\n"
        "    if os.fork() == 0:\n"
        "        os.setsid()\n"
        "        subprocess.Popen(['sleep', '4242.4243'], start_new_session=True)\n"
        "        os._exit(0)\n"
        "    time.sleep(60)\n",
        policy={"timeoutMs": 1500},
    )
    assert run["error"]["type"] == "timeout"
    assert no_survivors("4242.4243")
    assert session_containers(docker_client, app) == []


def test_the_survivor_check_can_fail() -> None:
    import subprocess

    child = subprocess.Popen(["sleep", "4242.4244"])
    try:
        cmdline = Path("/proc", str(child.pid), "cmdline")
        deadline = time.monotonic() + 5
        while b"4242.4244" not in cmdline.read_bytes():  # until the exec is visible
            assert time.monotonic() < deadline and child.poll() is None
            time.sleep(0.01)
        assert not no_survivors("4242.4244", wait_s=0.5)
    finally:
        child.kill()
        child.wait()
    assert no_survivors("4242.4244")


def test_a_script_cannot_read_the_control_planes_key_from_anywhere(
    run_code: Any, auth_headers: dict[str, str]
) -> None:
    key = auth_headers["Authorization"].removeprefix("Bearer ")
    run = run_code(
        "import os\n"
        "SKIP = ('/proc', '/sys', '/usr', '/dev')\n"
        "def execute_action(context):\n"
        "    seen = []\n"
        "    for root, dirs, files in os.walk('/'):\n"
        "        dirs[:] = [d for d in dirs if os.path.join(root, d) not in SKIP]\n"
        "        for name in files:\n"
        "            try:\n"
        "                with open(os.path.join(root, name), 'rb') as f:\n"
        "                    if context['args']['key'].encode() in f.read(1 << 16):\n"
        "                        seen.append(os.path.join(root, name))\n"
        "            except OSError:\n"
        "                pass\n"
        "    return seen\n",
        # Handed in as an argument only so the script knows what to look for: it lives in
        # the process's memory then, never in a file.
        args={"key": key},
    )
    assert run["status"] == "ok" and run["output"] == [], run
