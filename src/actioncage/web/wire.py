"""Converts camelCase JSON to and from models. The only place the two spellings meet."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import request

from actioncage.errors import BadRequestError, ValidationFailedError
from actioncage.models import (
    Action,
    ActionType,
    Conversation,
    InvocationTrigger,
    Policy,
    RunResult,
    RunStatus,
)
from actioncage.validation import CONVERSATION_ID_RE, check_code, check_name, check_schema

_ACTION_FIELDS = {"name", "type", "code", "parameters", "description", "policy"}
# Fields of the common "create action" APIs, snake_case name by wire name.
_RECORD_FIELDS = {
    "endpoint": "endpoint",
    "userWaitingText": "user_waiting_text",
    "userSuccessText": "user_success_text",
    "userErrorText": "user_error_text",
    "invocationTrigger": "invocation_trigger",
}
_MAX_USER_TEXT = 2048
_ENDPOINT_METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}
_POLICY_FIELDS = {"timeoutMs": "timeout_ms", "memoryMb": "memory_mb", "cpus": "cpus"}
_MAX_MESSAGES = 1000


def iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def json_body() -> dict[str, Any]:
    """The request body as a JSON object. Raises BadRequestError."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BadRequestError("the request body must be a JSON object")
    return body


def _unknown(body: dict[str, Any], allowed: set[str], where: str = "") -> None:
    extra = sorted(set(body) - allowed)
    if extra:
        raise ValidationFailedError(f"unknown field {where}{extra[0]!r}", field=where + extra[0])


# --- actions -------------------------------------------------------------------------------


def action_fields(
    body: dict[str, Any], current: Action | None, max_code_bytes: int
) -> dict[str, Any]:
    """The full definition an action create (``current`` None) or patch asks for, validated.

    Raises ValidationFailedError (InvalidCodeError for code) naming the field.
    """
    _unknown(body, _ACTION_FIELDS | set(_RECORD_FIELDS))
    base: dict[str, Any] = {}
    if current is not None:
        base = {
            "name": current.name,
            "type": current.type,
            "code": current.code,
            "parameters": current.parameters,
            "description": current.description,
            "policy": current.policy,
            **{name: getattr(current, name) for name in _RECORD_FIELDS.values()},
        }
    type_value = body.get("type", base.get("type", "python"))
    try:
        fields_type = ActionType(type_value)
    except ValueError as exc:
        raise ValidationFailedError("type must be 'python' or 'api'", field="type") from exc
    required = ("name", "code") if fields_type is ActionType.PYTHON else ("name", "endpoint")
    for name in required:
        if name not in body and (current is None or not base.get(name)):
            raise ValidationFailedError(f"{name} is required", field=name)
    fields = dict(base)
    fields["type"] = fields_type
    if "name" in body:
        fields["name"] = check_name(body["name"])
    if "code" in body and fields_type is ActionType.PYTHON:
        fields["code"] = check_code(body["code"], max_code_bytes)
    elif "code" in body:
        raise ValidationFailedError("api actions take an endpoint, not code", field="code")
    elif fields_type is ActionType.API:
        fields["code"] = ""
    record_fields(body, fields, current is None)
    if "parameters" in body or current is None:
        fields["parameters"] = check_schema(body.get("parameters"))
    if "description" in body or current is None:
        description = body.get("description")
        if description is not None and (
            not isinstance(description, str) or not 1 <= len(description) <= 512
        ):
            raise ValidationFailedError("description must be 1-512 characters", "description")
        fields["description"] = description
    if "policy" in body or current is None:
        fields["policy"] = policy(body.get("policy"))
    return fields


def record_fields(body: dict[str, Any], fields: dict[str, Any], creating: bool) -> None:
    """Validate the record fields (endpoint, user texts, trigger) into ``fields``."""
    for wire_name, name in _RECORD_FIELDS.items():
        if wire_name not in body and not creating:
            continue
        value = body.get(wire_name)
        if wire_name == "endpoint":
            fields[name] = None if value is None else endpoint(value)
        elif wire_name == "invocationTrigger":
            try:
                fields[name] = InvocationTrigger(value or InvocationTrigger.USER_QUERY)
            except ValueError as exc:
                raise ValidationFailedError(
                    "invocationTrigger must be one of "
                    + ", ".join(t.value for t in InvocationTrigger),
                    field=wire_name,
                ) from exc
        else:
            if value is not None and (not isinstance(value, str) or len(value) > _MAX_USER_TEXT):
                raise ValidationFailedError(
                    f"{wire_name} must be a string of at most {_MAX_USER_TEXT} characters",
                    field=wire_name,
                )
            fields[name] = value


def endpoint(raw: Any) -> dict[str, Any]:
    """An API action's endpoint ``{url, method, headers, payload}``, validated."""
    if not isinstance(raw, dict):
        raise ValidationFailedError("endpoint must be an object", field="endpoint")
    _unknown(raw, {"url", "method", "headers", "payload"}, "endpoint.")
    url = raw.get("url")
    if (
        not isinstance(url, str)
        or len(url) > 2048
        or not url.lower().startswith(("http://", "https://"))
    ):
        raise ValidationFailedError(
            "endpoint.url must be an http(s) URL of at most 2048 characters", "endpoint.url"
        )
    method = raw.get("method", "POST")
    if not isinstance(method, str) or method.upper() not in _ENDPOINT_METHODS:
        raise ValidationFailedError(
            "endpoint.method must be one of " + ", ".join(sorted(_ENDPOINT_METHODS)),
            "endpoint.method",
        )
    headers = raw.get("headers")
    # The common APIs document headers both as an object and as a bare content type.
    if (
        headers is not None
        and not isinstance(headers, str)
        and (
            not isinstance(headers, dict)
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items())
        )
    ):
        raise ValidationFailedError(
            "endpoint.headers must be an object of strings", "endpoint.headers"
        )
    out: dict[str, Any] = {"url": url, "method": method.upper()}
    if headers is not None:
        out["headers"] = headers
    if "payload" in raw:
        out["payload"] = raw["payload"]
    return out


def policy(raw: Any) -> Policy:
    """A Policy from ``{timeoutMs, memoryMb, cpus}`` (each optional)."""
    if raw is None:
        return Policy()
    if not isinstance(raw, dict):
        raise ValidationFailedError("policy must be an object", field="policy")
    _unknown(raw, set(_POLICY_FIELDS), "policy.")
    values: dict[str, Any] = {}
    for wire_name, name in _POLICY_FIELDS.items():
        value = raw.get(wire_name)
        if value is None:
            continue
        ok_type = (int, float) if name == "cpus" else (int,)
        if isinstance(value, bool) or not isinstance(value, ok_type):
            raise ValidationFailedError(
                f"policy.{wire_name} must be a number", f"policy.{wire_name}"
            )
        values[name] = value
    return Policy(**values)


def action_out(action: Action) -> dict[str, Any]:
    return {
        "id": action.id,
        "orgId": action.org_id,
        "name": action.name,
        "type": str(action.type),
        "version": action.version,
        "code": action.code,
        "parameters": action.parameters if action.parameters is not None else False,
        "description": action.description,
        "policy": {
            wire: getattr(action.policy, name)
            for wire, name in _POLICY_FIELDS.items()
            if getattr(action.policy, name) is not None
        },
        "createdBy": action.created_by,
        "createdAt": iso(action.created_at),
        "updatedBy": action.updated_by,
        "updatedAt": iso(action.updated_at),
        "endpoint": action.endpoint,
        "userWaitingText": action.user_waiting_text,
        "userSuccessText": action.user_success_text,
        "userErrorText": action.user_error_text,
        "invocationTrigger": str(action.invocation_trigger),
    }


# --- execute -------------------------------------------------------------------------------


def execute_request(body: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """``(args, conversationId)`` from an execute body. Raises ValidationFailedError."""
    _unknown(body, {"args", "conversationId", "waitMs", "callbackUrl"})
    args = body.get("args", {})
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise ValidationFailedError("args must be an object", field="args")
    return args, conversation_id(body.get("conversationId"), "conversationId")


def execute_options(body: dict[str, Any]) -> tuple[int | None, str | None]:
    """``(waitMs, callbackUrl)`` from an execute body. Raises ValidationFailedError."""
    wait_ms = body.get("waitMs")
    if wait_ms is not None and (
        isinstance(wait_ms, bool) or not isinstance(wait_ms, int) or not 0 <= wait_ms <= 600_000
    ):
        raise ValidationFailedError("waitMs must be an integer of 0-600000", field="waitMs")
    callback_url = body.get("callbackUrl")
    if callback_url is not None and not isinstance(callback_url, str):
        raise ValidationFailedError("callbackUrl must be a URL string", field="callbackUrl")
    return wait_ms, callback_url


def conversation_id(value: Any, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not CONVERSATION_ID_RE.match(value):
        raise ValidationFailedError(
            f"{field} must be 1-128 letters, digits or _.:@+- starting with a letter or digit",
            field=field,
        )
    return value


def run_out(run: RunResult) -> dict[str, Any]:
    return {
        "runId": run.run_id,
        "actionId": run.action_id,
        "actionVersion": run.action_version,
        "conversationId": run.conversation_id,
        "status": str(run.status),
        "output": run.output,
        "error": None
        if run.error is None
        else {
            "type": str(run.error.type),
            "message": run.error.message,
            **({"traceback": run.error.traceback} if run.error.traceback else {}),
        },
        "effects": [{"kind": str(e.kind), **e.data} for e in run.effects],
        "effectsApplied": run.effects_applied,
        "durationMs": run.duration_ms,
        "logs": run.logs,
        "startedAt": iso(run.started_at),
        "finishedAt": None if run.status is RunStatus.RUNNING else iso(run.finished_at),
        "imageDigest": run.image_digest,
        "callerKeyId": run.caller_key_id,
    }


def run_ids(runs: list[RunResult]) -> list[dict[str, Any]]:
    """Short references to runs a call set off (triggers)."""
    return [{"runId": r.run_id, "actionId": r.action_id, "status": str(r.status)} for r in runs]


# --- conversations -------------------------------------------------------------------------


def conversation_in(body: dict[str, Any]) -> dict[str, Any]:
    """Fields of a new conversation: ``id``, ``messages``, ``metadata``, ``tags``."""
    _unknown(body, {"id", "messages", "metadata", "tags"})
    messages = body.get("messages", [])
    if not isinstance(messages, list) or len(messages) > _MAX_MESSAGES:
        raise ValidationFailedError(
            f"messages must be a list of at most {_MAX_MESSAGES}", "messages"
        )
    for i, m in enumerate(messages):
        if (
            not isinstance(m, dict)
            or not isinstance(m.get("role"), str)
            or not isinstance(m.get("text"), str)
        ):
            raise ValidationFailedError(
                f"messages[{i}] must be an object with string role and text", f"messages[{i}]"
            )
    metadata = body.get("metadata", {})
    if not isinstance(metadata, dict):
        raise ValidationFailedError("metadata must be an object", "metadata")
    tags = body.get("tags", [])
    if not isinstance(tags, list) or not all(
        isinstance(t, str) and 0 < len(t) <= 128 for t in tags
    ):
        raise ValidationFailedError("tags must be a list of strings of 1-128 characters", "tags")
    return {
        "conversation_id": conversation_id(body.get("id"), "id"),
        "messages": messages,
        "metadata": metadata,
        "tags": list(dict.fromkeys(tags)),
    }


def conversation_out(c: Conversation) -> dict[str, Any]:
    return {
        "id": c.id,
        "messages": list(c.messages),
        "metadata": c.metadata,
        "tags": list(c.tags),
        "events": list(c.events),
        "handedOff": c.handed_off,
        "handOffReason": c.hand_off_reason,
        "createdAt": iso(c.created_at),
        "updatedAt": iso(c.updated_at),
        "endedAt": None if c.ended_at is None else iso(c.ended_at),
    }
