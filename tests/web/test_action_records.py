"""Action records in the shape of the common "create action" APIs, and conversation triggers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from flask.testing import FlaskClient

CODE = "def execute_action(context):\n    return {'ok': True}\n"


def test_create_action_accepts_and_returns_the_record_fields(
    client: FlaskClient, auth_headers: dict[str, str]
) -> None:
    body = {
        "name": "get_delivery_date",
        "code": CODE,
        "description": "Get the delivery date for a customer's order",
        "parameters": False,
        "userWaitingText": "Please wait while we get the delivery date",
        "userSuccessText": "We have sent you an email with the delivery date",
        "userErrorText": "We are unable to get the delivery date",
        "invocationTrigger": "user_query",
    }
    resp = client.post("/v1/actions", json=body, headers=auth_headers)
    assert resp.status_code == 201, resp.get_json()
    action = resp.get_json()
    for field in ("description", "userWaitingText", "userSuccessText", "userErrorText"):
        assert action[field] == body[field]
    assert action["parameters"] is False
    assert action["invocationTrigger"] == "user_query"
    assert action["orgId"] == "default" and action["createdBy"] == action["updatedBy"]
    for stamp in ("createdAt", "updatedAt"):
        datetime.fromisoformat(action[stamp])
    patched = client.patch(
        f"/v1/actions/{action['id']}", json={"userErrorText": "Sorry!"}, headers=auth_headers
    ).get_json()
    assert patched["userErrorText"] == "Sorry!"
    assert patched["userSuccessText"] == body["userSuccessText"]
    assert patched["version"] == 2


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("description", ""),
        ("description", "x" * 513),
        ("userWaitingText", "x" * 2049),
        ("userSuccessText", 5),
        ("userErrorText", "x" * 2049),
        ("invocationTrigger", "webhook.conversation_en"),
        ("parameters", {"type": "nonsense"}),
        ("endpoint", {"url": "ftp://example.com"}),
    ],
)
def test_record_limits_give_422_naming_the_field(
    client: FlaskClient, auth_headers: dict[str, str], field: str, value: Any
) -> None:
    resp = client.post(
        "/v1/actions", json={"name": "a", "code": CODE, field: value}, headers=auth_headers
    )
    assert resp.status_code == 422
    assert resp.get_json()["error"]["field"].startswith(field)


def test_api_action_record_round_trips_and_runs_through_the_egress_guard(
    client: FlaskClient, auth_headers: dict[str, str]
) -> None:
    endpoint = {
        "url": "https://webhook-endpoint.example/api",
        "method": "POST",
        "headers": {"Content-Type": "application/json"},
        "payload": {"order": "{{args.order}}"},
    }
    resp = client.post(
        "/v1/actions",
        json={"name": "hook", "type": "api", "endpoint": endpoint},
        headers=auth_headers,
    )
    assert resp.status_code == 201, resp.get_json()
    stored = resp.get_json()["endpoint"]
    assert {k: stored[k] for k in endpoint} == endpoint
    assert resp.get_json()["type"] == "api"
    missing = client.post("/v1/actions", json={"name": "h2", "type": "api"}, headers=auth_headers)
    assert missing.status_code == 422 and missing.get_json()["error"]["field"] == "endpoint"
    # The host does not resolve here: the run is recorded as a failed outbound call.
    ran = client.post("/v1/actions/hook/execute", json={}, headers=auth_headers)
    assert ran.status_code == 200, ran.get_json()
    assert ran.get_json()["status"] == "error"
    assert "webhook-endpoint.example" in ran.get_json()["error"]["message"]


@pytest.mark.docker
def test_conversation_triggers_run_and_are_on_the_audit_trail(
    client: FlaskClient, auth_headers: dict[str, str], make_action: Any
) -> None:
    make_action(
        "def execute_action(context):\n"
        "    set_conversation_metadata(context, 'greeted', True)\n"
        "    return 'started'\n",
        name="on_start",
        invocationTrigger="webhook.conversation_start",
    )
    make_action(
        "def execute_action(context):\n    return 'ended ' + context['conversation']['id']\n",
        name="on_end",
        invocationTrigger="webhook.conversation_end",
    )
    make_action(CODE, name="on_query")
    created = client.post("/v1/conversations", json={"id": "c1"}, headers=auth_headers)
    assert created.status_code == 201
    body = created.get_json()
    assert [r["status"] for r in body["triggeredRuns"]] == ["ok"]
    assert body["metadata"] == {"greeted": True}
    start_run = client.get(
        f"/v1/runs/{body['triggeredRuns'][0]['runId']}", headers=auth_headers
    ).get_json()
    assert start_run["output"] == "started" and start_run["conversationId"] == "c1"

    ended = client.post("/v1/conversations/c1/end", headers=auth_headers)
    assert ended.status_code == 200
    assert ended.get_json()["endedAt"] is not None
    (end_ref,) = ended.get_json()["triggeredRuns"]
    end_run = client.get(f"/v1/runs/{end_ref['runId']}", headers=auth_headers).get_json()
    assert end_run["output"] == "ended c1"
    again = client.post("/v1/conversations/c1/end", headers=auth_headers)
    assert again.status_code == 409
    assert client.post("/v1/conversations/nope/end", headers=auth_headers).status_code == 404


@pytest.mark.docker
def test_trigger_runs_pass_the_orgs_rate_limit_and_a_refused_one_is_recorded(
    app: Any, client: FlaskClient, auth_headers: dict[str, str], make_action: Any
) -> None:
    from actioncage.models import OrgPolicy
    from actioncage.store import repo

    with app.extensions["actioncage"].store.session() as s:
        repo.set_org_policy(s, "default", OrgPolicy(runs_per_minute=1))
    for name in ("a_first", "b_second"):
        make_action(
            "def execute_action(context):\n    return 'started'\n",
            name=name,
            invocationTrigger="webhook.conversation_start",
        )
    created = client.post("/v1/conversations", json={"id": "limited"}, headers=auth_headers)
    assert created.status_code == 201
    first, second = created.get_json()["triggeredRuns"]
    assert first["status"] == "ok"
    assert second["status"] == "error"
    refused = client.get(f"/v1/runs/{second['runId']}", headers=auth_headers).get_json()
    assert refused["error"]["type"] == "sandbox_error"
    assert "runs per minute" in refused["error"]["message"]
    # The org's minute is used up: the next call through the native door is refused too.
    resp = client.post("/v1/actions/a_first/execute", json={"args": {}}, headers=auth_headers)
    assert resp.status_code == 429


@pytest.mark.docker
def test_each_run_records_its_front_door(
    app: Any, client: FlaskClient, auth_headers: dict[str, str], make_action: Any
) -> None:
    from actioncage.models import FrontDoor
    from actioncage.store import repo

    make_action("def execute_action(context):\n    return 1\n", name="door")
    native = client.post("/v1/actions/door/execute", json={"args": {}}, headers=auth_headers)
    botpress = client.post(
        "/v1/chat/actions",
        json={"type": "door", "input": {}},
        headers={**auth_headers, "x-bot-id": "bot"},
    )
    assert native.status_code == 200 and botpress.status_code == 200
    with app.extensions["actioncage"].store.session() as s:
        runs = repo.list_runs(s, "default")
    assert sorted(str(r.front_door) for r in runs) == [FrontDoor.BOTPRESS, FrontDoor.NATIVE]
