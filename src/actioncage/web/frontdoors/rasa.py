"""web/frontdoors/: The Rasa action server's HTTP API: POST /webhook, GET /actions (GET /health
is meta's).

Errors answer ``{"error", "action_name"}`` like the Rasa SDK: 404 unknown action, 400 a
rejected run (Rasa then predicts another action), 449 when the domain is needed.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, g, jsonify, request

from actioncage import errors
from actioncage.actions.validation import CONVERSATION_ID_RE
from actioncage.models import (
    Action,
    EffectKind,
    ErrorType,
    FrontDoor,
    RunResult,
    RunStatus,
)
from actioncage.runs.idempotency import Answer
from actioncage.runs.service import ConversationRef, RunRequest
from actioncage.store import repo
from actioncage.web import calls, wire
from actioncage.web.auth import authenticate, current_key, key_from_request
from actioncage.web.errors import NATIVE, error_headers, kind_of

bp = Blueprint("rasa", __name__)


class DomainNeededError(errors.ActioncageError):
    """Rasa sent a domain_digest we have no domain for; it resends with the domain on 449."""


class RasaRejectedError(errors.ActioncageError):
    """The run was refused (invalid args); Rasa treats 400 as ActionExecutionRejection."""


@bp.before_request
def _auth() -> None:
    g.rasa_action_name = None
    authenticate(key_from_request() or request.args.get("token"))


# The error kinds (web/errors.py KINDS) to the Rasa action server's statuses: the native
# ones (Rasa reads only the status and our {error, action_name} body); besides them, 400 is
# Rasa's ActionExecutionRejection and 449 asks for the domain (the handler below).
_STATUS: dict[str, int] = dict(NATIVE)


@bp.errorhandler(errors.ActioncageError)
def _error(exc: errors.ActioncageError) -> tuple[Response, int, dict[str, str]]:
    if isinstance(exc, DomainNeededError):
        status = 449
    elif isinstance(exc, RasaRejectedError):
        status = 400
    else:
        status = _STATUS[kind_of(exc)]
    body = {"error": str(exc), "action_name": g.get("rasa_action_name")}
    return jsonify(body), status, error_headers(exc)


@bp.get("/actions")
def list_actions() -> Response:
    key = current_key()
    with calls.components().store.session() as s:
        actions = repo.list_actions(s, key.org_id)
    return jsonify([{"name": a.name} for a in actions])


@bp.post("/webhook")
def webhook() -> tuple[Response, int]:
    key = current_key()
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise errors.BadRequestError(wire.body_problem())
    name = body.get("next_action")
    if not isinstance(name, str) or not name:
        raise errors.BadRequestError("next_action must be the name of an action")
    g.rasa_action_name = name
    sender_id = body.get("sender_id")
    tracker = body.get("tracker")
    if not isinstance(tracker, dict):
        raise errors.BadRequestError("tracker must be an object")
    if not isinstance(sender_id, str):
        sender_id = tracker.get("sender_id")
    if not isinstance(sender_id, str) or not CONVERSATION_ID_RE.match(sender_id):
        raise errors.BadRequestError(
            "sender_id must be 1-128 letters, digits or _.:@+- starting with a letter or digit"
        )
    domain = _domain(key.org_id, body, name)
    service, who = calls.components().service, calls.caller(FrontDoor.RASA)
    action = service.action(who, name)
    request_ = RunRequest(
        who,
        action,
        lambda a: _args(a, tracker),
        ConversationRef(sender_id, create=True, messages=tuple(_messages(tracker))),
    )

    def answer() -> Answer:
        run = service.run(request_)
        assert isinstance(run, RunResult)  # no waitMs: never pending
        return _response(action, run, domain), 200

    out, status, _ = service.once(who, calls.idempotency_key(), f"rasa:{name}", body, answer)
    return jsonify(out), status


def _domain(org_id: str, body: dict[str, Any], name: str) -> dict[str, Any]:
    """The request's domain, or the one cached under its digest. Raises DomainNeededError."""
    domain = body.get("domain")
    digest = body.get("domain_digest")
    if domain is not None and not isinstance(domain, dict):
        raise errors.BadRequestError("domain must be an object")
    domains = calls.components().domains  # shared by every process with Redis
    if isinstance(domain, dict):
        if isinstance(digest, str) and digest:
            domains.put(org_id, digest, domain)
        return domain
    if isinstance(digest, str) and (cached := domains.get(org_id, digest)) is not None:
        return cached
    if digest is None:
        return {}  # old Rasa without a domain at all: no slots to map
    raise DomainNeededError(f"action {name!r} needs the domain; send it with the request")


def _args(action: Action, tracker: dict[str, Any]) -> dict[str, Any]:
    """Filled slots, then the latest message's entities (they are newer)."""
    args: dict[str, Any] = {}
    slots = tracker.get("slots")
    if isinstance(slots, dict):
        args.update({k: v for k, v in slots.items() if isinstance(k, str) and v is not None})
    latest = tracker.get("latest_message")
    if isinstance(latest, dict) and isinstance(latest.get("entities"), list):
        for entity in latest["entities"]:
            if isinstance(entity, dict) and isinstance(entity.get("entity"), str):
                args[entity["entity"]] = entity.get("value")
    schema = action.parameters
    # Rasa trackers carry bookkeeping slots; a closed schema only gets the slots it names.
    if schema is not None and schema.get("additionalProperties") is False:
        names = set(schema.get("properties", {}))
        args = {k: v for k, v in args.items() if k in names}
    return args


def _messages(tracker: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    events = tracker.get("events")
    for event in events if isinstance(events, list) else []:
        if not isinstance(event, dict) or not isinstance(event.get("text"), str):
            continue
        if event.get("event") == "user":
            out.append({"role": "user", "text": event["text"]})
        elif event.get("event") == "bot":
            out.append({"role": "bot", "text": event["text"]})
    latest = tracker.get("latest_message")
    if isinstance(latest, dict) and isinstance(latest.get("text"), str):
        last_user = next((m for m in reversed(out) if m["role"] == "user"), None)
        if last_user is None or last_user["text"] != latest["text"]:
            out.append({"role": "user", "text": latest["text"]})
    return out


def _text(text: str) -> dict[str, Any]:
    return _message(text=text)


def _message(text: str | None = None, custom: dict[str, Any] | None = None) -> dict[str, Any]:
    # The shape of the Rasa SDK's CollectingDispatcher.utter_message.
    return {
        "text": text,
        "buttons": [],
        "elements": [],
        "custom": custom or {},
        "template": None,
        "response": None,
        "image": None,
        "attachment": None,
    }


def _slot(name: str, value: Any) -> dict[str, Any]:
    return {"event": "slot", "timestamp": None, "name": name, "value": value}


def _response(action: Action, run: RunResult, domain: dict[str, Any]) -> dict[str, Any]:
    """``{events, responses}`` for a run. Raises RasaRejectedError for invalid args."""
    if run.error is not None and run.error.type is ErrorType.INVALID_ARGS:
        raise RasaRejectedError(run.error.message)
    events: list[dict[str, Any]] = []
    responses: list[dict[str, Any]] = []
    if run.status is not RunStatus.OK:
        # The bot goes on: no events, and the action's error text when it has one.
        if action.user_error_text:
            responses.append(_text(action.user_error_text))
        return {"events": events, "responses": responses}
    raw_slots = domain.get("slots")
    slots: dict[str, Any] = raw_slots if isinstance(raw_slots, dict) else {}
    for effect in run.effects:
        if effect.kind is EffectKind.SET_METADATA and effect.data.get("key") in slots:
            events.append(_slot(effect.data["key"], effect.data.get("value")))
        elif effect.kind is EffectKind.DELETE_METADATA and effect.data.get("key") in slots:
            events.append(_slot(effect.data["key"], None))
        elif effect.kind is EffectKind.HAND_OFF:
            responses.append(_message(custom={"handoff": {"reason": effect.data.get("reason")}}))
    output = run.output
    if isinstance(output, dict) and output and set(output) <= {"events", "responses"}:
        passed_events, passed_responses = _rasa_output(output)
        events.extend(passed_events)
        responses.extend(passed_responses)
    elif isinstance(output, str) and output:
        responses.append(_text(output))
    elif output is not None and output != {} and not action.user_success_text:
        # Any other output reaches the bot as a custom payload (an object as it is, anything
        # else under "output") rather than being dropped.
        responses.append(
            _message(custom=output if isinstance(output, dict) else {"output": output})
        )
    if action.user_success_text:
        responses.append(_text(action.user_success_text))
    return {"events": events, "responses": responses}


def _rasa_output(output: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A script's own ``{events, responses}``, checked. Raises RasaRejectedError."""
    events = output.get("events", [])
    responses = output.get("responses", [])
    if not isinstance(events, list) or not all(
        isinstance(e, dict) and isinstance(e.get("event"), str) and e["event"] for e in events
    ):
        raise RasaRejectedError("the script's events must be a list of Rasa events")
    if not isinstance(responses, list) or not all(isinstance(r, dict) for r in responses):
        raise RasaRejectedError("the script's responses must be a list of objects")
    return events, responses
