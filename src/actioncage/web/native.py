"""web/: the native /v1 API: actions, execute, conversations, runs, policy; execute and
conversations go through the run service."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from actioncage.actions import tools
from actioncage.actions.validation import check_org_rules
from actioncage.components import Components
from actioncage.errors import SandboxError, ValidationFailedError
from actioncage.models import FrontDoor, Isolation
from actioncage.runs.callbacks import SIGNATURE_HEADER
from actioncage.runs.idempotency import Answer
from actioncage.runs.service import ConversationRef, Pending, RunRequest
from actioncage.sandbox.limits import policy_description
from actioncage.store import repo
from actioncage.web import calls, wire
from actioncage.web.auth import current_key, require_key

bp = Blueprint("native", __name__, url_prefix="/v1")
bp.before_request(require_key)


def _components() -> Components:
    return calls.components()


@bp.post("/actions")
def create_action() -> tuple[Response, int]:
    c, key = _components(), current_key()
    fields = wire.action_fields(
        wire.json_body(), None, c.settings.max_code_bytes, c.settings.max_timeout_ms
    )
    with c.store.session() as s:
        check_org_rules(fields, c.settings, repo.find_org_policy(s, key.org_id))
        action = repo.create_action(s, key.org_id, key.id, fields)
    return jsonify(wire.action_out(action)), 201


@bp.get("/tools")
def export_tools() -> Response:
    """The org's actions as MCP, OpenAI or Anthropic tool definitions (?format=)."""
    key = current_key()
    format_ = request.args.get("format", tools.ToolFormat.MCP)
    if format_ not in tools.ToolFormat.ALL:
        raise ValidationFailedError(
            f"format must be one of {', '.join(tools.ToolFormat.ALL)}", "format"
        )
    with _components().store.session() as s:
        actions = repo.list_actions(s, key.org_id)
    return jsonify(tools.export(actions, format_))


@bp.get("/actions")
def list_actions() -> Response:
    key = current_key()
    with _components().store.session() as s:
        actions = repo.list_actions(s, key.org_id)
    return jsonify({"actions": [wire.action_out(a) for a in actions]})


@bp.get("/actions/<action_ref>")
def get_action(action_ref: str) -> Response:
    key = current_key()
    with _components().store.session() as s:
        action = repo.get_action(s, key.org_id, action_ref)
    return jsonify(wire.action_out(action))


@bp.patch("/actions/<action_id>")
def update_action(action_id: str) -> Response:
    c, key = _components(), current_key()
    body = wire.json_body()
    with c.store.session() as s:
        current = repo.get_action(s, key.org_id, action_id)
        fields = wire.action_fields(
            body, current, c.settings.max_code_bytes, c.settings.max_timeout_ms
        )
        check_org_rules(fields, c.settings, repo.find_org_policy(s, key.org_id))
        action = repo.update_action(s, key.org_id, current.id, key.id, fields)
    return jsonify(wire.action_out(action))


@bp.delete("/actions/<action_id>")
def delete_action(action_id: str) -> tuple[str, int]:
    key = current_key()
    with _components().store.session() as s:
        current = repo.get_action(s, key.org_id, action_id)
        repo.delete_action(s, key.org_id, current.id)
    return "", 204


@bp.post("/actions/<action_ref>/execute")
def execute(action_ref: str) -> tuple[Response, int]:
    service, who = calls.components().service, calls.caller(FrontDoor.NATIVE)
    body = wire.json_body()
    args, conversation_id = wire.execute_request(body)
    wait_ms, callback_url = wire.execute_options(body)
    request = RunRequest(
        who,
        action_ref,
        args,
        None if conversation_id is None else ConversationRef(conversation_id),
        wait_ms=wait_ms,
        callback_url=callback_url,
    )

    def answer() -> Answer:
        run = service.run(request)
        if isinstance(run, Pending):
            return calls.waiting_body(run.run_id, run.action), 202
        tail = calls.components().settings.response_logs_bytes
        return wire.run_out(run, logs_tail_bytes=tail), calls.status_for_run(run)

    out, status, replayed = service.once(
        who, calls.idempotency_key(), f"native:{action_ref}", body, answer
    )
    response = jsonify(out)
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response, status


@bp.post("/conversations")
def create_conversation() -> tuple[Response, int]:
    service, who = calls.components().service, calls.caller(FrontDoor.NATIVE)
    fields = wire.conversation_in(wire.json_body())
    conversation, runs = service.create_conversation(
        who, fields["conversation_id"], fields["messages"], fields["metadata"], fields["tags"]
    )
    return jsonify(
        {**wire.conversation_out(conversation), "triggeredRuns": wire.run_ids(runs)}
    ), 201


@bp.post("/conversations/<conversation_id>/end")
def end_conversation(conversation_id: str) -> Response:
    service, who = calls.components().service, calls.caller(FrontDoor.NATIVE)
    conversation, runs = service.end_conversation(who, conversation_id)
    return jsonify({**wire.conversation_out(conversation), "triggeredRuns": wire.run_ids(runs)})


@bp.get("/webhook-secret")
def webhook_secret() -> Response:
    key = current_key()
    with _components().store.session() as s:
        secret = repo.webhook_secret(s, key.org_id)
    return jsonify({"webhookSecret": secret, "signatureHeader": SIGNATURE_HEADER})


@bp.post("/secrets")
def put_secret() -> tuple[Response, int]:
    """Store or replace an org secret; the value is write-only (never answered back)."""
    c, key = _components(), current_key()
    name, value = wire.secret_request(wire.json_body())
    record = c.vault.put(key.org_id, name, value)
    used_by = secret_users(c, key.org_id)
    status = 201 if record.created_at == record.updated_at else 200
    return jsonify(wire.secret_out(record, used_by.get(record.name, []))), status


@bp.get("/secrets")
def list_secrets() -> Response:
    c, key = _components(), current_key()
    used_by = secret_users(c, key.org_id)
    records = c.vault.list(key.org_id)
    return jsonify({"secrets": [wire.secret_out(r, used_by.get(r.name, [])) for r in records]})


@bp.delete("/secrets/<name>")
def delete_secret(name: str) -> tuple[str, int]:
    c, key = _components(), current_key()
    c.vault.delete(key.org_id, name)
    return "", 204


def secret_users(c: Components, org_id: str) -> dict[str, list[str]]:
    """Secret name -> the names of the org's actions that declare it."""
    with c.store.session() as s:
        actions = repo.list_actions(s, org_id)
    users: dict[str, list[str]] = {}
    for action in actions:
        for name in action.secrets:
            users.setdefault(name, []).append(action.name)
    return users


@bp.get("/conversations/<conversation_id>")
def get_conversation(conversation_id: str) -> Response:
    key = current_key()
    with _components().store.session() as s:
        conversation = repo.get_conversation(s, key.org_id, conversation_id)
    return jsonify(wire.conversation_out(conversation))


@bp.get("/runs/<run_id>")
def get_run(run_id: str) -> Response:
    key = current_key()
    with _components().store.session() as s:
        run = repo.get_run(s, key.org_id, run_id)
    return jsonify(wire.run_out(run))


@bp.get("/runs")
def list_runs() -> Response:
    key = current_key()
    query = wire.runs_query(request.args.to_dict())
    with _components().store.session() as s:
        if query["action_id"] is not None:
            # A name, as every other route takes; an unknown one may be a deleted action's id.
            found = repo.find_action(s, key.org_id, query["action_id"])
            query["action_id"] = query["action_id"] if found is None else found.id
        runs = repo.list_runs(s, key.org_id, **query)
    more = len(runs) == query["limit"]
    return jsonify(
        {
            "runs": [wire.run_out(r) for r in runs],
            "nextCursor": wire.runs_cursor(runs[-1]) if more else None,
        }
    )


@bp.get("/policy")
def get_policy() -> Response:
    c, key = _components(), current_key()
    with c.store.session() as s:
        org = repo.find_org_policy(s, key.org_id)
    description = policy_description(c.settings, org)
    # With executor workers, the image is theirs (as their heartbeats say).
    digest = c.runner.image_digest() if c.dispatcher is None else c.dispatcher.image_digest()
    if digest is None:
        raise SandboxError("no executor worker is live to say which sandbox image it runs")
    tiers = [c.runner.tier(isolation) for isolation in Isolation]
    return jsonify(wire.policy_out(description, org, digest, tiers))
