"""Key revocation: `actioncage keys list/revoke`, and a revoked key refused on every route and
by every process (two apps on one database, with and without one Redis) within a second."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from flask import Flask

from actioncage import create_app
from actioncage.cli import main
from actioncage.settings import Settings
from tests.conftest import API_KEY, make_settings, wait_for


def _key_id(capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["keys", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ID", "ORG", "CREATED", "REVOKED"]
    ids = [line.split()[0] for line in lines[1:]]
    assert ids
    return ids[0]


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    settings = make_settings(tmp_path, key_cache_s=60.0)
    monkeypatch.setenv("ACTIONCAGE_DATABASE_URL", settings.database_url)
    return settings


def test_keys_list_shows_id_org_created_and_revoked(
    cli_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "create", "--org", "acme"]) == 0
    assert main(["keys", "create", "--org", "globex"]) == 0
    created = re.findall(r"key id (\S+) for org (\S+)", capsys.readouterr().err)
    assert [org for _, org in created] == ["acme", "globex"]
    assert main(["keys", "list", "--org", "acme"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    assert [(r[0], r[1], r[3]) for r in rows] == [(created[0][0], "acme", "-")]
    assert main(["keys", "revoke", created[0][0]]) == 0
    assert f"key {created[0][0]} of org acme revoked at" in capsys.readouterr().out
    assert main(["keys", "list"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    revoked = {r[0]: r[3] for r in rows}
    assert revoked[created[1][0]] == "-" and revoked[created[0][0]].startswith("20")


def test_revoking_an_unknown_key_id_fails_with_a_clear_message(
    cli_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "revoke", "key_nope"]) != 0
    err = capsys.readouterr().err
    assert "no API key with id 'key_nope'" in err and "keys list" in err


@contextmanager
def _apps(settings: Settings) -> Iterator[tuple[Flask, Flask]]:
    a, b = create_app(settings), create_app(settings)
    try:
        yield a, b
    finally:
        a.extensions["actioncage"].close()
        b.extensions["actioncage"].close()


@pytest.fixture(params=["in-process", "redis"])
def two_apps(
    request: pytest.FixtureRequest, cli_env: Settings, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Flask, Flask]]:
    """Two apps (two processes' worth of components) on one database, and on one Redis."""
    settings = cli_env
    if request.param == "redis":
        url: str = request.getfixturevalue("redis_url")
        monkeypatch.setenv("ACTIONCAGE_REDIS_URL", url)
        settings = Settings(**{**settings.__dict__, "redis_url": url})
    with _apps(settings) as apps:
        yield apps


def _status(app: Flask, path: str = "/v1/actions") -> int:
    resp = app.test_client().get(path, headers={"Authorization": f"Bearer {API_KEY}"})
    return resp.status_code


def test_a_key_revoked_on_one_process_is_refused_by_the_other_within_a_second(
    two_apps: tuple[Flask, Flask], capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = two_apps
    assert _status(a) == 200 and _status(b) == 200  # both now trust it from their caches
    assert main(["keys", "revoke", _key_id(capsys)]) == 0
    assert wait_for(lambda: _status(b) == 401, timeout=1.0)
    assert wait_for(lambda: _status(a) == 401, timeout=1.0)
    resp = b.test_client().get("/v1/actions", headers={"Authorization": f"Bearer {API_KEY}"})
    assert resp.get_json()["error"]["type"] == "unauthorized"


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf-token" content="([^"]+)"', html)
    assert match, html
    return match.group(1)


def test_a_revoked_key_is_refused_on_every_front_door_and_ends_dashboard_sessions(
    cli_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    with _apps(cli_env) as (a, _):
        dashboard = a.test_client()
        token = _csrf(dashboard.get("/login").get_data(as_text=True))
        resp = dashboard.post("/login", data={"api_key": API_KEY, "csrf": token})
        assert resp.status_code == 302
        token = _csrf(dashboard.get("/").get_data(as_text=True))
        assert main(["keys", "revoke", _key_id(capsys)]) == 0
        bearer = {"Authorization": f"Bearer {API_KEY}"}
        client = a.test_client()
        assert wait_for(lambda: _status(a) == 401)
        rasa = client.post("/webhook", json={"next_action": "x"}, headers=bearer)
        assert rasa.status_code == 401
        assert client.get(f"/actions?token={API_KEY}").status_code == 401
        botpress = client.post("/v1/chat/actions", json={"action": "x"}, headers=bearer)
        assert botpress.status_code == 401
        # The signed-in session ends too: pages go to sign-in, JSON calls answer 401.
        page = dashboard.get("/")
        assert page.status_code == 302 and page.headers["Location"] == "/login"
        ui = dashboard.post("/ui/actions", json={}, headers={"X-CSRF-Token": token})
        assert ui.status_code == 401
        token = _csrf(dashboard.get("/login").get_data(as_text=True))
        login = dashboard.post("/login", data={"api_key": API_KEY, "csrf": token})
        assert login.status_code == 401
