"""Org secrets: encrypted at rest, given only to the runs of actions that declare them, read
with get_secret or $secret.name, and masked as *** in everything a run leaves (logs, output,
errors, effects, the run record), as is or base64-, hex- or URL-encoded."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import inspect, text

from actioncage import create_app
from actioncage.components import build
from actioncage.errors import ConfigError
from actioncage.runs.masking import MASK, Masker
from actioncage.settings import Settings
from actioncage.store import Store, repo
from actioncage.vault import Vault, new_key
from tests.conftest import make_settings, wait_for
from tests.runs.conftest import Receiver
from tests.served import ACTIONCAGE, serve_env
from tests.test_http_actions import Upstream

KEY = new_key()
VALUE = "erp-Sk_9f/x+Q2==é?&z"


def _encodings(value: str) -> dict[str, str]:
    raw = value.encode()
    return {
        "plain": value,
        "base64": base64.b64encode(raw).decode(),
        "base64url": base64.urlsafe_b64encode(raw).decode(),
        "hex": raw.hex(),
        "url": quote(value, safe=""),
        "urlplus": quote_plus(value),
        "basicAuth": base64.b64encode(b"user:" + raw).decode(),
    }


LEAKS = _encodings(VALUE)
SCRIPT = """
import base64, urllib.parse

def execute_action(context):
    v = get_secret("erpKey")
    raw = v.encode()
    forms = {
        "plain": v,
        "base64": base64.b64encode(raw).decode(),
        "base64url": base64.urlsafe_b64encode(raw).decode(),
        "hex": raw.hex(),
        "url": urllib.parse.quote(v, safe=""),
        "urlplus": urllib.parse.quote_plus(v),
        "basicAuth": base64.b64encode(b"user:" + raw).decode(),
    }
    for name, form in forms.items():
        print(name, form)
    if context["conversation"] is not None:
        set_conversation_metadata(context, "stored", forms)
        add_conversation_event(context, {"leak": forms["hex"]})
    if context["args"].get("fail"):
        raise RuntimeError("could not reach ERP with " + " ".join(forms.values()))
    return forms
"""


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(
        tmp_path,
        secrets_key=KEY,
        egress_allowed_cidrs="127.0.0.0/8",
        default_egress="127.0.0.1",
    )


def _put(client: FlaskClient, headers: dict[str, str], name: str, value: str) -> Any:
    return client.post("/v1/secrets", json={"name": name, "value": value}, headers=headers)


def _no_leak(where: str, text_: str) -> None:
    for name, form in LEAKS.items():
        assert form not in text_, f"{name} form of the secret in {where}: {text_[:500]}"


def _dump_database(app: Flask) -> str:
    """Every row of every table as text, and for SQLite the database files' bytes."""
    store: Store = app.extensions["actioncage"].store
    parts = []
    with store.engine.connect() as conn:
        for table in inspect(conn).get_table_names():
            for row in conn.execute(text(f'SELECT * FROM "{table}"')):
                parts.append(repr(tuple(row)))
    url = store.engine.url
    if url.get_backend_name() == "sqlite" and url.database:
        for suffix in ("", "-wal", "-journal"):
            path = Path(url.database + suffix)
            if path.exists():
                parts.append(path.read_bytes().decode("latin-1"))
    return "\n".join(parts)


@pytest.mark.docker
def test_a_secret_never_shows_in_what_its_run_leaves(
    app: Flask,
    client: FlaskClient,
    auth_headers: dict[str, str],
    make_action: Any,
    receiver: Receiver,
) -> None:
    assert _put(client, auth_headers, "erpKey", VALUE).status_code == 201
    action = make_action(SCRIPT, name="erp", secrets=["erpKey"])
    client.post("/v1/conversations", json={"id": "c1"}, headers=auth_headers)

    ok = client.post(
        f"/v1/actions/{action['id']}/execute",
        json={"args": {}, "conversationId": "c1"},
        headers=auth_headers,
    ).get_json()
    assert ok["status"] == "ok", ok
    assert ok["secrets"] == ["erpKey"]
    assert ok["output"]["plain"] == MASK and ok["output"]["hex"] == MASK
    assert "plain ***" in ok["logs"] and "hex ***" in ok["logs"]
    failed = client.post(
        f"/v1/actions/{action['id']}/execute",
        json={"args": {"fail": True}, "conversationId": "c1"},
        headers=auth_headers,
    ).get_json()
    assert failed["error"]["type"] == "exception"
    assert failed["error"]["message"].startswith("RuntimeError: could not reach ERP with ***")

    background = client.post(
        f"/v1/actions/{action['id']}/execute",
        json={"args": {}, "callbackUrl": receiver.url},
        headers=auth_headers,
    )
    assert background.status_code in (200, 202), background.get_json()
    assert wait_for(lambda: len(receiver.received) == 1, timeout=30)
    callback = receiver.received[0][1].decode()
    assert json.loads(callback)["output"]["plain"] == MASK

    conversation = client.get("/v1/conversations/c1", headers=auth_headers).get_json()
    assert conversation["metadata"]["stored"]["plain"] == MASK
    for where, body in [
        ("the ok run", ok),
        ("the failed run", failed),
        ("the callback", json.loads(callback)),
        ("the conversation", conversation),
        ("the stored runs", client.get("/v1/runs", headers=auth_headers).get_json()),
    ]:
        _no_leak(where, json.dumps(body, ensure_ascii=False))
        _no_leak(where, json.dumps(body))
    _no_leak("the database", _dump_database(app))


@pytest.mark.docker
def test_only_a_declaring_action_of_the_same_org_reads_a_secret(
    app: Flask, client: FlaskClient, auth_headers: dict[str, str], run_code: Any
) -> None:
    assert _put(client, auth_headers, "erpKey", VALUE).status_code == 201
    read = "def execute_action(context):\n    return get_secret('erpKey')\n"
    undeclared = run_code(read, name="nosy")
    assert undeclared["error"]["type"] == "exception"
    assert (
        "SecretError: get_secret('erpKey'): this action does not declare that secret"
        in (undeclared["error"]["message"])
    )
    assert undeclared["secrets"] == []

    with app.extensions["actioncage"].store.session() as s:
        _, other = repo.create_key(s, "globex")
    other_headers = {"Authorization": f"Bearer {other}"}
    made = client.post(
        "/v1/actions",
        json={"name": "theirs", "code": read, "secrets": ["erpKey"]},
        headers=other_headers,
    )
    assert made.status_code == 201
    run = client.post(
        "/v1/actions/theirs/execute", json={"args": {}}, headers=other_headers
    ).get_json()
    assert run["error"]["type"] == "exception"
    assert "the secret is not available: the org has not set it" in run["error"]["message"]
    assert run["secrets"] == []


def test_an_api_action_puts_secrets_in_headers_query_and_body_and_masks_echoes(
    client: FlaskClient, auth_headers: dict[str, str]
) -> None:
    upstream = Upstream()
    try:
        assert _put(client, auth_headers, "erpKey", VALUE).status_code == 201
        endpoint = {
            "url": upstream.base + "/echo",
            "method": "POST",
            "headers": {"X-Api-Key": "$secret.erpKey"},
            "query": {"key": "$secret.erpKey", "q": "$q"},
            "payload": {"auth": "$secret.erpKey", "q": "$q"},
        }
        undeclared = client.post(
            "/v1/actions",
            json={"name": "erp", "type": "api", "endpoint": endpoint},
            headers=auth_headers,
        )
        assert undeclared.status_code == 422
        assert undeclared.get_json()["error"]["field"] == "secrets"
        made = client.post(
            "/v1/actions",
            json={"name": "erp", "type": "api", "endpoint": endpoint, "secrets": ["erpKey"]},
            headers=auth_headers,
        ).get_json()
        assert made["parameters"]["required"] == ["q"]  # a secret is no argument
        run = client.post(
            "/v1/actions/erp/execute", json={"args": {"q": "x"}}, headers=auth_headers
        ).get_json()
    finally:
        upstream.close()
    assert run["status"] == "ok", run
    echo = run["output"]
    assert echo["headers"]["x-api-key"] == MASK and echo["body"] == {"auth": MASK, "q": "x"}
    assert echo["target"] == f"/echo?key={MASK}&q=x"  # the URL-encoded form, masked
    assert run["secrets"] == ["erpKey"]
    _no_leak("the API run", json.dumps(run))


def test_secrets_api_is_write_only_and_lists_users(
    client: FlaskClient, auth_headers: dict[str, str], make_action: Any
) -> None:
    created = _put(client, auth_headers, "erpKey", VALUE)
    assert created.status_code == 201 and "value" not in created.get_json()
    make_action("def execute_action(context):\n    return 1\n", name="a", secrets=["erpKey"])
    replaced = _put(client, auth_headers, "erpKey", VALUE + "2")
    assert replaced.status_code == 200 and replaced.get_json()["usedBy"] == ["a"]
    listed = client.get("/v1/secrets", headers=auth_headers).get_json()["secrets"]
    assert [(s["name"], s["usedBy"]) for s in listed] == [("erpKey", ["a"])]
    assert VALUE not in json.dumps(listed)
    short = _put(client, auth_headers, "tiny", "abc")
    assert short.status_code == 422 and "abc" not in short.get_data(as_text=True)
    assert client.delete("/v1/secrets/erpKey", headers=auth_headers).status_code == 204
    assert client.delete("/v1/secrets/erpKey", headers=auth_headers).status_code == 404
    assert client.get("/v1/secrets", headers=auth_headers).get_json() == {"secrets": []}


def test_without_a_key_secrets_are_off_and_a_store_holding_some_refuses_to_start(
    tmp_path: Path,
) -> None:
    plain = make_settings(tmp_path)
    app = create_app(plain)
    try:
        headers = {"Authorization": f"Bearer {plain.api_key}"}
        off = _put(app.test_client(), headers, "erpKey", VALUE)
        assert (
            off.status_code == 409
            and "ACTIONCAGE_SECRETS_KEY" in off.get_json()["error"]["message"]
        )
    finally:
        app.extensions["actioncage"].close()
    keyed = make_settings(tmp_path, secrets_key=KEY)
    components = build(keyed, role="run")
    components.vault.put("default", "erpKey", VALUE)
    components.close()
    with pytest.raises(ConfigError, match="holds 1 org secret.*ACTIONCAGE_SECRETS_KEY is not"):
        build(plain, role="run")
    with pytest.raises(ConfigError, match="cannot decrypt the stored secrets"):
        build(make_settings(tmp_path, secrets_key=new_key()), role="run")


def test_keys_rotate_newest_first(tmp_path: Path) -> None:
    newer = new_key()
    store = Store(make_settings(tmp_path).database_url)
    store.upgrade()
    try:
        Vault(store, [KEY]).put("default", "erpKey", VALUE)
        both = Vault(store, [newer, KEY])
        assert both.values("default", ["erpKey", "other"]) == {"erpKey": VALUE, "other": None}
        assert both.rotate() == 1
        assert Vault(store, [newer]).values("default", ["erpKey"]) == {"erpKey": VALUE}
        with pytest.raises(ConfigError):
            Vault(store, [KEY]).check_readable()
    finally:
        store.dispose()


def test_a_malformed_key_stops_start_up_without_echoing_it() -> None:
    with pytest.raises(ConfigError, match="ACTIONCAGE_SECRETS_KEY") as caught:
        Settings.from_env({"ACTIONCAGE_SECRETS_KEY": f"{KEY},not-a-key"})
    assert "not-a-key" not in str(caught.value) and KEY not in str(caught.value)


def test_cli_secrets_set_reads_the_value_from_stdin(tmp_path: Path) -> None:
    env = serve_env(tmp_path, ACTIONCAGE_SECRETS_KEY=KEY)
    done = subprocess.run(
        [*ACTIONCAGE, "secrets", "set", "acme", "erpKey"],
        input=VALUE + "\n",
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert VALUE not in done.stdout + done.stderr
    store = Store(env["ACTIONCAGE_DATABASE_URL"])
    try:
        assert Vault(store, [KEY]).values("acme", ["erpKey"]) == {"erpKey": VALUE}
    finally:
        store.dispose()


def test_masking_covers_each_encoding_at_any_alignment() -> None:
    masker = Masker([VALUE])
    for name, form in LEAKS.items():
        masked = masker.text(f"before {form} after")
        assert form not in masked and MASK in masked, name
    for prefix in ("a:", "ab:", "abc:"):  # base64 of a longer string, three alignments
        encoded = base64.b64encode((prefix + VALUE + "!").encode()).decode()
        assert MASK in masker.text(encoded), prefix
    assert masker.value({"k": [VALUE, 1], VALUE: None}) == {"k": [MASK, 1], MASK: None}
    assert Masker([]).text(VALUE) == VALUE
