"""GET /v1/tools: an org's actions as MCP, OpenAI and Anthropic tool definitions, strict only
when the schema meets that provider's strict mode, with the reasons when not."""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient

CODE = "def execute_action(context):\n    return 1\n"
CLOSED = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "description": "the city"},
        "unit": {"type": ["string", "null"], "enum": ["C", "F", None]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
OPEN = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 2},
        "days": {"type": "integer", "minimum": 1, "maximum": 14},
        "filters": {"type": "object", "properties": {"tag": {"type": "string"}}},
    },
    "required": ["city"],
}


def _export(client: FlaskClient, headers: dict[str, str], format_: str) -> dict[str, Any]:
    resp = client.get(f"/v1/tools?format={format_}", headers=headers)
    assert resp.status_code == 200, resp.get_json()
    body: dict[str, Any] = resp.get_json()
    return body


def _setup(make_action: Any) -> None:
    make_action(CODE, name="weather", parameters=CLOSED, description="The weather")
    make_action(CODE, name="forecast", parameters=OPEN, returns={"type": "integer"})
    make_action(CODE, name="ping", parameters=False)


def test_openai_tools_are_strict_only_when_the_schema_allows(
    client: FlaskClient, auth_headers: dict[str, str], make_action: Any
) -> None:
    _setup(make_action)
    out = _export(client, auth_headers, "openai")
    tools = {t["name"]: t for t in out["tools"]}
    assert tools["weather"] == {
        "type": "function",
        "name": "weather",
        "description": "The weather",
        "parameters": CLOSED,
        "strict": True,
    }
    assert tools["ping"]["strict"] is True
    assert tools["ping"]["parameters"] == {
        "type": "object",
        "properties": {},
        "required": [],
        "additionalProperties": False,
    }
    assert tools["forecast"]["strict"] is False
    reasons = {s["name"]: s["reasons"] for s in out["strictness"]}
    assert reasons["weather"] == [] and reasons["ping"] == []
    assert reasons["forecast"] == [
        "(root): objects must set additionalProperties to false",
        "(root): every property must be required (optional ones take a null type): days, filters",
        "/properties/city: minLength is not supported",
        "/properties/filters: objects must set additionalProperties to false",
        "/properties/filters: every property must be required (optional ones take a null "
        "type): tag",
    ]


def test_anthropic_tools_allow_optional_properties_but_no_bounds(
    client: FlaskClient, auth_headers: dict[str, str], make_action: Any
) -> None:
    _setup(make_action)
    optional = {**CLOSED, "required": ["city"]}
    make_action(CODE, name="optional", parameters=optional)
    out = _export(client, auth_headers, "anthropic")
    tools = {t["name"]: t for t in out["tools"]}
    assert set(tools["weather"]) == {"name", "description", "input_schema", "strict"}
    assert tools["weather"]["strict"] and tools["optional"]["strict"]
    reasons = {s["name"]: s["reasons"] for s in out["strictness"]}
    assert not tools["forecast"]["strict"]
    assert reasons["forecast"] == [
        "(root): objects must set additionalProperties to false",
        "/properties/city: minLength is not supported",
        "/properties/days: maximum is not supported",
        "/properties/days: minimum is not supported",
        "/properties/filters: objects must set additionalProperties to false",
    ]


def test_mcp_format_matches_tools_list_and_other_formats_are_refused(
    client: FlaskClient, auth_headers: dict[str, str], make_action: Any
) -> None:
    _setup(make_action)
    out = _export(client, auth_headers, "mcp")
    assert "strictness" not in out
    tools = {t["name"]: t for t in out["tools"]}
    assert tools["forecast"]["outputSchema"] == {
        "type": "object",
        "properties": {"result": {"type": "integer"}},
        "required": ["result"],
    }
    listed = client.post(
        "/mcp",
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}},
        headers={**auth_headers, "Accept": "application/json, text/event-stream"},
    ).get_json()["result"]["tools"]
    assert {t["name"]: t for t in listed} == tools
    assert (
        _export(client, auth_headers, "mcp")
        == client.get("/v1/tools", headers=auth_headers).get_json()
    )
    bad = client.get("/v1/tools?format=gemini", headers=auth_headers)
    assert bad.status_code == 422 and bad.get_json()["error"]["field"] == "format"
    assert client.get("/v1/tools").status_code == 401
