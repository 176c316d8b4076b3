"""The dashboard's secrets page: signed-in only, CSRF-checked, values write-only."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from actioncage.settings import Settings
from actioncage.vault import new_key
from tests.conftest import make_settings
from tests.web.test_dashboard import _sign_in

VALUE = "dashboard-secret-value"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, secrets_key=new_key())


def test_the_secrets_page_sets_lists_and_deletes_without_showing_values(
    app: Flask, client: FlaskClient, auth_headers: dict[str, str], make_action: object
) -> None:
    assert client.get("/secrets").status_code == 302  # signed out: to /login
    token = _sign_in(client)
    assert "No secrets yet." in client.get("/secrets").get_data(as_text=True)
    forged = client.post("/secrets", data={"name": "erpKey", "value": VALUE, "csrf": "x"})
    assert forged.status_code == 403
    saved = client.post("/secrets", data={"name": "erpKey", "value": VALUE, "csrf": token})
    assert saved.status_code == 303 and saved.headers["Location"] == "/secrets?saved=erpKey"
    client.post(
        "/v1/actions",
        json={
            "name": "erp",
            "code": "def execute_action(c):\n    return 1\n",
            "secrets": ["erpKey"],
        },
        headers=auth_headers,
    )
    page = client.get("/secrets?saved=erpKey").get_data(as_text=True)
    assert "Secret erpKey saved." in page and "<td>erp</td>" in page and VALUE not in page
    short = client.post("/secrets", data={"name": "tiny", "value": "abc", "csrf": token})
    assert short.status_code == 422 and "8-16384 characters" in short.get_data(as_text=True)
    gone = client.post("/secrets/erpKey/delete", data={"csrf": token})
    assert gone.status_code == 303
    assert "No secrets yet." in client.get("/secrets").get_data(as_text=True)
    assert app.extensions["actioncage"].vault.list("default") == []
