"""The /v1 API without running anything: CRUD, versions, org isolation, bad requests."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from actioncage.store import repo

CODE = "def execute_action(context):\n    return {'ok': True}\n"


def _other_org_headers(app: Flask) -> dict[str, str]:
    with app.extensions["actioncage"].store.session() as s:
        _, secret = repo.create_key(s, "org-b")
    return {"Authorization": f"Bearer {secret}"}


def test_create_get_list_update_delete(client: FlaskClient, auth_headers: dict[str, str]) -> None:
    resp = client.post(
        "/v1/actions",
        json={"name": "getOrder", "code": CODE, "description": "Gets an order"},
        headers=auth_headers,
    )
    assert resp.status_code == 201
    action = resp.get_json()
    assert action["version"] == 1 and action["orgId"] == "default" and action["type"] == "python"
    assert action["createdAt"].endswith("Z") and action["parameters"] is False
    assert (
        client.get(f"/v1/actions/{action['id']}", headers=auth_headers).get_json()["name"]
        == "getOrder"
    )
    assert client.get("/v1/actions/getOrder", headers=auth_headers).get_json()["id"] == action["id"]
    listed = client.get("/v1/actions", headers=auth_headers).get_json()["actions"]
    assert [a["id"] for a in listed] == [action["id"]]

    new_code = CODE.replace("True", "False")
    resp = client.patch(
        f"/v1/actions/{action['id']}", json={"code": new_code}, headers=auth_headers
    )
    assert resp.status_code == 200
    updated = resp.get_json()
    assert (
        updated["version"] == 2
        and updated["code"] == new_code
        and updated["description"] == "Gets an order"
    )

    assert client.delete(f"/v1/actions/{action['id']}", headers=auth_headers).status_code == 204
    assert client.get(f"/v1/actions/{action['id']}", headers=auth_headers).status_code == 404


def test_a_ref_names_the_action_with_that_id_before_one_with_that_name(
    client: FlaskClient, auth_headers: dict[str, str]
) -> None:
    first = client.post(
        "/v1/actions", json={"name": "first", "code": CODE}, headers=auth_headers
    ).get_json()
    resp = client.post(
        "/v1/actions", json={"name": first["id"], "code": CODE}, headers=auth_headers
    )
    assert resp.status_code == 201
    named_like_it = resp.get_json()
    client.patch(f"/v1/actions/{first['id']}", json={"description": "v2"}, headers=auth_headers)

    got = client.get(f"/v1/actions/{first['id']}", headers=auth_headers).get_json()
    assert got["name"] == "first" and got["version"] == 2 and got["description"] == "v2"
    assert (
        client.get(f"/v1/actions/{named_like_it['id']}", headers=auth_headers).get_json()["name"]
        == first["id"]
    )


def test_syntax_error_is_refused_with_its_line(
    client: FlaskClient, auth_headers: dict[str, str]
) -> None:
    resp = client.post(
        "/v1/actions",
        json={"name": "bad", "code": "def execute_action(c):\n    return (\n"},
        headers=auth_headers,
    )
    assert resp.status_code == 422
    error = resp.get_json()["error"]
    assert error["type"] == "invalid_code" and error["line"] == 2 and "line 2" in error["message"]
    resp = client.post("/v1/actions", json={"name": "bad", "code": "x = 1\n"}, headers=auth_headers)
    assert resp.status_code == 422 and "execute_action" in resp.get_json()["error"]["message"]


def test_duplicate_name_conflicts_and_failed_update_changes_nothing(
    client: FlaskClient, auth_headers: dict[str, str]
) -> None:
    a = client.post(
        "/v1/actions", json={"name": "one", "code": CODE}, headers=auth_headers
    ).get_json()
    client.post("/v1/actions", json={"name": "two", "code": CODE}, headers=auth_headers)
    assert (
        client.post(
            "/v1/actions", json={"name": "one", "code": CODE}, headers=auth_headers
        ).status_code
        == 409
    )
    resp = client.patch(f"/v1/actions/{a['id']}", json={"name": "two"}, headers=auth_headers)
    assert resp.status_code == 409
    after = client.get(f"/v1/actions/{a['id']}", headers=auth_headers).get_json()
    assert (after["name"], after["version"]) == ("one", 1)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"code": CODE}, "name"),
        ({"name": "x"}, "code"),
        ({"name": "9x", "code": CODE}, "name"),
        ({"name": "x", "code": CODE, "parameters": {"type": "bogus"}}, "parameters"),
        ({"name": "x", "code": CODE, "parameters": "yes"}, "parameters"),
        ({"name": "x", "code": CODE, "description": ""}, "description"),
        ({"name": "x", "code": CODE, "policy": {"timeoutMs": 600_000}}, "timeoutMs"),
        ({"name": "x", "code": CODE, "policy": {"memoryMb": "lots"}}, "policy.memoryMb"),
        ({"name": "x", "code": CODE, "policy": {"gpus": 1}}, "policy.gpus"),
        ({"name": "x", "code": CODE, "surprise": 1}, "surprise"),
        ({"name": "x", "code": 5}, "code"),
    ],
)
def test_bad_action_fields_give_422_naming_the_field(
    client: FlaskClient, auth_headers: dict[str, str], body: dict[str, Any], field: str
) -> None:
    resp = client.post("/v1/actions", json=body, headers=auth_headers)
    assert resp.status_code == 422, resp.get_json()
    assert resp.get_json()["error"]["field"] == field


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("post", "/v1/actions", {"data": "not json", "content_type": "application/json"}, 400),
        ("post", "/v1/actions", {"json": [1, 2]}, 400),
        ("post", "/v1/actions", {"data": "x=1"}, 400),
        ("get", "/v1/actions/nope", {}, 404),
        ("get", "/v1/runs/nope", {}, 404),
        ("get", "/v1/conversations/nope", {}, 404),
        ("put", "/v1/actions", {}, 405),
        ("get", "/v1/nothing-here", {}, 404),
        ("post", "/v1/conversations", {"json": {"messages": "hi"}}, 422),
        ("post", "/v1/conversations", {"json": {"id": "bad id with spaces"}}, 422),
        ("post", "/v1/actions/nope/execute", {"json": {"args": {}}}, 404),
    ],
)
def test_bad_requests_get_json_errors(
    client: FlaskClient,
    auth_headers: dict[str, str],
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
) -> None:
    resp = getattr(client, method)(path, headers=auth_headers, **kwargs)
    assert resp.status_code == status
    error = resp.get_json()["error"]
    assert error["type"] and error["message"]


def test_oversized_body_is_413_json(client: FlaskClient, auth_headers: dict[str, str]) -> None:
    resp = client.post(
        "/v1/actions",
        data=b"{" + b" " * (5 * 1024 * 1024) + b"}",
        content_type="application/json",
        headers=auth_headers,
    )
    assert resp.status_code == 413 and resp.get_json()["error"]["type"]


def test_execute_with_wrong_body_types(client: FlaskClient, auth_headers: dict[str, str]) -> None:
    a = client.post(
        "/v1/actions", json={"name": "one", "code": CODE}, headers=auth_headers
    ).get_json()
    resp = client.post(f"/v1/actions/{a['id']}/execute", json={"args": [1]}, headers=auth_headers)
    assert resp.status_code == 422 and resp.get_json()["error"]["field"] == "args"
    resp = client.post(
        f"/v1/actions/{a['id']}/execute",
        json={"args": {}, "conversationId": "missing"},
        headers=auth_headers,
    )
    assert resp.status_code == 404


def test_auth_is_required_and_unknown_keys_refused(client: FlaskClient) -> None:
    assert client.get("/v1/actions").status_code == 401
    assert client.get("/v1/actions", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert (
        client.get("/v1/actions", headers={"Authorization": "Basic abc"}).get_json()["error"][
            "type"
        ]
        == "unauthorized"
    )


def test_keys_are_stored_hashed(app: Flask) -> None:
    from sqlalchemy import text

    with app.extensions["actioncage"].store.session() as s:
        _, secret = repo.create_key(s, "org-c")
        stored = [row[0] for row in s.execute(text("select key_hash from api_keys"))]
    assert secret not in stored and repo.hash_key(secret) in stored


def test_org_b_never_sees_org_a(
    app: Flask, client: FlaskClient, auth_headers: dict[str, str]
) -> None:
    a = client.post(
        "/v1/actions", json={"name": "secret", "code": CODE}, headers=auth_headers
    ).get_json()
    conv = client.post("/v1/conversations", json={"id": "conv-a"}, headers=auth_headers).get_json()
    other = _other_org_headers(app)
    assert client.get("/v1/actions", headers=other).get_json()["actions"] == []
    for path in (f"/v1/actions/{a['id']}", "/v1/actions/secret", f"/v1/conversations/{conv['id']}"):
        assert client.get(path, headers=other).status_code == 404
    assert client.post(f"/v1/actions/{a['id']}/execute", json={}, headers=other).status_code == 404
    assert (
        client.patch(f"/v1/actions/{a['id']}", json={"code": CODE}, headers=other).status_code
        == 404
    )
    assert client.delete(f"/v1/actions/{a['id']}", headers=other).status_code == 404
    # The same name and conversation id are free in org B.
    assert (
        client.post("/v1/actions", json={"name": "secret", "code": CODE}, headers=other).status_code
        == 201
    )
    assert client.post("/v1/conversations", json={"id": "conv-a"}, headers=other).status_code == 201


def test_conversation_create_and_read(client: FlaskClient, auth_headers: dict[str, str]) -> None:
    body = {
        "id": "c-1",
        "messages": [{"role": "user", "text": "hi"}],
        "metadata": {"lang": "en"},
        "tags": ["vip", "vip"],
    }
    resp = client.post("/v1/conversations", json=body, headers=auth_headers)
    assert resp.status_code == 201
    got = client.get("/v1/conversations/c-1", headers=auth_headers).get_json()
    assert (
        got["messages"] == body["messages"]
        and got["metadata"] == {"lang": "en"}
        and got["tags"] == ["vip"]
    )
    assert got["handedOff"] is False and got["events"] == []
    assert (
        client.post("/v1/conversations", json={"id": "c-1"}, headers=auth_headers).status_code
        == 409
    )
    generated = client.post("/v1/conversations", json={}, headers=auth_headers).get_json()
    assert generated["id"].startswith("conv_")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_json_sent_without_the_json_content_type_says_so(
    client: FlaskClient, auth_headers: dict[str, str], content_type: str | None
) -> None:
    body = '{"name": "x", "code": "def execute_action(context):\\n    return 1\\n"}'
    kwargs: dict[str, Any] = {"data": body}
    if content_type is not None:
        kwargs["content_type"] = content_type
    resp = client.post("/v1/actions", headers=auth_headers, **kwargs)
    assert resp.status_code == 400
    message = resp.get_json()["error"]["message"]
    assert "Content-Type: application/json" in message, message
    assert (content_type or "none") in message
    # A JSON content type with a body that is not an object keeps the plain message.
    resp = client.post("/v1/actions", headers=auth_headers, json=[1])
    assert "Content-Type" not in resp.get_json()["error"]["message"]
