"""API actions through /v1 against a real HTTP server on loopback: templating and encoding,
arguments, errors, limits, the egress guard and write-only secret headers."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from actioncage.errors import PolicyError
from actioncage.models import OrgPolicy, Policy
from actioncage.sandbox.limits import check_policy, effective_limits
from actioncage.settings import Settings
from actioncage.store import repo
from tests.conftest import make_settings


class Upstream:
    """A loopback server: echoes requests on /echo..., and misbehaves on a few paths."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.hits = 0
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                upstream.hits += 1
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if self.path.startswith("/missing"):
                    self._send(404, b"no such order here", "text/plain")
                elif self.path.startswith("/slow"):
                    upstream.release.wait(10)
                    self._send(200, b"{}", "application/json")
                elif self.path.startswith("/big"):
                    self._send(200, b"x" * 200_000, "text/plain")
                elif self.path.startswith("/text"):
                    self._send(200, "plain ünïcode".encode(), "text/plain; charset=utf-8")
                elif self.path.startswith("/redirect"):
                    self.send_response(302)
                    self.send_header("Location", "http://169.254.169.254/latest/meta-data")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                else:
                    echo = {
                        "method": self.command,
                        "target": self.path,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "body": json.loads(body) if body else None,
                    }
                    self._send(200, json.dumps(echo).encode(), "application/json")

            def _send(self, status: int, data: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    yield server
    server.close()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(
        tmp_path,
        egress_allowed_cidrs="127.0.0.0/8",
        default_egress="127.0.0.1",
        max_api_response_bytes=100_000,
    )


@pytest.fixture
def make_api(client: FlaskClient, auth_headers: dict[str, str]) -> Any:
    def _make(endpoint: dict[str, Any], name: str = "apiAct", **extra: Any) -> dict[str, Any]:
        resp = client.post(
            "/v1/actions",
            json={"name": name, "type": "api", "endpoint": endpoint, **extra},
            headers=auth_headers,
        )
        assert resp.status_code == 201, resp.get_json()
        body: dict[str, Any] = resp.get_json()
        return body

    return _make


def test_variables_become_required_string_args_and_land_encoded(
    upstream: Upstream, make_api: Any, execute: Any
) -> None:
    action = make_api(
        {
            "url": upstream.base + "/orders/$orderId/items",
            "method": "POST",
            "headers": {"X-Customer": "cust-$customerEmail"},
            "query": {"lang": "en", "q": "$search"},
            "payload": {"orderId": "$orderId", "note": "for $customerEmail", "fixed": [1, True]},
        }
    )
    assert action["type"] == "api" and action["code"] == ""
    assert action["parameters"] == {
        "type": "object",
        "properties": {
            "orderId": {"type": "string"},
            "customerEmail": {"type": "string"},
            "search": {"type": "string"},
        },
        "required": ["orderId", "customerEmail", "search"],
        "additionalProperties": False,
    }
    status, run = execute(
        action["id"],
        {"orderId": "a/b?c#d e", "search": "x&y=z ü", "customerEmail": "ada@example.com"},
    )
    assert status == 200 and run["status"] == "ok", run
    echo = run["output"]
    assert echo["method"] == "POST"
    assert echo["target"] == "/orders/a%2Fb%3Fc%23d%20e/items?lang=en&q=x%26y%3Dz+%C3%BC"
    assert echo["headers"]["x-customer"] == "cust-ada@example.com"
    assert echo["headers"]["content-type"] == "application/json"
    assert echo["body"] == {
        "orderId": "a/b?c#d e",
        "note": "for ada@example.com",
        "fixed": [1, True],
    }
    assert "-> 200" in run["logs"] and run["error"] is None


def test_refined_schema_types_whole_slots_as_json(
    upstream: Upstream, make_api: Any, execute: Any
) -> None:
    action = make_api(
        {
            "url": upstream.base + "/stock/$sku",
            "method": "PUT",
            "payload": {"count": "$count", "label": "n=$count", "sku": "$sku"},
        },
        parameters={
            "type": "object",
            "properties": {"count": {"type": "integer"}, "sku": {"type": "string"}},
        },
    )
    assert action["parameters"]["required"] == ["sku", "count"]
    status, run = execute(action["id"], {"count": 3, "sku": "A1"})
    assert status == 200, run
    assert run["output"]["body"] == {"count": 3, "label": "n=3", "sku": "A1"}
    assert run["output"]["target"] == "/stock/A1"
    # The schema says integer: a string is the caller's mistake.
    status, run = execute(action["id"], {"count": "3", "sku": "A1"})
    assert status == 422 and run["error"]["type"] == "invalid_args"


@pytest.mark.parametrize(
    ("args", "needle"),
    [({}, "orderId"), ({"orderId": "1", "extra": 2}, "extra"), ({"orderId": 5}, "orderId")],
)
def test_missing_extra_or_mistyped_args_are_invalid_args(
    upstream: Upstream, make_api: Any, execute: Any, args: dict[str, Any], needle: str
) -> None:
    action = make_api({"url": upstream.base + "/orders/$orderId"})
    status, run = execute(action["id"], args)
    assert status == 422 and run["error"]["type"] == "invalid_args"
    assert needle in run["error"]["message"]


def test_a_line_break_into_a_header_is_refused(
    upstream: Upstream, make_api: Any, execute: Any
) -> None:
    action = make_api({"url": upstream.base + "/echo", "headers": {"X-Who": "$who"}})
    status, run = execute(action["id"], {"who": "a\r\nX-Injected: 1"})
    assert status == 422 and run["error"]["type"] == "invalid_args"
    assert "line break" in run["error"]["message"]


def test_non_2xx_is_an_error_with_status_and_short_body(
    upstream: Upstream, make_api: Any, execute: Any, client: FlaskClient, auth_headers: Any
) -> None:
    action = make_api({"url": upstream.base + "/missing/$id"})
    status, run = execute(action["id"], {"id": "7"})
    assert status == 200 and run["status"] == "error" and run["output"] is None
    assert run["error"]["type"] == "exception"
    assert "HTTP 404" in run["error"]["message"] and "no such order" in run["error"]["message"]
    stored = client.get(f"/v1/runs/{run['runId']}", headers=auth_headers).get_json()
    assert stored["error"] == run["error"] and stored["actionId"] == action["id"]


def test_redirects_are_not_followed(upstream: Upstream, make_api: Any, execute: Any) -> None:
    action = make_api({"url": upstream.base + "/redirect"})
    _, run = execute(action["id"])
    assert run["status"] == "error" and "HTTP 302" in run["error"]["message"]


def test_text_answers_come_back_as_text(upstream: Upstream, make_api: Any, execute: Any) -> None:
    action = make_api({"url": upstream.base + "/text"})
    _, run = execute(action["id"])
    assert run["status"] == "ok" and run["output"] == "plain ünïcode"


def test_slow_answer_times_out(upstream: Upstream, make_api: Any, execute: Any) -> None:
    action = make_api({"url": upstream.base + "/slow", "timeoutMs": 300})
    _, run = execute(action["id"])
    assert run["status"] == "error" and run["error"]["type"] == "timeout"
    assert "300 ms" in run["error"]["message"]
    assert run["durationMs"] < 5000


def test_response_over_the_cap_is_output_limit(
    upstream: Upstream, make_api: Any, execute: Any
) -> None:
    action = make_api({"url": upstream.base + "/big"})
    _, run = execute(action["id"])
    assert run["status"] == "error" and run["error"]["type"] == "output_limit"


def test_loopback_is_refused_without_the_operator_cidr(
    tmp_path: Path, upstream: Upstream, auth_headers: dict[str, str]
) -> None:
    from actioncage import create_app

    app = create_app(make_settings(tmp_path / "strict", default_egress="127.0.0.1,169.254.169.254"))
    try:
        client = app.test_client()
        resp = client.post(
            "/v1/actions",
            json={"name": "local", "type": "api", "endpoint": {"url": upstream.base + "/echo"}},
            headers=auth_headers,
        )
        assert resp.status_code == 201
        run = client.post("/v1/actions/local/execute", json={}, headers=auth_headers).get_json()
        assert run["status"] == "error" and "egress refused" in run["error"]["message"]
        assert "forbidden range" in run["error"]["message"]
        meta = client.post(
            "/v1/actions",
            json={
                "name": "meta",
                "type": "api",
                "endpoint": {"url": "http://169.254.169.254/latest/meta-data"},
            },
            headers=auth_headers,
        )
        run = client.post("/v1/actions/meta/execute", json={}, headers=auth_headers).get_json()
        assert meta.status_code == 201 and "forbidden range" in run["error"]["message"]
    finally:
        app.extensions["actioncage"].close()


def test_secret_headers_are_masked_and_kept_on_update(
    upstream: Upstream, make_api: Any, execute: Any, client: FlaskClient, auth_headers: Any
) -> None:
    action = make_api(
        {
            "url": upstream.base + "/echo",
            "headers": {
                "Authorization": "Bearer s3cret",
                "x-api-key": "k-123",
                "X-Session-Token": "t-1",
                "Accept": "application/json",
            },
        }
    )
    assert action["endpoint"]["headers"] == {
        "Authorization": "***",
        "x-api-key": "***",
        "X-Session-Token": "***",
        "Accept": "application/json",
    }
    read = client.get(f"/v1/actions/{action['id']}", headers=auth_headers).get_json()
    assert "s3cret" not in json.dumps(read) and "k-123" not in json.dumps(read)
    # Send back what was read, replacing one secret: the others keep their stored values.
    headers = dict(read["endpoint"]["headers"], **{"X-Session-Token": "t-2"})
    resp = client.patch(
        f"/v1/actions/{action['id']}",
        json={"endpoint": {**read["endpoint"], "headers": headers}},
        headers=auth_headers,
    )
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["version"] == 2
    _, run = execute(action["id"])
    seen = run["output"]["headers"]
    assert seen["authorization"] == "Bearer s3cret" and seen["x-api-key"] == "k-123"
    assert seen["x-session-token"] == "t-2" and seen["accept"] == "application/json"
    # "***" for a secret that was never stored cannot be kept.
    resp = client.patch(
        f"/v1/actions/{action['id']}",
        json={"endpoint": {"url": upstream.base + "/echo", "headers": {"Cookie": "***"}}},
        headers=auth_headers,
    )
    assert (
        resp.status_code == 422 and resp.get_json()["error"]["field"] == "endpoint.headers.Cookie"
    )


def test_patching_the_endpoint_regenerates_the_schema(
    upstream: Upstream, make_api: Any, client: FlaskClient, auth_headers: Any
) -> None:
    action = make_api(
        {"url": upstream.base + "/a/$x"},
        parameters={"type": "object", "properties": {"x": {"type": "integer"}}},
    )
    resp = client.patch(
        f"/v1/actions/{action['id']}",
        json={"endpoint": {"url": upstream.base + "/a/$x/$y"}},
        headers=auth_headers,
    )
    params = resp.get_json()["parameters"]
    assert params["properties"] == {"x": {"type": "integer"}, "y": {"type": "string"}}
    assert params["required"] == ["x", "y"]


@pytest.mark.parametrize(
    ("endpoint", "extra", "field"),
    [
        ({"url": "http://$host/orders"}, {}, "endpoint.url"),
        ({"url": "http://api.example.com:$port/x"}, {}, "endpoint.url"),
        ({"url": "$scheme://api.example.com/x"}, {}, "endpoint.url"),
        ({"url": "ftp://api.example.com/x"}, {}, "endpoint.url"),
        ({"url": "http://user:pw@api.example.com/x"}, {}, "endpoint.url"),
        ({"url": "http://api.example.com/x", "method": "PATCH"}, {}, "endpoint.method"),
        ({"url": "http://api.example.com/x", "headers": {"Host": "evil"}}, {}, "endpoint.headers"),
        ({"url": "http://api.example.com/x", "headers": {"A": "b\r\nc"}}, {}, "endpoint.headers.A"),
        ({"url": "http://api.example.com/x", "headers": {"A": 1}}, {}, "endpoint.headers.A"),
        ({"url": "http://api.example.com/x", "timeoutMs": 10**7}, {}, "endpoint.timeoutMs"),
        ({"url": "http://api.example.com/x", "verb": "GET"}, {}, "endpoint.verb"),
        (
            {"url": "http://api.example.com/$a"},
            {"parameters": {"type": "object", "properties": {"b": {}}}},
            "parameters",
        ),
        ({"url": "http://api.example.com/x"}, {"code": "def execute_action(c): pass"}, "code"),
        (None, {}, "endpoint"),
    ],
)
def test_bad_endpoints_give_422_naming_the_field(
    client: FlaskClient,
    auth_headers: dict[str, str],
    endpoint: Any,
    extra: dict[str, Any],
    field: str,
) -> None:
    body: dict[str, Any] = {"name": "bad", "type": "api", **extra}
    if endpoint is not None:
        body["endpoint"] = endpoint
    resp = client.post("/v1/actions", json=body, headers=auth_headers)
    assert resp.status_code == 422, resp.get_json()
    assert resp.get_json()["error"]["field"] == field


def test_python_actions_take_no_endpoint(client: FlaskClient, auth_headers: Any) -> None:
    resp = client.post(
        "/v1/actions",
        json={
            "name": "py",
            "code": "def execute_action(c):\n    return 1\n",
            "endpoint": {"url": "http://api.example.com/"},
        },
        headers=auth_headers,
    )
    assert resp.status_code == 422 and resp.get_json()["error"]["field"] == "endpoint"


def _api_app(tmp_path: Path, **overrides: Any) -> Flask:
    from actioncage import create_app

    return create_app(make_settings(tmp_path, egress_allowed_cidrs="127.0.0.0/8", **overrides))


def _set_org_egress(app: Flask, egress: tuple[str, ...] | None) -> None:
    with app.extensions["actioncage"].store.session() as s:
        repo.set_org_policy(s, "default", OrgPolicy(egress=egress))


def _run_api(client: FlaskClient, headers: dict[str, str], url: str, **extra: Any) -> Any:
    made = client.post(
        "/v1/actions",
        json={"name": "ext", "type": "api", "endpoint": {"url": url}, **extra},
        headers=headers,
    )
    assert made.status_code == 201, made.get_json()
    ran = client.post("/v1/actions/ext/execute", json={}, headers=headers)
    assert ran.status_code == 200, ran.get_json()
    return ran.get_json()


def test_an_org_without_a_ceiling_reaches_no_host_by_default(
    tmp_path: Path, upstream: Upstream, auth_headers: dict[str, str]
) -> None:
    app = _api_app(tmp_path)  # no ACTIONCAGE_DEFAULT_EGRESS: closed
    try:
        run = _run_api(app.test_client(), auth_headers, upstream.base + "/echo")
        assert run["status"] == "error" and run["error"]["type"] == "exception"
        message = run["error"]["message"]
        host = upstream.base.removeprefix("http://")
        assert message.startswith(f"egress refused: {host} is outside"), message
        assert "no egress allowed" in message
        assert "org set-policy" in message and "ACTIONCAGE_DEFAULT_EGRESS=127.0.0.1" in message
        assert upstream.hits == 0
    finally:
        app.extensions["actioncage"].close()


def test_the_orgs_own_ceiling_replaces_the_operators_default(
    tmp_path: Path, upstream: Upstream, auth_headers: dict[str, str]
) -> None:
    app = _api_app(tmp_path, default_egress="127.0.0.1")
    try:
        client = app.test_client()
        _set_org_egress(app, ("api.example.com",))
        run = _run_api(client, auth_headers, upstream.base + "/echo")
        assert (
            run["status"] == "error"
            and "the org's ceiling (api.example.com)" in (run["error"]["message"])
        )
        _set_org_egress(app, ())  # an empty list of its own: nothing, whatever the default
        run = client.post("/v1/actions/ext/execute", json={}, headers=auth_headers).get_json()
        assert "no egress allowed" in run["error"]["message"]
        assert upstream.hits == 0
        _set_org_egress(app, ("127.0.0.1:" + upstream.base.rsplit(":", 1)[1],))
        run = client.post("/v1/actions/ext/execute", json={}, headers=auth_headers).get_json()
        assert run["status"] == "ok" and upstream.hits == 1
        _set_org_egress(app, None)  # back to the operator's default
        run = client.post("/v1/actions/ext/execute", json={}, headers=auth_headers).get_json()
        assert run["status"] == "ok" and upstream.hits == 2
    finally:
        app.extensions["actioncage"].close()


def test_an_api_actions_policy_egress_narrows_what_it_may_reach(
    tmp_path: Path, upstream: Upstream, auth_headers: dict[str, str]
) -> None:
    app = _api_app(tmp_path, default_egress="127.0.0.1,*.example.com")
    try:
        run = _run_api(
            app.test_client(),
            auth_headers,
            upstream.base + "/echo",
            policy={"egress": ["api.example.com"]},
        )
        assert run["status"] == "error"
        assert "not in the action's policy.egress (api.example.com)" in run["error"]["message"]
        assert upstream.hits == 0
    finally:
        app.extensions["actioncage"].close()


def test_scripts_get_the_operators_default_ceiling_too() -> None:
    settings = Settings(default_egress="api.example.com,*.partner.test")
    asked = Policy(egress=("api.example.com", "other.test", "x.partner.test"))
    assert effective_limits(asked, settings, None).egress == ("api.example.com", "x.partner.test")
    assert effective_limits(asked, settings, OrgPolicy()).egress == (
        "api.example.com",
        "x.partner.test",
    )
    assert effective_limits(asked, settings, OrgPolicy(egress=())).egress == ()
    assert effective_limits(asked, Settings(), None).egress == ()
    check_policy(Policy(egress=("api.example.com",)), settings, None)
    with pytest.raises(PolicyError, match="ACTIONCAGE_DEFAULT_EGRESS"):
        check_policy(Policy(egress=("other.test",)), settings, None)
