"""Botpress runtime's callAction: POST /v1/chat/actions, answering in Botpress's shapes.

``{type, input}`` in, ``{output, meta: {cached}}`` out; errors are ``{id, code, type,
message}`` with Botpress's error types, so the official client raises its own error classes.
"""

from __future__ import annotations

import uuid
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from actioncage import errors
from actioncage.actions.validation import CONVERSATION_ID_RE
from actioncage.models import ErrorType, InvocationTrigger, RunResult, RunStatus
from actioncage.runs.triggers import run_triggered
from actioncage.store import repo
from actioncage.web import calls, schemas
from actioncage.web.auth import current_key, require_key
from actioncage.web.errors import error_headers

bp = Blueprint("botpress", __name__, url_prefix="/v1/chat")
bp.before_request(require_key)

# Our error classes to Botpress's (status, type); the first match decides.
_TYPES: list[tuple[type[errors.ActioncageError], int, str]] = [
    (errors.AuthError, 401, "Unauthorized"),
    (errors.NotFoundError, 404, "ResourceNotFound"),
    (errors.BadRequestError, 400, "InvalidPayload"),
    (errors.ValidationFailedError, 400, "InvalidPayload"),
    (errors.ConflictError, 409, "ResourceLockedConflict"),
    (errors.BusyError, 429, "RateLimited"),
    (errors.RateLimitedError, 429, "RateLimited"),
]


def _body(status: int, type_: str, message: str) -> dict[str, Any]:
    return {"id": f"err_{uuid.uuid4().hex}", "code": status, "type": type_, "message": message}


@bp.errorhandler(errors.ActioncageError)
def _error(exc: errors.ActioncageError) -> tuple[Response, int, dict[str, str]]:
    for cls, status, type_ in _TYPES:
        if isinstance(exc, cls):
            return jsonify(_body(status, type_, str(exc))), status, error_headers(exc)
    return jsonify(_body(500, "Internal", "internal error")), 500, {}


@bp.errorhandler(HTTPException)
def _http(exc: HTTPException) -> tuple[Response, int]:
    status = exc.code or 500
    type_ = {405: "MethodNotFound", 413: "PayloadTooLarge", 415: "UnsupportedMediaType"}.get(
        status, "InvalidPayload" if status < 500 else "Internal"
    )
    return jsonify(_body(status, type_, exc.description or exc.name)), status


def _run_error(run: RunResult) -> tuple[dict[str, Any], int]:
    assert run.error is not None
    message = f"{run.error.type}: {run.error.message} (run {run.run_id})"
    if run.error.type is ErrorType.INVALID_ARGS:
        return _body(400, "InvalidPayload", message), 400
    if run.error.type is ErrorType.TIMEOUT:
        return _body(504, "OperationTimeout", message), 504
    if run.error.type is ErrorType.SANDBOX_ERROR:
        return _body(500, "Internal", message), 500
    return _body(400, "Runtime", message), 400


@bp.post("/actions")
def call_action() -> tuple[Response, int]:
    c, key = current_app.extensions["actioncage"], current_key()
    if not request.headers.get("x-bot-id"):
        raise errors.BadRequestError("the x-bot-id header is required")
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise errors.BadRequestError("the request body must be a JSON object")
    schemas.check("BotpressCallRequest", body)  # ValidationFailedError: 400 InvalidPayload
    type_: str = body["type"]
    input_: dict[str, Any] = body["input"]
    # "alias:actionName" names an integration's action; ours are named by the last part.
    name = type_.rpartition(":")[2]
    args = {k: v for k, v in input_.items() if k != "conversationId"}
    conversation_id = input_.get("conversationId")
    if conversation_id is not None and (
        not isinstance(conversation_id, str) or not CONVERSATION_ID_RE.match(conversation_id)
    ):
        raise errors.BadRequestError("input.conversationId is not a valid conversation id")
    with c.store.session() as s:
        action = repo.get_action(s, key.org_id, name)

    def answer() -> calls.Answer:
        conversation = None
        if conversation_id is not None:
            with c.store.session() as s:
                conversation = repo.find_conversation(s, key.org_id, conversation_id)
                created = conversation is None
                if conversation is None:
                    conversation = repo.create_conversation(
                        s, key.org_id, conversation_id, [], {}, []
                    )
            start = InvocationTrigger.CONVERSATION_START
            if created and run_triggered(
                c.executor, c.store, key.org_id, key.id, start, conversation_id
            ):
                with c.store.session() as s:
                    conversation = repo.get_conversation(s, key.org_id, conversation_id)
        with c.executor.admit(key.org_id, key.id) as admission:
            run = c.executor.run_action(action, key.id, args, conversation, admission=admission)
        if run.status is not RunStatus.OK:
            return _run_error(run)
        output = run.output if isinstance(run.output, dict) else {"result": run.output}
        return {"output": output, "meta": {"cached": False}}, 200

    out, status, replayed = calls.idempotent(f"botpress:{type_}", body, answer)
    if replayed and status == 200:
        out = {**out, "meta": {"cached": True}}
    response = jsonify(out)
    response.headers["x-actioncage-run"] = "replayed" if replayed else "new"
    return response, status
