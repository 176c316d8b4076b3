"""The MCP front door at /mcp: real `mcp` clients (2.x on the 2026-07-28 revision and on the
handshake, a 1.x on 2025-11-25) against a real `actioncage serve`; the refusals and the error
table through the app."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import anyio
import pytest
from flask import Flask
from flask.testing import FlaskClient
from mcp.shared.exceptions import MCPError

from actioncage.models import FrontDoor, OrgPolicy
from actioncage.store import Store, repo
from tests.conftest import API_KEY
from tests.mcp_clients import mcp1_session, mcp_client
from tests.served import ACTIONCAGE, http, serve_env, served

ADD = (
    "def execute_action(context):\n"
    "    a = context['args']\n"
    "    set_conversation_metadata(context, 'last', a['a'] + a['b']) "
    "if context.get('conversation') else None\n"
    "    return {'sum': a['a'] + a['b']}\n"
)
ADD_PARAMETERS = {
    "type": "object",
    "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
    "required": ["a", "b"],
}
ADD_RETURNS = {
    "type": "object",
    "properties": {"sum": {"type": "integer"}},
    "required": ["sum"],
}
FAIL = "def execute_action(context):\n    raise ValueError('no such order')\n"
RPC_HEADERS = {"Accept": "application/json, text/event-stream"}


def _create(base: str, key: str, name: str, code: str, **fields: Any) -> dict[str, Any]:
    resp = http.post(
        f"{base}/v1/actions",
        headers={"Authorization": f"Bearer {key}"},
        json={"name": name, "code": code, **fields},
        timeout=10,
    )
    assert resp.status_code == 201, resp.text
    body: dict[str, Any] = resp.json()
    return body


def _new_key(env: dict[str, str], org: str) -> str:
    out = subprocess.run(
        [*ACTIONCAGE, "keys", "create", "--org", org],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def _run_record(env: dict[str, str], org: str, run_id: str) -> Any:
    store = Store(env["ACTIONCAGE_DATABASE_URL"])
    try:
        with store.session() as s:
            return repo.get_run(s, org, run_id)
    finally:
        store.dispose()


@pytest.mark.docker
def test_current_client_lists_its_orgs_actions_as_tools_and_calls_them(tmp_path: Path) -> None:
    env = serve_env(tmp_path, ACTIONCAGE_API_KEY=API_KEY)
    with served(tmp_path, ACTIONCAGE_API_KEY=API_KEY) as base:
        other_key = _new_key(env, "globex")
        _create(
            base,
            API_KEY,
            "add",
            ADD,
            parameters=ADD_PARAMETERS,
            description="Adds a and b",
            returns=ADD_RETURNS,
        )
        _create(base, API_KEY, "fails", FAIL)
        _create(base, other_key, "theirs", "def execute_action(context):\n    return 1\n")

        async def session() -> dict[str, Any]:
            seen: dict[str, Any] = {}
            async with mcp_client(base, API_KEY) as client:
                seen["version"] = client.protocol_version
                seen["tools"] = {t.name: t for t in (await client.list_tools()).tools}
                seen["ok"] = await client.call_tool("add", {"a": 2, "b": 3})
                seen["bad_args"] = await client.call_tool("add", {"a": 2})
                seen["fails"] = await client.call_tool("fails", {})
                with pytest.raises(MCPError) as unknown:
                    await client.call_tool("theirs", {})
                seen["unknown"] = unknown.value
                meta = {
                    "io.actioncage/conversationId": "agent-chat-1",
                    "io.actioncage/idempotencyKey": "call-1",
                }
                seen["first"] = await client.call_tool("add", {"a": 1, "b": 1}, meta=meta)
                seen["again"] = await client.call_tool("add", {"a": 1, "b": 1}, meta=meta)
            async with mcp_client(base, other_key) as client:
                seen["theirs"] = [t.name for t in (await client.list_tools()).tools]
            return seen

        seen = anyio.run(session)
        conversation = http.get(
            f"{base}/v1/conversations/agent-chat-1",
            headers={"Authorization": f"Bearer {API_KEY}"},
            timeout=10,
        ).json()

    assert seen["version"] == "2026-07-28"
    assert set(seen["tools"]) == {"add", "fails"} and seen["theirs"] == ["theirs"]
    add = seen["tools"]["add"]
    assert add.description == "Adds a and b" and add.input_schema == ADD_PARAMETERS
    assert add.output_schema == ADD_RETURNS
    assert seen["tools"]["fails"].input_schema == {"type": "object"}

    ok = seen["ok"]
    assert not ok.is_error and ok.structured_content == {"sum": 5}
    assert json.loads(ok.content[0].text) == {"sum": 5}
    run = _run_record(env, "default", ok.meta["io.actioncage/runId"])
    assert run.front_door is FrontDoor.MCP and run.output == {"sum": 5}

    for result, type_, message in [
        (seen["bad_args"], "invalid_args", "'b' is a required property"),
        (seen["fails"], "exception", "ValueError: no such order"),
    ]:
        assert result.is_error
        failure = json.loads(result.content[0].text)
        assert failure["error"]["type"] == type_ and message in failure["error"]["message"]

    assert seen["unknown"].code == -32602 and "theirs" in seen["unknown"].message

    first, again = seen["first"], seen["again"]
    assert first.meta["io.actioncage/runId"] == again.meta["io.actioncage/runId"]
    assert conversation["metadata"] == {"last": 2}


@pytest.mark.docker
def test_handshake_clients_get_the_2025_11_25_revision(tmp_path: Path) -> None:
    with served(tmp_path, ACTIONCAGE_API_KEY=API_KEY) as base:
        _create(base, API_KEY, "add", ADD, parameters=ADD_PARAMETERS)
        _create(base, API_KEY, "fails", FAIL)

        async def legacy() -> tuple[str, Any]:
            async with mcp_client(base, API_KEY, mode="legacy") as client:
                return client.protocol_version, await client.call_tool("add", {"a": 4, "b": 5})

        version, result = anyio.run(legacy)
        old = mcp1_session(
            base, API_KEY, [("add", {"a": 1, "b": 2}), ("fails", {}), ("missing", {})]
        )

    assert version == "2025-11-25" and result.structured_content == {"sum": 9}
    assert old["protocolVersion"] == "2025-11-25" and old["serverName"] == "actioncage"
    assert {t["name"]: t["inputSchema"] for t in old["tools"]}["add"] == ADD_PARAMETERS
    ok, fails, missing = old["calls"]
    assert ok["structuredContent"] == {"sum": 3} and not ok["isError"]
    assert fails["isError"] and "no such order" in fails["content"][0]["text"]
    assert missing.get("code") == -32602 or missing.get("isError"), missing


def _rpc(method: str, params: dict[str, Any], id_: int = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id_, "method": method, "params": params}


def test_no_key_is_401_with_www_authenticate(client: FlaskClient) -> None:
    resp = client.post("/mcp", json=_rpc("tools/list", {}), headers=RPC_HEADERS)
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert resp.get_json()["error"]["code"] == -32600
    wrong = {**RPC_HEADERS, "Authorization": "Bearer nope"}
    assert client.post("/mcp", json=_rpc("tools/list", {}), headers=wrong).status_code == 401


def test_a_foreign_origin_is_403_and_an_allowed_one_is_served(
    client: FlaskClient, auth_headers: dict[str, str]
) -> None:
    headers = {**RPC_HEADERS, **auth_headers}
    for origin in ("http://evil.example", "null"):
        resp = client.post(
            "/mcp", json=_rpc("tools/list", {}), headers={**headers, "Origin": origin}
        )
        assert resp.status_code == 403, origin
        assert resp.get_json()["id"] is None
    own = client.post(
        "/mcp", json=_rpc("tools/list", {}), headers={**headers, "Origin": "http://localhost"}
    )
    assert own.status_code == 200 and own.get_json()["result"]["tools"] == []


def test_tools_list_over_plain_json_rpc(
    client: FlaskClient, auth_headers: dict[str, str], make_action: Any
) -> None:
    make_action(FAIL, name="nothing", parameters=False, description="takes nothing")
    resp = client.post("/mcp", json=_rpc("tools/list", {}), headers={**RPC_HEADERS, **auth_headers})
    assert resp.status_code == 200 and resp.content_type == "application/json"
    (tool,) = resp.get_json()["result"]["tools"]
    assert tool["name"] == "nothing" and tool["description"] == "takes nothing"
    assert tool["inputSchema"] == {"type": "object"}  # parameters false: any object


@pytest.mark.docker
def test_a_caller_over_its_limit_hears_429_with_retry_after(
    app: Flask, client: FlaskClient, auth_headers: dict[str, str], make_action: Any
) -> None:
    make_action("def execute_action(context):\n    return 1\n", name="one")
    with app.extensions["actioncage"].store.session() as s:
        repo.set_org_policy(s, "default", OrgPolicy(runs_per_minute=1))
    headers = {**RPC_HEADERS, **auth_headers}
    call = _rpc("tools/call", {"name": "one", "arguments": {}})
    first = client.post("/mcp", json=call, headers=headers)
    assert first.status_code == 200 and first.get_json()["result"]["structuredContent"] == {
        "result": 1
    }
    second = client.post("/mcp", json=call, headers=headers)
    assert second.status_code == 429 and int(second.headers["Retry-After"]) >= 1
    error = second.get_json()["error"]
    assert error["code"] == -32029 and error["data"]["type"] == "rate_limited"


def test_returns_is_advertised_as_the_output_schema(
    client: FlaskClient, auth_headers: dict[str, str], make_action: Any
) -> None:
    make_action(FAIL, name="order", returns=ADD_RETURNS)
    make_action(FAIL, name="count", returns={"type": "integer"})
    make_action(FAIL, name="free")
    resp = client.post("/mcp", json=_rpc("tools/list", {}), headers={**RPC_HEADERS, **auth_headers})
    tools = {t["name"]: t for t in resp.get_json()["result"]["tools"]}
    assert tools["order"]["outputSchema"] == ADD_RETURNS
    # Tools' output schemas are objects: a scalar result is structuredContent.result.
    assert tools["count"]["outputSchema"] == {
        "type": "object",
        "properties": {"result": {"type": "integer"}},
        "required": ["result"],
    }
    assert "outputSchema" not in tools["free"]
