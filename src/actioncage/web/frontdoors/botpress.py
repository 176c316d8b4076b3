"""web/frontdoors/: Botpress runtime's callAction: POST /v1/chat/actions, answering in
Botpress's shapes.

``{type, input}`` in, ``{output, meta: {cached}}`` out; errors are ``{id, code, type,
message}`` with Botpress's error types, so the official client raises its own error classes.
"""

from __future__ import annotations

import uuid
from typing import Any

from flask import Blueprint, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from actioncage import errors
from actioncage.actions.validation import CONVERSATION_ID_RE
from actioncage.models import ErrorType, FrontDoor, RunResult, RunStatus
from actioncage.runs.idempotency import Answer
from actioncage.runs.service import ConversationRef, RunRequest
from actioncage.web import calls, schemas, wire
from actioncage.web.auth import require_key
from actioncage.web.errors import error_headers, kind_of

bp = Blueprint("botpress", __name__, url_prefix="/v1/chat")
bp.before_request(require_key)


# The error kinds (web/errors.py KINDS) to Botpress's (status, type): its client turns the
# type into its own error class. Sandbox errors keep the native 503: no run was produced.
_TYPES: dict[str, tuple[int, str]] = {
    "unauthorized": (401, "Unauthorized"),
    "not_found": (404, "ResourceNotFound"),
    "bad_request": (400, "InvalidPayload"),
    "invalid_code": (400, "InvalidPayload"),
    "policy_violation": (400, "InvalidPayload"),
    "validation_failed": (400, "InvalidPayload"),
    "conflict": (409, "ResourceLockedConflict"),
    "overloaded": (429, "RateLimited"),
    "rate_limited": (429, "RateLimited"),
    "busy": (429, "RateLimited"),
    "shared_state_unavailable": (503, "Internal"),
    "engine_unavailable": (503, "Internal"),
    "sandbox_error": (503, "Internal"),
    "host_call_failed": (502, "Internal"),
    "internal_error": (500, "Internal"),
}


def _body(status: int, type_: str, message: str) -> dict[str, Any]:
    return {"id": f"err_{uuid.uuid4().hex}", "code": status, "type": type_, "message": message}


@bp.errorhandler(errors.ActioncageError)
def _error(exc: errors.ActioncageError) -> tuple[Response, int, dict[str, str]]:
    status, type_ = _TYPES[kind_of(exc)]
    message = "internal error" if status == 500 else str(exc)
    return jsonify(_body(status, type_, message)), status, error_headers(exc)


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
        return _body(503, "Internal", message), 503
    return _body(400, "Runtime", message), 400


@bp.post("/actions")
def call_action() -> tuple[Response, int]:
    who = calls.caller(FrontDoor.BOTPRESS)
    if not request.headers.get("x-bot-id"):
        raise errors.BadRequestError("the x-bot-id header is required")
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise errors.BadRequestError(wire.body_problem())
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
    service = calls.components().service
    action = service.action(who, name)
    request_ = RunRequest(
        who,
        action,
        args,
        None if conversation_id is None else ConversationRef(conversation_id, create=True),
    )

    def answer() -> Answer:
        run = service.run(request_)
        assert isinstance(run, RunResult)  # no waitMs: never pending
        if run.status is not RunStatus.OK:
            return _run_error(run)
        output = run.output if isinstance(run.output, dict) else {"result": run.output}
        return {"output": output, "meta": {"cached": False}}, 200

    out, status, replayed = service.once(
        who, calls.idempotency_key(), f"botpress:{type_}", body, answer
    )
    if replayed and status == 200:
        out = {**out, "meta": {"cached": True}}
    response = jsonify(out)
    response.headers["x-actioncage-run"] = "replayed" if replayed else "new"
    return response, status
