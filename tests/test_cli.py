"""The ``actioncage`` command, run as a real process: serve over real HTTP, run, keys create."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import IMAGE
from tests.fakes import serve
from tests.served import ACTIONCAGE, http, serve_env, served


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    with served(tmp_path, ACTIONCAGE_API_KEY="quickstart-key") as base:
        yield base


@pytest.mark.docker
def test_readme_walkthrough_over_real_http(server: str) -> None:
    h = {"Authorization": "Bearer quickstart-key"}
    code = (
        "def execute_action(context):\n"
        "    add_conversation_tag(context, 'greeted')\n"
        "    set_conversation_metadata(context, 'greeting', 'hello ' + context['args']['name'])\n"
        "    return {'message': 'hello ' + context['args']['name']}\n"
    )
    action = http.post(
        f"{server}/v1/actions", headers=h, json={"name": "greet", "code": code}, timeout=10
    )
    assert action.status_code == 201
    conv = http.post(f"{server}/v1/conversations", headers=h, json={"id": "demo-1"}, timeout=10)
    assert conv.status_code == 201
    run = http.post(
        f"{server}/v1/actions/greet/execute",
        headers=h,
        json={"args": {"name": "Ada"}, "conversationId": "demo-1"},
        timeout=30,
    )
    assert run.status_code == 200 and run.json()["output"] == {"message": "hello Ada"}
    assert run.headers["Content-Type"] == "application/json"
    after = http.get(f"{server}/v1/conversations/demo-1", headers=h, timeout=10).json()
    assert after["tags"] == ["greeted"] and after["metadata"] == {"greeting": "hello Ada"}
    assert http.get(f"{server}/v1/actions", timeout=10).status_code == 401


def test_keys_create_prints_a_working_key(tmp_path: Path) -> None:
    env = serve_env(tmp_path)
    out = subprocess.run(
        [*ACTIONCAGE, "keys", "create", "--org", "acme"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    secret = out.stdout.strip()
    assert secret.startswith("ac_") and "acme" in out.stderr
    # It says which database it wrote to (a key made in the wrong one is refused later).
    shown = env["ACTIONCAGE_DATABASE_URL"].split("@")[-1]
    assert "database: " in out.stderr and shown in out.stderr

    from actioncage.store import Store, repo

    store = Store(env["ACTIONCAGE_DATABASE_URL"])
    with store.session() as s:
        key = repo.find_key(s, secret)
    store.dispose()
    assert key is not None and key.org_id == "acme"


@pytest.mark.docker
def test_run_executes_a_local_script_in_the_sandbox(tmp_path: Path) -> None:
    script = tmp_path / "greet.py"
    script.write_text(
        "def execute_action(context):\n"
        "    set_conversation_metadata(context, 'seen', True)\n"
        "    return {'hi': context['args']['who'], 'conv': context['conversation']['id']}\n"
    )
    out = subprocess.run(
        [
            *ACTIONCAGE,
            "run",
            str(script),
            "--args",
            '{"who": "Bo"}',
            "--conversation",
            '{"id": "c9"}',
        ],
        env=serve_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["status"] == "ok" and result["output"] == {"hi": "Bo", "conv": "c9"}
    assert result["conversationAfter"]["metadata"] == {"seen": True}


@pytest.mark.docker
def test_run_with_egress_reaches_the_allowed_host_and_only_it(tmp_path: Path) -> None:
    script = tmp_path / "fetch.py"
    script.write_text(
        "import requests\n"
        "def execute_action(context):\n"
        "    return requests.get(context['args']['url'], timeout=5).json()\n"
    )
    with serve(lambda req: (200, {"path": req.path})) as (upstream, seen):
        port = upstream.rsplit(":", 1)[1]
        env = serve_env(
            tmp_path,
            ACTIONCAGE_EGRESS_ALLOWED_CIDRS="127.0.0.1/32",
            ACTIONCAGE_EGRESS_RESOLVE="api.local.test=127.0.0.1",
        )

        def run(*extra: str) -> dict[str, Any]:
            url = f"http://api.local.test:{port}/hi"
            out = subprocess.run(
                [*ACTIONCAGE, "run", str(script), "--args", json.dumps({"url": url}), *extra],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            result: dict[str, Any] = json.loads(out.stdout)
            return result

        allowed = run("--egress", f"api.local.test:{port}")
        assert allowed["status"] == "ok" and allowed["output"] == {"path": "/hi"}, allowed
        refused = run()
        assert refused["status"] == "error" and len(seen) == 1
        assert "this action has no network" in refused["error"]["message"]


def test_run_help_documents_conversation_and_egress() -> None:
    out = subprocess.run(
        [*ACTIONCAGE, "run", "--help"], capture_output=True, text=True, timeout=60, check=True
    )
    assert "--conversation" in out.stdout and '{"id": "demo-1"}' in out.stdout
    assert "--egress HOST" in out.stdout


def test_run_refuses_a_script_with_a_syntax_error(tmp_path: Path) -> None:
    script = tmp_path / "bad.py"
    script.write_text("def execute_action(context):\n    return (\n")
    out = subprocess.run(
        [*ACTIONCAGE, "run", str(script)],
        env=serve_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "line 2" in out.stderr


def test_bad_setting_stops_the_process_naming_the_variable(tmp_path: Path) -> None:
    out = subprocess.run(
        [*ACTIONCAGE, "serve"],
        env=serve_env(tmp_path, ACTIONCAGE_PORT="eighty"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "ACTIONCAGE_PORT" in out.stderr


@pytest.mark.docker
def test_image_build_is_a_no_op_when_current_and_prints_the_digest(tmp_path: Path) -> None:
    import docker

    out = subprocess.run(
        [*ACTIONCAGE, "image", "build"],
        env=serve_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    client = docker.from_env()
    try:
        assert out.stdout.strip().splitlines()[-1] == client.images.get(IMAGE).id
    finally:
        client.close()


def test_org_set_policy_repeated_egress_flags_add(tmp_path: Path) -> None:
    env = serve_env(tmp_path)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*ACTIONCAGE, "org", *args], env=env, capture_output=True, text=True, timeout=60
        )

    done = cli("set-policy", "acme", "--egress", "api.example.com", "--egress", "*.acme.test:443")
    assert done.returncode == 0, done.stderr
    shown = json.loads(cli("show-policy", "acme").stdout)
    assert shown["egress"] == ["api.example.com", "*.acme.test:443"]
    # A new list replaces the old one; '' alone closes; --inherit-egress gives the default back.
    assert cli("set-policy", "acme", "--egress", "b.example.com,c.example.com").returncode == 0
    assert json.loads(cli("show-policy", "acme").stdout)["egress"] == [
        "b.example.com",
        "c.example.com",
    ]
    assert cli("set-policy", "acme", "--egress", "").returncode == 0
    assert json.loads(cli("show-policy", "acme").stdout)["egress"] == []
    assert cli("set-policy", "acme", "--inherit-egress").returncode == 0
    assert json.loads(cli("show-policy", "acme").stdout)["egress"] is None
    refused = cli("set-policy", "acme", "--egress", "ok.example.com", "--egress", "bad host")
    assert refused.returncode == 2 and "bad host" in refused.stderr


def test_the_cli_and_the_worker_do_not_import_the_app() -> None:
    # The app (Flask's front doors, the MCP SDK) costs about 2 s of CPU to import: a CLI
    # command or an executor worker that never serves HTTP must not pay for it.
    probe = (
        "import sys, actioncage.cli, actioncage.components\n"
        "print(sorted(m for m in ('actioncage.app', 'mcp') if m in sys.modules))\n"
        "from actioncage import create_app\n"
        "print(create_app.__module__, 'mcp' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["[]", "actioncage.app True"]
