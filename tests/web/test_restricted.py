"""Restricted mode per org: refused on save with line-numbered reasons, enforced in the sandbox."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from actioncage.actions.restricted import restricted_problems
from actioncage.models import OrgPolicy
from actioncage.store import repo

_ALLOWED = (
    "import json, math\n"
    "from collections import Counter\n"
    "def execute_action(context):\n"
    "    total = 0\n"
    "    for i in range(5):\n"
    "        total += i\n"
    "    a, b = divmod(7, 2)\n"
    "    print('hello', total)\n"
    "    d = {'x': [1, 2]}\n"
    "    d['y'] = sorted([3, 1])\n"
    "    return {'t': total, 'c': dict(Counter('aab')), 'm': math.floor(2.5), 'ab': [a, b],\n"
    "            'd': d, 'j': json.dumps([1]), 'arg': context['args'].get('n')}\n"
)


def _restrict(app: Flask, on: bool = True) -> None:
    with app.extensions["actioncage"].store.session() as s:
        repo.set_org_policy(s, "default", OrgPolicy(restricted=on))


def test_forbidden_constructs_are_listed_by_line() -> None:
    code = (
        "import os\n"
        "from subprocess import run\n"
        "def execute_action(context):\n"
        "    x = context.__class__\n"
        "    eval('1')\n"
        "    return open('/etc/passwd').read()\n"
    )
    lines = [line for line, _ in restricted_problems(code)]
    assert lines[:4] == [1, 2, 4, 5]


def test_saving_a_forbidden_construct_in_a_restricted_org_is_refused(
    app: Flask, client: FlaskClient, auth_headers: dict[str, str]
) -> None:
    _restrict(app)
    resp = client.post(
        "/v1/actions",
        json={
            "name": "bad",
            "code": "import os\ndef execute_action(context):\n    return context._x\n",
        },
        headers=auth_headers,
    )
    assert resp.status_code == 422
    error = resp.get_json()["error"]
    assert error["type"] == "invalid_code" and error["line"] == 1
    assert "line 1: import of 'os' is not allowed" in error["message"]
    assert "line 3:" in error["message"] and '"_x"' in error["message"]
    ok = client.post("/v1/actions", json={"name": "good", "code": _ALLOWED}, headers=auth_headers)
    assert ok.status_code == 201
    resp = client.patch(
        f"/v1/actions/{ok.get_json()['id']}",
        json={"code": "def execute_action(context):\n    exec('1')\n"},
        headers=auth_headers,
    )
    assert resp.status_code == 422 and resp.get_json()["error"]["line"] == 2


@pytest.mark.docker
def test_restricted_scripts_run_with_the_usual_python(app: Flask, run_code: Any) -> None:
    _restrict(app)
    run = run_code(_ALLOWED, args={"n": 5})
    assert run["status"] == "ok", run
    assert run["output"] == {
        "t": 10,
        "c": {"a": 2, "b": 1},
        "m": 2,
        "ab": [3, 1],
        "d": {"x": [1, 2], "y": [1, 3]},
        "j": "[1]",
        "arg": 5,
    }
    assert "hello 10" in run["logs"]


@pytest.mark.docker
def test_the_sandbox_enforces_restricted_mode_for_scripts_saved_before(
    app: Flask, make_action: Any, execute: Any
) -> None:
    old = make_action("import os\ndef execute_action(context):\n    return os.getcwd()\n")
    sneaky = make_action(
        "import json\ndef execute_action(context):\n    return json.codecs.open('/tmp/x', 'w')\n",
        name="sneaky",
    )
    _restrict(app)
    status, run = execute(old["id"])
    assert status == 200 and run["error"]["type"] == "exception"
    assert "import of 'os' is not allowed" in run["error"]["message"]
    status, run = execute(sneaky["id"])
    assert run["error"]["type"] == "exception"
    assert "module 'codecs' is not allowed" in run["error"]["message"]
    _restrict(app, on=False)
    status, run = execute(old["id"])
    assert run["status"] == "ok" and run["output"] == "/tmp"
