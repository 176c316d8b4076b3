"""/openapi.json: a valid OpenAPI 3.1 document of every route, derived from the schemas that
validate requests; and the check every test response goes through."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.openapi_check import check_response


def _template(path: str) -> str:
    """A path with its parameters' names dropped: Flask's ``<x>`` and OpenAPI's ``{x}``."""
    return re.sub(r"<[^>]+>|\{[^}]+\}", "{}", path)


def test_openapi_is_a_valid_document_of_every_route(app: Flask, client: FlaskClient) -> None:
    from openapi_spec_validator import validate

    doc = client.get("/openapi.json").get_json()
    validate(doc)
    assert doc["openapi"].startswith("3.1")
    documented = {_template(p): item for p, item in doc["paths"].items()}
    routed = set()
    for rule in app.url_map.iter_rules():
        path = _template(rule.rule)
        routed.add(path)
        assert path in documented, f"{rule.rule} ({rule.endpoint}) is not in /openapi.json"
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert method.lower() in documented[path], f"{method} {rule.rule} is undocumented"
    assert set(documented) <= routed, set(documented) - routed


def test_the_document_shows_what_the_api_takes_and_gives(client: FlaskClient) -> None:
    doc = client.get("/openapi.json").get_json()
    schemas = doc["components"]["schemas"]
    assert "egress" in schemas["Policy"]["properties"]
    assert "egress" in schemas["Run"]["required"]
    execute = doc["paths"]["/v1/actions/{actionRef}/execute"]["post"]["responses"]
    for status in ("422", "503"):
        refs = execute[status]["content"]["application/json"]["schema"]["oneOf"]
        assert {"$ref": "#/components/schemas/Run"} in refs
    assert execute["202"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Waiting"
    }


def test_requests_are_validated_by_the_documented_schema(
    client: FlaskClient, auth_headers: dict[str, str]
) -> None:
    code = "def execute_action(context):\n    return 1\n"
    body: dict[str, Any] = {"name": "a", "code": code, "policy": {"timeoutMs": "soon"}}
    resp = client.post("/v1/actions", json=body, headers=auth_headers)
    error = resp.get_json()["error"]
    assert resp.status_code == 422 and error["field"] == "policy.timeoutMs"
    assert error["message"] == "policy.timeoutMs must be a number"
    body = {"name": "a", "code": code, "endpointt": {}}
    resp = client.post("/v1/actions", json=body, headers=auth_headers)
    assert resp.get_json()["error"]["message"] == "unknown field 'endpointt'"
    body = {"name": "a", "code": code, "invocationTrigger": None, "policy": {"egress": None}}
    resp = client.post("/v1/actions", json=body, headers=auth_headers)
    assert resp.status_code == 201, resp.get_json()
    assert resp.get_json()["invocationTrigger"] == "user_query"


_RUN = {
    "runId": "run_1",
    "actionId": "act_1",
    "actionVersion": 1,
    "conversationId": None,
    "status": "ok",
    "output": 1,
    "error": None,
    "effects": [],
    "effectsApplied": False,
    "durationMs": 5,
    "logs": "",
    "startedAt": "2025-01-01T00:00:00Z",
    "finishedAt": "2025-01-01T00:00:01Z",
    "imageDigest": None,
    "policyHash": None,
    "egress": [],
    "callerKeyId": None,
    "args": {},
    "secrets": [],
    "executor": None,
    "isolation": None,
    "runtimeVersion": None,
}


def _json(value: Any) -> bytes:
    import json

    return json.dumps(value).encode()


def test_the_response_check_accepts_a_documented_answer() -> None:
    check_response("GET", "/v1/runs/run_1", 200, "application/json", _json(_RUN))
    check_response("POST", "/v1/actions/a/execute", 422, "application/json", _json(_RUN))
    check_response("DELETE", "/v1/actions/a", 204, "text/html; charset=utf-8", b"")
    check_response(
        "GET",
        "/v1/nowhere",
        404,
        "application/json",
        _json({"error": {"type": "not_found", "message": "x"}}),
    )


@pytest.mark.parametrize(
    ("method", "path", "status", "content_type", "body", "says"),
    [
        ("GET", "/v1/runs/run_1", 200, "application/json", {**_RUN, "extra": 1}, "extra"),
        ("GET", "/v1/runs/run_1", 200, "application/json", {**_RUN, "status": "maybe"}, "status"),
        ("GET", "/v1/runs/run_1", 418, "application/json", _RUN, "does not list"),
        ("GET", "/v1/runs/run_1", 200, "text/plain", _RUN, "the document says"),
        ("POST", "/v1/actions/a/execute", 202, "application/json", _RUN, "does not describe"),
        ("PUT", "/v1/runs/run_1", 200, "application/json", _RUN, "has no put"),
    ],
)
def test_the_response_check_fails_an_undocumented_answer(
    method: str, path: str, status: int, content_type: str, body: Any, says: str
) -> None:
    with pytest.raises(AssertionError, match=says):
        check_response(method, path, status, content_type, _json(body))
