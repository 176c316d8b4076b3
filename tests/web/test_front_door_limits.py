"""Rate limits answer 429 with Retry-After on every front door, each in its own error shape."""

from __future__ import annotations

from pathlib import Path

import pytest

from actioncage import create_app
from tests.conftest import API_KEY, make_settings

pytestmark = pytest.mark.docker

CODE = "def execute_action(context):\n    return {'ok': True}\n"


def test_over_the_key_rate_every_front_door_answers_429_with_retry_after(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path, key_runs_per_minute=1))
    client, headers = app.test_client(), {"Authorization": f"Bearer {API_KEY}"}
    try:
        created = client.post("/v1/actions", json={"name": "ping", "code": CODE}, headers=headers)
        assert created.status_code == 201
        first = client.post("/v1/actions/ping/execute", json={}, headers=headers)
        assert first.status_code == 200 and first.get_json()["status"] == "ok"

        native = client.post("/v1/actions/ping/execute", json={}, headers=headers)
        assert native.status_code == 429 and int(native.headers["Retry-After"]) >= 1
        assert native.get_json()["error"]["type"] == "rate_limited"

        rasa = client.post(
            "/webhook",
            json={"next_action": "ping", "sender_id": "u1", "tracker": {"slots": {}}, "domain": {}},
            headers=headers,
        )
        assert rasa.status_code == 429 and int(rasa.headers["Retry-After"]) >= 1
        assert rasa.get_json()["action_name"] == "ping" and rasa.get_json()["error"]

        botpress = client.post(
            "/v1/chat/actions",
            json={"type": "ping", "input": {}},
            headers={**headers, "x-bot-id": "bot-1"},
        )
        assert botpress.status_code == 429 and int(botpress.headers["Retry-After"]) >= 1
        body = botpress.get_json()
        assert body["type"] == "RateLimited" and body["code"] == 429 and body["id"]
    finally:
        app.extensions["actioncage"].close()
