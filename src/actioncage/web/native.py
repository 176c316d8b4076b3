"""The /v1 blueprint: actions, execute, conversations, runs."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from actioncage.models import ErrorType, RunResult
from actioncage.restricted import check_restricted
from actioncage.sandbox.limits import check_policy, policy_description
from actioncage.store import repo
from actioncage.web import wire
from actioncage.web.auth import current_key, require_key

bp = Blueprint("native", __name__, url_prefix="/v1")
bp.before_request(require_key)


def _components() -> Any:
    return current_app.extensions["actioncage"]


def _status_for_run(run: RunResult) -> int:
    if run.error is not None and run.error.type is ErrorType.INVALID_ARGS:
        return 422  # the caller's mistake; nothing ran
    if run.error is not None and run.error.type is ErrorType.SANDBOX_ERROR:
        return 503  # no run could be produced
    return 200


@bp.post("/actions")
def create_action() -> tuple[Response, int]:
    c, key = _components(), current_key()
    fields = wire.action_fields(wire.json_body(), None, c.settings.max_code_bytes)
    with c.store.session() as s:
        org = repo.find_org_policy(s, key.org_id)
        check_policy(fields["policy"], c.settings, org)
        if org is not None and org.restricted:
            check_restricted(fields["code"])
        action = repo.create_action(s, key.org_id, key.id, fields)
    return jsonify(wire.action_out(action)), 201


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
        fields = wire.action_fields(body, current, c.settings.max_code_bytes)
        org = repo.find_org_policy(s, key.org_id)
        check_policy(fields["policy"], c.settings, org)
        if org is not None and org.restricted:
            check_restricted(fields["code"])
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
    c, key = _components(), current_key()
    args, conversation_id = wire.execute_request(wire.json_body())
    run = c.executor.execute(key.org_id, key.id, action_ref, args, conversation_id)
    return jsonify(wire.run_out(run)), _status_for_run(run)


@bp.post("/conversations")
def create_conversation() -> tuple[Response, int]:
    key = current_key()
    fields = wire.conversation_in(wire.json_body())
    with _components().store.session() as s:
        conversation = repo.create_conversation(s, key.org_id, **fields)
    return jsonify(wire.conversation_out(conversation)), 201


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
    return jsonify(wire.policy_out(description, org, c.runner.image_digest()))
