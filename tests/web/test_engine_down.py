"""Without an engine, runs answer 503 sandbox_error and are still on the audit trail."""

from __future__ import annotations

from pathlib import Path

from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from actioncage import create_app
from tests.conftest import API_KEY, make_settings


def test_no_engine_gives_503_sandbox_error(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path, docker_url=f"unix://{tmp_path}/no-docker.sock"))
    client, headers = app.test_client(), {"Authorization": f"Bearer {API_KEY}"}
    try:
        resp = _create_and_execute(client, headers)
        assert resp.status_code == 503
        body = resp.get_json()
        assert body["error"]["type"] == "sandbox_error" and "engine" in body["error"]["message"]
        run = client.get(f"/v1/runs/{body['runId']}", headers=headers).get_json()
        assert run["status"] == "error"
        health = client.get("/health")
        assert health.status_code == 503 and health.get_json()["engine"] is False
    finally:
        app.extensions["actioncage"].close()


def test_missing_image_gives_503_naming_the_fix(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path, sandbox_image="actioncage-no-such-image:latest"))
    client, headers = app.test_client(), {"Authorization": f"Bearer {API_KEY}"}
    try:
        # `make test` starts the engine: only the image is missing here.
        assert client.get("/health").get_json()["engine"] is True
        resp = _create_and_execute(client, headers)
        assert resp.status_code == 503 and "image build" in resp.get_json()["error"]["message"]
    finally:
        app.extensions["actioncage"].close()


def _create_and_execute(client: FlaskClient, headers: dict[str, str]) -> TestResponse:
    action = client.post(
        "/v1/actions",
        json={"name": "a", "code": "def execute_action(c):\n    return 1\n"},
        headers=headers,
    ).get_json()
    return client.post(f"/v1/actions/{action['id']}/execute", json={}, headers=headers)
