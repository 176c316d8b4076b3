"""The Rasa action server API, with requests and answers built by the real rasa-sdk classes."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient
from rasa_sdk import Tracker
from rasa_sdk.events import BotUttered, SlotSet, UserUttered
from rasa_sdk.executor import CollectingDispatcher

from tests.conftest import API_KEY

DOMAIN = {"slots": {"order_id": {"type": "text"}, "status": {"type": "text"}}, "actions": []}


def _call(
    action: str, slots: dict[str, Any], text: str, entities: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    latest = {"text": text, "entities": entities, "intent": {"name": "ask", "confidence": 1.0}}
    tracker = Tracker(
        sender_id="user42",
        slots=slots,
        latest_message=latest,
        events=[
            BotUttered("How can I help?"),
            UserUttered(text, parse_data=latest),
        ],
        paused=False,
        followup_action=None,
        active_loop={},
        latest_action_name="action_listen",
    )
    # The request Rasa sends to its action server (rasa_sdk.interfaces ActionCall).
    return {
        "next_action": action,
        "sender_id": tracker.sender_id,
        "tracker": tracker.current_state(),
        "version": "3.8.0",
        **extra,
    }


STATUS_CODE = (
    "def execute_action(context):\n"
    "    order = context['args']['order_id']\n"
    "    set_conversation_metadata(context, 'status', 'shipped')\n"
    "    set_conversation_metadata(context, 'not_a_slot', 1)\n"
    "    return {'events': [{'event': 'slot', 'timestamp': None, 'name': 'order_id', 'value': order.upper()}],\n"
    "            'responses': [{'text': 'Order ' + order + ' has shipped'}]}\n"
)


@pytest.mark.docker
def test_webhook_maps_slots_entities_and_effects_to_rasa_events(
    client: FlaskClient, make_action: Any
) -> None:
    make_action(
        STATUS_CODE,
        name="action_order_status",
        userSuccessText="Anything else?",
        parameters={
            "type": "object",
            "properties": {"order_id": {"type": "string"}, "lang": {"type": "string"}},
            "required": ["order_id"],
            "additionalProperties": False,
        },
    )
    call = _call(
        "action_order_status",
        {"lang": "en", "requested_slot": None},
        "where is order a17?",
        [{"entity": "order_id", "value": "a17", "start": 15, "end": 18}],
        domain=DOMAIN,
    )
    resp = client.post(f"/webhook?token={API_KEY}", json=call)
    assert resp.status_code == 200, resp.get_json()
    assert resp.content_type == "application/json"
    body = resp.get_json()
    assert body["events"] == [SlotSet("status", "shipped"), SlotSet("order_id", "A17")]
    dispatcher = CollectingDispatcher()
    dispatcher.utter_message(text="Anything else?")
    assert body["responses"] == [{"text": "Order a17 has shipped"}, *dispatcher.messages]
    # sender_id became a stored conversation that holds the metadata writes.
    conv = client.get(
        "/v1/conversations/user42", headers={"Authorization": f"Bearer {API_KEY}"}
    ).get_json()
    assert conv["metadata"] == {"status": "shipped", "not_a_slot": 1}


@pytest.mark.docker
def test_failures_answer_the_way_rasa_expects(client: FlaskClient, make_action: Any) -> None:
    h = {"Authorization": f"Bearer {API_KEY}"}
    make_action(
        "def execute_action(context):\n    raise ValueError('boom')\n",
        name="action_fail",
        userErrorText="Sorry, that did not work",
    )
    make_action(
        "def execute_action(context):\n    hand_off_conversation(context, 'angry')\n    return None\n",
        name="action_handoff",
    )
    make_action(
        "def execute_action(context):\n    return 1\n",
        name="action_strict",
        parameters={"type": "object", "required": ["order_id"]},
    )
    failed = client.post(
        "/webhook", json=_call("action_fail", {}, "hi", [], domain=DOMAIN), headers=h
    )
    assert failed.status_code == 200
    dispatcher = CollectingDispatcher()
    dispatcher.utter_message(text="Sorry, that did not work")
    assert failed.get_json() == {"events": [], "responses": dispatcher.messages}

    handoff = client.post(
        "/webhook", json=_call("action_handoff", {}, "hi", [], domain=DOMAIN), headers=h
    ).get_json()
    assert handoff["responses"][0]["custom"] == {"handoff": {"reason": "angry"}}

    rejected = client.post(
        "/webhook", json=_call("action_strict", {}, "hi", [], domain=DOMAIN), headers=h
    )
    assert rejected.status_code == 400
    assert rejected.get_json()["action_name"] == "action_strict"

    unknown = client.post(
        "/webhook", json=_call("action_nope", {}, "hi", [], domain=DOMAIN), headers=h
    )
    assert unknown.status_code == 404
    assert unknown.get_json()["action_name"] == "action_nope"
    assert "error" in unknown.get_json()
    assert client.post("/webhook", json=_call("action_fail", {}, "hi", [])).status_code == 401


@pytest.mark.docker
def test_domain_digest_without_a_known_domain_answers_449_then_is_cached(
    client: FlaskClient, make_action: Any
) -> None:
    h = {"Authorization": f"Bearer {API_KEY}"}
    make_action(
        "def execute_action(context):\n    set_conversation_metadata(context, 'status', 'x')\n    return None\n",
        name="action_set",
    )
    digest_only = _call("action_set", {}, "hi", [], domain_digest="d1")
    first = client.post("/webhook", json=digest_only, headers=h)
    assert first.status_code == 449
    assert first.get_json()["action_name"] == "action_set"
    with_domain = client.post(
        "/webhook",
        json=_call("action_set", {}, "hi", [], domain_digest="d1", domain=DOMAIN),
        headers=h,
    )
    assert with_domain.status_code == 200
    again = client.post("/webhook", json=digest_only, headers=h)
    assert again.status_code == 200
    assert again.get_json()["events"] == [SlotSet("status", "x")]


def test_actions_lists_names_and_health_answers(client: FlaskClient, make_action: Any) -> None:
    make_action("def execute_action(context):\n    return 1\n", name="action_one")
    resp = client.get("/actions", headers={"Authorization": f"Bearer {API_KEY}"})
    assert resp.status_code == 200 and resp.get_json() == [{"name": "action_one"}]
    assert client.get("/actions").status_code == 401
    assert "status" in client.get("/health").get_json()


@pytest.mark.docker
def test_a_retried_webhook_with_the_same_idempotency_key_runs_once(
    client: FlaskClient, make_action: Any
) -> None:
    make_action(
        "def execute_action(context):\n"
        "    n = (get_conversation_metadata(context, 'refunds') or 0) + 1\n"
        "    set_conversation_metadata(context, 'refunds', n)\n"
        "    return {'responses': [{'text': f'refund {n} issued'}]}\n",
        name="action_refund",
    )
    call = _call("action_refund", {}, "refund please", [], domain=DOMAIN)
    headers = {"Authorization": f"Bearer {API_KEY}", "Idempotency-Key": "rasa-retry-1"}
    first = client.post("/webhook", json=call, headers=headers)
    again = client.post("/webhook", json=call, headers=headers)
    assert first.status_code == again.status_code == 200
    assert first.get_json() == again.get_json()
    assert first.get_json()["responses"] == [{"text": "refund 1 issued"}]
    conv = client.get(
        "/v1/conversations/user42", headers={"Authorization": f"Bearer {API_KEY}"}
    ).get_json()
    assert conv["metadata"] == {"refunds": 1}
    changed = client.post("/webhook", json={**call, "version": "3.9.0"}, headers=headers)
    assert changed.status_code == 409 and changed.get_json()["action_name"] == "action_refund"


@pytest.mark.docker
@pytest.mark.parametrize(
    ("returned", "custom"),
    [
        ("{'order': 'a17', 'eta_days': 2}", {"order": "a17", "eta_days": 2}),
        ("[1, 2]", {"output": [1, 2]}),
        ("42", {"output": 42}),
    ],
)
def test_other_outputs_reach_the_bot_as_a_custom_response(
    client: FlaskClient, make_action: Any, returned: str, custom: dict[str, Any]
) -> None:
    make_action(f"def execute_action(context):\n    return {returned}\n", name="action_eta")
    resp = client.post(
        f"/webhook?token={API_KEY}", json=_call("action_eta", {}, "when?", [], domain=DOMAIN)
    )
    assert resp.status_code == 200, resp.get_json()
    dispatcher = CollectingDispatcher()
    dispatcher.utter_message(json_message=custom)
    assert resp.get_json() == {"events": [], "responses": dispatcher.messages}
