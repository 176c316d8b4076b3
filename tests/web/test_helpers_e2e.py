"""All nine helpers through the real sandbox, with effects landing in the stored conversation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from flask.testing import FlaskClient

from actioncage import create_app
from tests import fakes
from tests.conftest import make_settings

pytestmark = pytest.mark.docker


def _conversation(
    client: FlaskClient, headers: dict[str, str], cid: str = "conv-1", **fields: Any
) -> dict[str, Any]:
    resp = client.post("/v1/conversations", json={"id": cid, **fields}, headers=headers)
    assert resp.status_code == 201
    body: dict[str, Any] = resp.get_json()
    return body


def test_conversation_helpers_apply_effects_on_success(
    client: FlaskClient, auth_headers: dict[str, str], run_code: Any
) -> None:
    _conversation(
        client,
        auth_headers,
        metadata={"plan": "pro", "old": 1},
        messages=[{"role": "user", "text": "refund please"}],
        tags=["vip"],
    )
    run = run_code(
        "def execute_action(context):\n"
        "    before = get_conversation_metadata(context, 'plan')\n"
        "    set_conversation_metadata(context, 'refund', {'amount': 12.5})\n"
        "    mine = get_conversation_metadata(context, 'refund')\n"
        "    delete_conversation_metadata(context, 'old')\n"
        "    gone = get_conversation_metadata(context, 'old')\n"
        "    add_conversation_tag(context, 'refunded')\n"
        "    add_conversation_event(context, {'type': 'refund', 'amount': 12.5})\n"
        "    add_conversation_event(context, 'note')\n"
        "    hand_off_conversation(context, reason='needs a human')\n"
        "    return {'before': before, 'mine': mine, 'gone': gone, 'first': context['conversation']['messages'][0]['text']}\n",
        conversation_id="conv-1",
    )
    assert run["status"] == "ok", run
    assert run["output"] == {
        "before": "pro",
        "mine": {"amount": 12.5},
        "gone": None,
        "first": "refund please",
    }
    assert run["effectsApplied"] is True and [e["kind"] for e in run["effects"]] == [
        "set_metadata",
        "delete_metadata",
        "add_tag",
        "add_event",
        "add_event",
        "hand_off",
    ]
    conv = client.get("/v1/conversations/conv-1", headers=auth_headers).get_json()
    assert conv["metadata"] == {"plan": "pro", "refund": {"amount": 12.5}}
    assert conv["tags"] == ["vip", "refunded"]
    assert conv["events"] == [{"type": "refund", "amount": 12.5}, "note"]
    assert conv["handedOff"] is True and conv["handOffReason"] == "needs a human"


@pytest.mark.parametrize(
    "ending", ["raise RuntimeError('after effects')", "while True: pass", "return {1}"]
)
def test_effects_are_not_applied_when_the_run_fails(
    client: FlaskClient, auth_headers: dict[str, str], run_code: Any, ending: str
) -> None:
    _conversation(client, auth_headers, metadata={"keep": True})
    run = run_code(
        "def execute_action(context):\n"
        "    set_conversation_metadata(context, 'keep', False)\n"
        "    add_conversation_tag(context, 'should-not-land')\n"
        "    hand_off_conversation(context)\n"
        f"    {ending}\n",
        conversation_id="conv-1",
        policy={"timeoutMs": 1000},
    )
    assert run["status"] == "error" and run["effectsApplied"] is False
    conv = client.get("/v1/conversations/conv-1", headers=auth_headers).get_json()
    assert conv["metadata"] == {"keep": True} and conv["tags"] == [] and conv["handedOff"] is False


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        ("set_conversation_metadata(context, 'k', 'x' * 70000)", "65536"),
        ("set_conversation_metadata(context, 5, 'v')", "key"),
        ("set_conversation_metadata(context, 'k', {1, 2})", "JSON"),
        ("[add_conversation_tag(context, f't{i}') for i in range(101)]", "100"),
        ("[add_conversation_event(context, 'e') for i in range(101)]", "100"),
        ("add_conversation_tag(context, '')", "tag"),
        ("hand_off_conversation(context, reason=5)", "reason"),
    ],
)
def test_bad_helper_calls_raise_clear_errors_in_the_script(
    client: FlaskClient, auth_headers: dict[str, str], run_code: Any, call: str, needle: str
) -> None:
    _conversation(client, auth_headers)
    run = run_code(
        f"def execute_action(context):\n    {call}\n    return 1\n", conversation_id="conv-1"
    )
    assert run["status"] == "error" and run["error"]["type"] == "exception", run
    assert needle in run["error"]["message"], run["error"]["message"]


def test_conversation_helpers_without_a_conversation_fail_clearly(run_code: Any) -> None:
    run = run_code("def execute_action(context):\n    add_conversation_tag(context, 'x')\n")
    assert run["error"]["type"] == "exception" and "conversation" in run["error"]["message"]


def test_ab_variant_is_sticky_and_stored(
    client: FlaskClient, auth_headers: dict[str, str], make_action: Any, execute: Any
) -> None:
    for cid in ("conv-a", "conv-b"):
        _conversation(client, auth_headers, cid)
    action = make_action(
        "def execute_action(context):\n    return get_ab_test_variant(context, 'greeting', ['A', 'B'])\n"
    )
    first = {
        cid: execute(action["id"], conversation_id=cid)[1]["output"] for cid in ("conv-a", "conv-b")
    }
    again = {
        cid: execute(action["id"], conversation_id=cid)[1]["output"] for cid in ("conv-a", "conv-b")
    }
    assert first == again and set(first.values()) <= {"A", "B"}
    stored = client.get("/v1/conversations/conv-a", headers=auth_headers).get_json()["metadata"]
    assert stored == {"ab_test.greeting": first["conv-a"]}


def test_is_holiday_uses_the_holidays_package(run_code: Any) -> None:
    run = run_code(
        "import datetime\n"
        "def execute_action(context):\n"
        "    return [is_holiday('US', check_date='2024-07-04'), is_holiday('US', check_date=datetime.date(2024, 7, 5)),\n"
        "            is_holiday('DE', state='BY', check_date='2024-01-06'), is_holiday('DE', state='BE', check_date='2024-01-06')]\n"
    )
    assert run["output"] == [True, False, True, False], run
    bad = run_code("def execute_action(context):\n    return is_holiday('XX')\n", name="bad")
    assert bad["error"]["type"] == "exception" and "XX" in bad["error"]["message"]


def _llm_answer(system: str, user: str) -> str:
    if "true or false" in system:
        return "true" if "refund" in user else "false"
    options = [line[2:] for line in system.splitlines() if line.startswith("- ")]
    return next((o for o in options if o in user), "something else")


def test_llm_helpers_call_the_provider_from_the_host(tmp_path: Path) -> None:
    with fakes.serve(fakes.chat_completions(_llm_answer)) as (url, seen):
        app = create_app(
            make_settings(
                tmp_path,
                llm_base_url=url + "/v1",
                llm_api_key=fakes.LLM_KEY,
                llm_model="test-model",
            )
        )
        client, headers = app.test_client(), {"Authorization": "Bearer test-key-org-default"}
        code = (
            "def execute_action(context):\n"
            "    return {\n"
            "        'refund': llm_classify_binary('Is this a refund request?', 'I want a refund'),\n"
            "        'other': llm_classify_binary('Is this a refund request?', 'hello'),\n"
            "        'cat': llm_classify_category('Which product?', 'my phone broke', ['laptop', 'phone']),\n"
            "        'none': llm_classify_category('Which product?', 'my car', ['laptop', 'phone'], fallback='unknown'),\n"
            "    }\n"
        )
        action = client.post(
            "/v1/actions", json={"name": "llm", "code": code}, headers=headers
        ).get_json()
        run = client.post(
            f"/v1/actions/{action['id']}/execute", json={}, headers=headers
        ).get_json()
    assert run["status"] == "ok", run
    assert run["output"] == {"refund": True, "other": False, "cat": "phone", "none": "unknown"}
    assert len(seen) == 4 and all(json.loads(r.body)["model"] == "test-model" for r in seen)
    app.extensions["actioncage"].close()


def test_llm_unconfigured_gives_fallback_or_a_clear_error(run_code: Any) -> None:
    run = run_code(
        "def execute_action(context):\n    return llm_classify_binary('p', 'i', fallback=False)\n"
    )
    assert run["status"] == "ok" and run["output"] is False
    run = run_code(
        "def execute_action(context):\n    return llm_classify_binary('p', 'i')\n",
        name="nofallback",
    )
    assert run["error"]["type"] == "exception" and "not configured" in run["error"]["message"]


def test_host_calls_per_run_are_capped(tmp_path: Path) -> None:
    with fakes.serve(fakes.chat_completions(_llm_answer)) as (url, seen):
        app = create_app(
            make_settings(
                tmp_path, llm_base_url=url + "/v1", llm_api_key=fakes.LLM_KEY, max_host_calls=3
            )
        )
        client, headers = app.test_client(), {"Authorization": "Bearer test-key-org-default"}
        code = "def execute_action(context):\n    return [llm_classify_binary('p', 'refund', fallback=None) for _ in range(5)]\n"
        action = client.post(
            "/v1/actions", json={"name": "many", "code": code}, headers=headers
        ).get_json()
        run = client.post(
            f"/v1/actions/{action['id']}/execute", json={}, headers=headers
        ).get_json()
    assert run["status"] == "error" and "3" in run["error"]["message"]
    assert len(seen) == 3
    app.extensions["actioncage"].close()


def test_google_sheets_row_is_appended_with_the_hosts_service_account(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    rows: dict[str, list[list[Any]]] = {}
    with fakes.serve(fakes.google_sheets(public, rows)) as (url, seen):
        creds = tmp_path / "sa.json"
        creds.write_text(
            json.dumps(
                {
                    "type": "service_account",
                    "client_email": "bot@proj.iam.gserviceaccount.com",
                    "private_key": pem,
                    "private_key_id": "k1",
                    "token_uri": url + "/token",
                }
            )
        )
        app = create_app(
            make_settings(tmp_path, sheets_credentials_file=str(creds), sheets_base_url=url)
        )
        client, headers = app.test_client(), {"Authorization": "Bearer test-key-org-default"}
        code = (
            "import os\n"
            "def execute_action(context):\n"
            "    a = add_google_sheets_row('sheet_1', ['Ann', 3, True])\n"
            "    b = add_google_sheets_row('sheet_1', {'name': 'Bob', 'n': 4})\n"
            "    return {'a': a, 'b': b, 'env': sorted(os.environ)}\n"
        )
        action = client.post(
            "/v1/actions", json={"name": "sheet", "code": code}, headers=headers
        ).get_json()
        run = client.post(
            f"/v1/actions/{action['id']}/execute", json={}, headers=headers
        ).get_json()
        bad = client.post(
            "/v1/actions",
            json={
                "name": "badsheet",
                "code": "def execute_action(context):\n    return add_google_sheets_row('../etc', ['x'])\n",
            },
            headers=headers,
        ).get_json()
        bad_run = client.post(
            f"/v1/actions/{bad['id']}/execute", json={}, headers=headers
        ).get_json()
    assert run["status"] == "ok", run
    assert rows == {"sheet_1": [["Ann", 3, True], ["Bob", 4]]}
    assert (
        run["output"]["a"]["updatedRows"] == 1
        and run["output"]["b"]["updatedRange"] == "Sheet1!A2:C2"
    )
    assert "private" not in json.dumps(run)  # the credential never reached the script
    assert [r.path for r in seen].count("/token") == 1  # the token is cached
    assert bad_run["error"]["type"] == "exception" and "sheet_id" in bad_run["error"]["message"]
    app.extensions["actioncage"].close()
