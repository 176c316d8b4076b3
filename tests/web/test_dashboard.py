"""The dashboard over Flask's test client: sign-in, CSRF, pages, dry-run tests, run history."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from actioncage import create_app
from actioncage.settings import Settings
from tests.conftest import API_KEY, make_settings

PY = "def execute_action(context):\n    return context['args'].get('who')\n"


def _csrf(client: FlaskClient, path: str = "/login") -> str:
    html = client.get(path).get_data(as_text=True)
    match = re.search(r'name="csrf-token" content="([^"]+)"', html)
    assert match, html
    return match.group(1)


def _sign_in(client: FlaskClient) -> str:
    token = _csrf(client)
    resp = client.post("/login", data={"api_key": API_KEY, "csrf": token})
    assert resp.status_code == 302 and resp.headers["Location"] == "/"
    return _csrf(client, "/")  # a fresh token after sign-in


def test_pages_redirect_to_sign_in_and_json_calls_get_401(client: FlaskClient) -> None:
    resp = client.get("/")
    assert resp.status_code == 302 and resp.headers["Location"] == "/login"
    token = _csrf(client)
    resp = client.post("/ui/actions", json={}, headers={"X-CSRF-Token": token})
    assert resp.status_code == 401 and resp.get_json()["error"]["type"] == "unauthorized"


def test_a_wrong_key_is_refused_and_the_key_never_lands_in_the_cookie(
    client: FlaskClient,
) -> None:
    token = _csrf(client)
    resp = client.post("/login", data={"api_key": "nope", "csrf": token})
    assert resp.status_code == 401 and "matches nothing" in resp.get_data(as_text=True)
    _sign_in(client)
    cookie = client.get_cookie("session")
    assert cookie is not None and API_KEY not in cookie.value
    assert "HttpOnly" in client.get("/").headers.get("Set-Cookie", "HttpOnly")


def test_posts_without_the_csrf_token_are_refused(client: FlaskClient) -> None:
    _sign_in(client)
    resp = client.post("/ui/actions", json={"name": "x", "code": PY})
    assert resp.status_code == 403 and "CSRF" in resp.get_json()["error"]["message"]
    resp = client.post(
        "/ui/actions", json={"name": "x", "code": PY}, headers={"X-CSRF-Token": "no"}
    )
    assert resp.status_code == 403
    assert client.post("/logout").status_code == 403


def test_save_errors_carry_the_line(client: FlaskClient) -> None:
    token = _sign_in(client)
    resp = client.post(
        "/ui/actions",
        json={"name": "bad", "code": "def execute_action(context):\n    return (\n"},
        headers={"X-CSRF-Token": token},
    )
    assert resp.status_code == 422 and resp.get_json()["error"]["line"] == 2


def test_pages_render_with_a_strict_csp_and_test_args_detected(client: FlaskClient) -> None:
    token = _sign_in(client)
    created = client.post(
        "/ui/actions", json={"name": "who", "code": PY}, headers={"X-CSRF-Token": token}
    ).get_json()
    index = client.get("/")
    assert index.status_code == 200 and 'data-action="who"' in index.get_data(as_text=True)
    assert "script-src 'self'" in index.headers["Content-Security-Policy"]
    page = client.get(f"/actions/{created['id']}").get_data(as_text=True)
    assert 'data-arg="who"' in page
    assert client.get("/actions/new?type=api").status_code == 200
    assert client.get("/actions/nope").status_code == 404
    assert client.get("/runs?status=bogus").status_code == 422
    assert client.get("/runs?since=forever").status_code == 422
    resp = client.get(f"/actions/{created['id']}/runs?status=error")
    assert resp.status_code == 302
    assert resp.headers["Location"] == f"/runs?action={created['id']}&status=error"


def test_a_test_run_records_a_run_seen_in_history_with_filters(
    client: FlaskClient, auth_headers: dict[str, str]
) -> None:
    # An API action needs no engine: its call is refused by the egress guard (loopback).
    token = _sign_in(client)
    h = {"X-CSRF-Token": token}
    action: dict[str, Any] = client.post(
        "/ui/actions",
        json={"name": "api", "type": "api", "endpoint": {"url": "http://127.0.0.1:9/x/$id"}},
        headers=h,
    ).get_json()
    run = client.post(
        f"/ui/actions/{action['id']}/test", json={"args": {"id": "1"}}, headers=h
    ).get_json()
    assert run["status"] == "error" and "egress refused" in run["error"]["message"]
    invalid = client.post(f"/ui/actions/{action['id']}/test", json={"args": {}}, headers=h)
    assert invalid.status_code == 200 and invalid.get_json()["error"]["type"] == "invalid_args"
    history = client.get(f"/runs?action={action['id']}").get_data(as_text=True)
    assert run["runId"] in history and invalid.get_json()["runId"] in history
    only_invalid = client.get("/runs?action=api&status=invalid_args")
    assert run["runId"] not in only_invalid.get_data(as_text=True)
    assert invalid.get_json()["runId"] in only_invalid.get_data(as_text=True)
    assert client.get("/runs?status=ok&since=1h").get_data(as_text=True).count("data-run=") == 0
    assert client.get("/runs?since=1h").get_data(as_text=True).count("data-run=") == 2
    page = client.get(f"/runs/{run['runId']}").get_data(as_text=True)
    assert "egress refused" in page
    # The args the run was called with are on its page and its record.
    assert '<pre id="run-args">' in page and "&#34;id&#34;: &#34;1&#34;" in page
    # The test runs are on the audit trail like any run.
    record = client.get(f"/v1/runs/{run['runId']}", headers=auth_headers)
    assert record.status_code == 200 and record.get_json()["args"] == {"id": "1"}


def test_bad_test_bodies_are_json_4xx(client: FlaskClient) -> None:
    token = _sign_in(client)
    h = {"X-CSRF-Token": token}
    created = client.post("/ui/actions", json={"name": "who", "code": PY}, headers=h).get_json()
    url = f"/ui/actions/{created['id']}/test"
    assert client.post(url, json={"applyEffects": "yes"}, headers=h).status_code == 422
    assert client.post(url, json={"args": 3}, headers=h).status_code == 422
    assert client.post(url, json={"conversationId": "nope"}, headers=h).status_code == 404
    assert client.post(url, data="x", headers=h).status_code == 400


def test_sign_out_ends_the_session(client: FlaskClient) -> None:
    token = _sign_in(client)
    assert client.post("/logout", data={"csrf": token}).status_code == 302
    assert client.get("/").status_code == 302


def test_two_processes_on_one_database_accept_each_others_sessions(
    app: Flask, client: FlaskClient, settings: Settings, tmp_path: Path
) -> None:
    _sign_in(client)
    cookie = client.get_cookie("session")
    assert cookie is not None
    other = create_app(settings)  # no ACTIONCAGE_SECRET_KEY: the key comes from the database
    elsewhere = create_app(make_settings(tmp_path / "elsewhere"))
    try:
        assert other.secret_key == app.secret_key
        for peer, status in ((other, 200), (elsewhere, 302)):
            peer_client = peer.test_client()
            peer_client.set_cookie("session", cookie.value)
            assert peer_client.get("/").status_code == status
    finally:
        other.extensions["actioncage"].close()
        elsewhere.extensions["actioncage"].close()


HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}


def test_browsers_get_html_error_pages_and_api_clients_json(client: FlaskClient) -> None:
    token = _sign_in(client)
    page = client.get("/runs/run_nope", headers=HTML)
    assert page.status_code == 404 and page.content_type.startswith("text/html")
    text = page.get_data(as_text=True)
    assert 'id="error-page"' in text and "no run" in text and 'id="nav"' in text
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert client.get("/runs/run_nope").get_json()["error"]["type"] == "not_found"
    # A form posted with a stale token: a 403 page, not JSON.
    stale = client.post("/keys", data={"csrf": "stale"}, headers=HTML)
    assert stale.status_code == 403 and "CSRF" in stale.get_data(as_text=True)
    assert "<html" in stale.get_data(as_text=True)
    # The pages' JSON calls stay JSON whatever the browser accepts.
    api = client.post("/ui/actions", json={}, headers={**HTML, "X-CSRF-Token": "no"})
    assert api.status_code == 403 and api.get_json()["error"]["type"] == "forbidden"
    assert client.post("/ui/actions", json={"name": "x"}, headers={"X-CSRF-Token": token})


def test_keys_are_listed_created_and_revoked(
    client: FlaskClient, auth_headers: dict[str, str]
) -> None:
    token = _sign_in(client)
    made = client.post("/keys", data={"csrf": token})
    text = made.get_data(as_text=True)
    match = re.search(r'id="new-key-secret">([^<]+)<', text)
    assert made.status_code == 200 and match, text
    secret = match.group(1)
    other = {"Authorization": f"Bearer {secret}"}
    assert client.get("/v1/actions", headers=other).status_code == 200
    key_id = re.findall(r'data-revoke="([^"]+)"', text)[-1]
    revoked = client.post(f"/keys/{key_id}/revoke", data={"csrf": token})
    assert revoked.status_code == 200 and f"Key {key_id} revoked." in revoked.get_data(as_text=True)
    assert re.search(rf'data-key="{key_id}" data-state="revoked"', revoked.get_data(as_text=True))
    assert client.get("/v1/actions", headers=other).status_code == 401
    assert client.post("/keys/key_nope/revoke", data={"csrf": token}).status_code == 404
    # Revoking the session's own key signs the session out.
    own = re.search(
        r'data-key="([^"]+)" data-state="live">\s*<td data-label="Key"><code>[^<]+</code> <span class="pill">this session',
        revoked.get_data(as_text=True),
    )
    assert own, revoked.get_data(as_text=True)
    out = client.post(f"/keys/{own.group(1)}/revoke", data={"csrf": token})
    assert out.status_code == 302 and out.headers["Location"] == "/login"
    assert client.get("/").status_code == 302


def test_conversations_policy_and_the_test_panels_conversation(client: FlaskClient) -> None:
    token = _sign_in(client)
    assert 'id="no-conversations"' in client.get("/conversations").get_data(as_text=True)
    made = client.post("/ui/conversations", json={"id": "conv-9"}, headers={"X-CSRF-Token": token})
    assert made.status_code == 201 and made.get_json()["id"] == "conv-9"
    listed = client.get("/conversations").get_data(as_text=True)
    assert 'data-conversation="conv-9"' in listed
    one = client.get("/conversations/conv-9")
    assert one.status_code == 200 and 'id="conversation-id"' in one.get_data(as_text=True)
    assert client.get("/conversations/nope").status_code == 404
    policy = client.get("/policy").get_data(as_text=True)
    assert 'id="max-timeout">60000 ms' in policy and "No action of this org may reach" in policy
