"""Idempotency-Key replay, runs that outlast waitMs, and signed callbacks to a real receiver."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from actioncage import create_app
from tests import fakes
from tests.conftest import make_settings
from tests.runs.conftest import Receiver

COUNTER = (
    "def execute_action(context):\n"
    "    n = context['conversation']['metadata'].get('refunds', 0) + 1\n"
    "    set_conversation_metadata(context, 'refunds', n)\n"
    "    return {'refunds': n}\n"
)
# Held inside a host call until the test releases it, so it outlasts any waitMs.
SLOW = fakes.held_code("done")


def _wait_for(predicate: Any, timeout_s: float = 30) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


@pytest.mark.docker
def test_same_key_and_body_replays_without_running_again(
    client: FlaskClient, auth_headers: dict[str, str], make_action: Any
) -> None:
    make_action(COUNTER, name="refund")
    client.post("/v1/conversations", json={"id": "c1"}, headers=auth_headers)
    h = {**auth_headers, "Idempotency-Key": "refund-order-1"}
    body = {"args": {}, "conversationId": "c1"}
    first = client.post("/v1/actions/refund/execute", json=body, headers=h)
    second = client.post("/v1/actions/refund/execute", json=body, headers=h)
    assert first.status_code == second.status_code == 200
    assert second.get_json() == first.get_json()
    assert second.headers["Idempotent-Replayed"] == "true"
    conversation = client.get("/v1/conversations/c1", headers=auth_headers).get_json()
    assert conversation["metadata"] == {"refunds": 1}

    other = client.post(
        "/v1/actions/refund/execute", json={"args": {"x": 1}, "conversationId": "c1"}, headers=h
    )
    assert other.status_code == 409
    # Keys are scoped per org and free again for another request.
    fresh = client.post(
        "/v1/actions/refund/execute", json=body, headers={**h, "Idempotency-Key": "k2"}
    )
    assert fresh.get_json()["output"] == {"refunds": 2}


def test_unknown_action_does_not_burn_the_key(
    client: FlaskClient, auth_headers: dict[str, str]
) -> None:
    h = {**auth_headers, "Idempotency-Key": "k"}
    assert client.post("/v1/actions/nope/execute", json={}, headers=h).status_code == 404
    bad = client.post("/v1/actions/nope/execute", json={}, headers={**h, "Idempotency-Key": ""})
    assert bad.status_code == 422 and bad.get_json()["error"]["field"] == "Idempotency-Key"


@pytest.mark.docker
def test_concurrent_duplicates_run_once(
    app: Flask, client: FlaskClient, auth_headers: dict[str, str], make_action: Any
) -> None:
    make_action(COUNTER, name="refund")
    client.post("/v1/conversations", json={"id": "c1"}, headers=auth_headers)
    h = {**auth_headers, "Idempotency-Key": "same"}
    results: list[dict[str, Any]] = []

    def call() -> None:
        resp = app.test_client().post(
            "/v1/actions/refund/execute", json={"conversationId": "c1"}, headers=h
        )
        results.append({**resp.get_json(), "http": resp.status_code})

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r["http"] for r in results] == [200, 200, 200]
    assert len({r["runId"] for r in results}) == 1
    conversation = client.get("/v1/conversations/c1", headers=auth_headers).get_json()
    assert conversation["metadata"] == {"refunds": 1}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A loopback receiver whose first callback gets a 500 (a retry must follow); its URL
    carries a query, which the callback must keep."""
    r = Receiver(answers=[500])
    r.url += "?x=1"
    yield r
    r.close()


@pytest.fixture
def held() -> Iterator[fakes.HeldLlm]:
    with fakes.held_llm() as llm:
        yield llm


@pytest.fixture
def loopback_client(tmp_path: Path, held: fakes.HeldLlm) -> Iterator[FlaskClient]:
    app = create_app(
        make_settings(
            tmp_path,
            egress_allowed_cidrs="127.0.0.0/8",
            callback_backoff_ms=20,
            **held.settings(),
        )
    )
    yield app.test_client()
    app.extensions["actioncage"].close()


@pytest.mark.docker
def test_run_past_wait_ms_answers_202_then_calls_back_signed(
    loopback_client: FlaskClient,
    auth_headers: dict[str, str],
    receiver: Receiver,
    held: fakes.HeldLlm,
) -> None:
    client = loopback_client
    created = client.post(
        "/v1/actions",
        json={"name": "slow", "code": SLOW, "userWaitingText": "One moment..."},
        headers=auth_headers,
    )
    assert created.status_code == 201
    resp = client.post(
        "/v1/actions/slow/execute",
        json={"args": {}, "waitMs": 100, "callbackUrl": receiver.url},
        headers=auth_headers,
    )
    assert resp.status_code == 202, resp.get_json()
    body = resp.get_json()
    assert body["status"] == "running" and body["userWaitingText"] == "One moment..."
    assert held.wait_entered(1)  # the run is in its sandbox, held
    pending = client.get(f"/v1/runs/{body['runId']}", headers=auth_headers).get_json()
    assert pending["status"] == "running" and pending["finishedAt"] is None
    assert receiver.received == []
    held.release()

    def finished() -> Any:
        run = client.get(f"/v1/runs/{body['runId']}", headers=auth_headers).get_json()
        return run if run["status"] != "running" else None

    run = _wait_for(finished)
    assert run["status"] == "ok" and run["output"] == "done"
    # The first delivery got a 500, so it was retried.
    _wait_for(lambda: len(receiver.received) >= 2)
    secret = client.get("/v1/webhook-secret", headers=auth_headers).get_json()["webhookSecret"]
    headers, raw = receiver.received[-1]
    expected = "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Actioncage-Signature"], expected)
    assert json.loads(raw)["runId"] == body["runId"]
    assert json.loads(raw)["output"] == "done"


@pytest.mark.docker
def test_wait_ms_long_enough_answers_the_run(
    client: FlaskClient, auth_headers: dict[str, str], make_action: Any
) -> None:
    make_action("def execute_action(context):\n    return 7\n", name="quick")
    resp = client.post("/v1/actions/quick/execute", json={"waitMs": 60000}, headers=auth_headers)
    assert resp.status_code == 200 and resp.get_json()["output"] == 7


def test_callback_to_a_private_address_is_refused(
    client: FlaskClient, auth_headers: dict[str, str], make_action: Any
) -> None:
    make_action("def execute_action(context):\n    return 7\n", name="quick")
    for url in ("http://127.0.0.1:9/hook", "http://169.254.169.254/latest", "file:///etc/passwd"):
        resp = client.post(
            "/v1/actions/quick/execute", json={"callbackUrl": url}, headers=auth_headers
        )
        assert resp.status_code == 422, url
        assert resp.get_json()["error"]["field"] == "callbackUrl"


@pytest.mark.docker
def test_a_background_run_that_finds_no_slot_is_recorded_not_left_running(
    tmp_path: Path, auth_headers: dict[str, str]
) -> None:
    from actioncage import create_app
    from tests.conftest import make_settings

    app = create_app(make_settings(tmp_path, max_concurrent_runs=1, run_queue_size=0))
    components, client = app.extensions["actioncage"], app.test_client()
    try:
        action = client.post(
            "/v1/actions",
            json={"name": "quick", "code": "def execute_action(context):\n    return 1\n"},
            headers=auth_headers,
        ).get_json()
        with components.slots.hold():  # every run slot is taken
            resp = client.post(
                f"/v1/actions/{action['id']}/execute",
                json={"args": {}, "waitMs": 5000},
                headers=auth_headers,
            )
        body = resp.get_json()
        # No run could be produced: 503, and the record is complete, not left "running".
        assert resp.status_code == 503, body
        assert body["status"] == "error" and body["error"]["type"] == "sandbox_error"
        assert "slot" in body["error"]["message"]
        record = client.get(f"/v1/runs/{body['runId']}", headers=auth_headers).get_json()
        assert record["status"] == "error" and record["finishedAt"] is not None
    finally:
        components.close()
