"""Converts camelCase JSON to and from models. The only place the two spellings meet."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from flask import request

from actioncage.egress_guard import parse_patterns
from actioncage.errors import BadRequestError, ValidationFailedError
from actioncage.models import Action, ActionType, Conversation, OrgPolicy, Policy, RunResult
from actioncage.validation import CONVERSATION_ID_RE, check_code, check_name, check_schema

_ACTION_FIELDS = {"name", "type", "code", "parameters", "description", "policy"}
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
    _unknown(body, _ACTION_FIELDS)
    base: dict[str, Any] = {}
    if current is not None:
        base = {
            "name": current.name,
            "type": current.type,
            "code": current.code,
            "parameters": current.parameters,
            "description": current.description,
            "policy": current.policy,
        }
    for required in ("name", "code"):
        if current is None and required not in body:
            raise ValidationFailedError(f"{required} is required", field=required)
    fields = dict(base)
    if "name" in body:
        fields["name"] = check_name(body["name"])
    type_value = body.get("type", base.get("type", "python"))
    try:
        fields["type"] = ActionType(type_value)
    except ValueError as exc:
        raise ValidationFailedError("type must be 'python'", field="type") from exc
    if fields["type"] is not ActionType.PYTHON:
        raise ValidationFailedError("only type 'python' is supported so far", field="type")
    if "code" in body:
        fields["code"] = check_code(body["code"], max_code_bytes)
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


def policy(raw: Any) -> Policy:
    """A Policy from ``{timeoutMs, memoryMb, cpus}`` (each optional)."""
    if raw is None:
        return Policy()
    if not isinstance(raw, dict):
        raise ValidationFailedError("policy must be an object", field="policy")
    _unknown(raw, {*_POLICY_FIELDS, "egress"}, "policy.")
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
    if raw.get("egress") is not None:
        values["egress"] = egress_patterns(raw["egress"], "policy.egress")
    return Policy(**values)


def egress_patterns(raw: Any, field: str) -> tuple[str, ...]:
    """Host patterns, each checked and normalised. Raises ValidationFailedError."""
    if not isinstance(raw, list) or len(raw) > 100 or not all(isinstance(p, str) for p in raw):
        raise ValidationFailedError(f"{field} must be a list of at most 100 host patterns", field)
    try:
        return tuple(str(p) for p in parse_patterns(raw))
    except ValueError as exc:
        raise ValidationFailedError(f"{field}: {exc}", field) from exc


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
            **{
                wire: getattr(action.policy, name)
                for wire, name in _POLICY_FIELDS.items()
                if getattr(action.policy, name) is not None
            },
            **({"egress": list(action.policy.egress)} if action.policy.egress else {}),
        },
        "createdBy": action.created_by,
        "createdAt": iso(action.created_at),
        "updatedBy": action.updated_by,
        "updatedAt": iso(action.updated_at),
    }


# --- execute -------------------------------------------------------------------------------


def execute_request(body: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """``(args, conversationId)`` from an execute body. Raises ValidationFailedError."""
    _unknown(body, {"args", "conversationId"})
    args = body.get("args", {})
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise ValidationFailedError("args must be an object", field="args")
    return args, conversation_id(body.get("conversationId"), "conversationId")


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
        "finishedAt": iso(run.finished_at),
        "imageDigest": run.image_digest,
        "policyHash": run.policy_hash,
        "egress": [dict(e) for e in run.egress],
        "callerKeyId": run.caller_key_id,
    }


_RUN_STATUSES = {"ok", "error"}
MAX_RUNS_PAGE = 200


def runs_query(query: dict[str, str]) -> dict[str, Any]:
    """Filters and paging from ``GET /v1/runs?actionId=&status=&limit=&cursor=``.

    Raises ValidationFailedError naming the parameter.
    """
    _unknown(query, {"actionId", "status", "limit", "cursor"})
    status = query.get("status")
    if status is not None and status not in _RUN_STATUSES:
        raise ValidationFailedError("status must be 'ok' or 'error'", field="status")
    raw_limit = query.get("limit", "50")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_RUNS_PAGE:
        raise ValidationFailedError(f"limit must be 1-{MAX_RUNS_PAGE}", field="limit")
    before = None
    if "cursor" in query:
        before = _decode_cursor(query["cursor"])
    return {
        "action_id": query.get("actionId") or None,
        "status": status,
        "limit": int(raw_limit),
        "before": before,
    }


def runs_cursor(run: RunResult) -> str:
    """The opaque cursor that continues a listing after ``run``."""
    text = f"{run.started_at.isoformat()}|{run.run_id}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        started, run_id = text.split("|", 1)
        return datetime.fromisoformat(started), run_id
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationFailedError("cursor is not one this API gave out", "cursor") from exc


def org_policy_out(org: OrgPolicy | None) -> dict[str, Any] | None:
    if org is None:
        return None
    return {
        "maxTimeoutMs": org.max_timeout_ms,
        "maxMemoryMb": org.max_memory_mb,
        "maxCpus": org.max_cpus,
        "restricted": org.restricted,
        "runsPerMinute": org.runs_per_minute,
        "concurrentRuns": org.concurrent_runs,
        "egress": list(org.egress),
    }


def policy_out(description: dict[str, Any], org: OrgPolicy | None, digest: str) -> dict[str, Any]:
    """``GET /v1/policy``: the effective sandbox settings, container options as the engine
    takes them (snake_case, as docker's API client names them)."""
    limits = description["limits"]
    maxima = description["maxima"]
    return {
        "limits": {
            "timeoutMs": limits["timeout_ms"],
            "memoryMb": limits["memory_mb"],
            "cpus": limits["cpus"],
            "pids": limits["pids"],
            "tmpfsMb": limits["tmpfs_mb"],
            "maxOutputBytes": limits["max_output_bytes"],
            "maxHostCalls": limits["max_host_calls"],
        },
        "maxima": {
            "timeoutMs": maxima["timeout_ms"],
            "memoryMb": maxima["memory_mb"],
            "cpus": maxima["cpus"],
        },
        "container": description["container"],
        "seccompSha256": description["seccomp_sha256"],
        "policyHash": description["policy_hash"],
        "imageDigest": digest,
        "orgPolicy": org_policy_out(org),
    }


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
    }
