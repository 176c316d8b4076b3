"""web/: Converts camelCase JSON to and from models. The only place the two spellings meet."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from flask import request

from actioncage.actions import http as http_actions
from actioncage.actions.validation import check_code, check_name, check_schema
from actioncage.egress.guard import parse_patterns
from actioncage.errors import BadRequestError, ValidationFailedError
from actioncage.models import (
    Action,
    ActionType,
    Conversation,
    InvocationTrigger,
    Isolation,
    OrgPolicy,
    Policy,
    RunResult,
    RunStatus,
    SecretRecord,
    WorkerStatus,
)
from actioncage.sandbox.backend import TierStatus
from actioncage.web import schemas

# Fields of the common "create action" APIs, snake_case name by wire name (endpoint: see
# http_actions, which owns API actions).
_RECORD_FIELDS = {
    "userWaitingText": "user_waiting_text",
    "userSuccessText": "user_success_text",
    "userErrorText": "user_error_text",
    "invocationTrigger": "invocation_trigger",
}
_POLICY_FIELDS = {"timeoutMs": "timeout_ms", "memoryMb": "memory_mb", "cpus": "cpus"}


def iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def json_body() -> dict[str, Any]:
    """The request body as a JSON object. Raises BadRequestError."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BadRequestError(body_problem())
    return body


def body_problem() -> str:
    """Why the request body is not a JSON object: a body sent without ``Content-Type:
    application/json`` is never read as JSON, and the message says so."""
    if request.get_data(cache=True) and not request.is_json:
        sent = request.mimetype or "none"
        return (
            "the request body must be a JSON object sent with "
            f"Content-Type: application/json (this request sent {sent})"
        )
    return "the request body must be a JSON object"


def _unknown(body: dict[str, Any], allowed: set[str], where: str = "") -> None:
    extra = sorted(set(body) - allowed)
    if extra:
        raise ValidationFailedError(f"unknown field {where}{extra[0]!r}", field=where + extra[0])


def checked(schema: str, body: dict[str, Any]) -> dict[str, Any]:
    """``body``, if it fits the request schema ``schema`` (web/schemas.py, the same one
    /openapi.json shows). Raises ValidationFailedError naming the field."""
    schemas.check(schema, body)
    return body


# --- actions -------------------------------------------------------------------------------


def action_fields(
    body: dict[str, Any],
    current: Action | None,
    max_code_bytes: int,
    max_timeout_ms: int = 60_000,
) -> dict[str, Any]:
    """The full definition an action create (``current`` None) or patch asks for, validated.

    Raises ValidationFailedError (InvalidCodeError for code) naming the field.
    """
    checked("ActionInput", body)
    base: dict[str, Any] = {}
    if current is not None:
        base = {
            "name": current.name,
            "type": current.type,
            "code": current.code,
            "parameters": current.parameters,
            "description": current.description,
            "policy": current.policy,
            "endpoint": current.endpoint,
            "returns": current.returns,
            "secrets": current.secrets,
            **{name: getattr(current, name) for name in _RECORD_FIELDS.values()},
        }
    is_api = body.get("type", base.get("type")) == ActionType.API
    for required in ("name",) if is_api else ("name", "code"):
        if current is None and required not in body:
            raise ValidationFailedError(f"{required} is required", field=required)
    fields = dict(base)
    if "name" in body:
        fields["name"] = check_name(body["name"])
    fields_type = ActionType(body.get("type", base.get("type", "python")))
    fields["type"] = fields_type
    is_api = fields_type is ActionType.API
    if is_api:
        _api_action_fields(body, current, fields, max_timeout_ms)
    else:
        _python_only(body, current)
        fields["endpoint"] = None
    if "code" in body and not is_api:
        fields["code"] = check_code(body["code"], max_code_bytes)
    record_fields(body, fields, current is None)
    if ("parameters" in body or current is None) and not is_api:
        fields["parameters"] = check_schema(body.get("parameters"))
    if "description" in body or current is None:
        fields["description"] = body.get("description")
    if "returns" in body or current is None:
        fields["returns"] = check_schema(body.get("returns"), "returns")
    if "secrets" in body or current is None:
        fields["secrets"] = tuple(dict.fromkeys(body.get("secrets") or ()))
    if is_api:
        undeclared = [
            name
            for name in http_actions.endpoint_secrets(fields["endpoint"])
            if name not in fields["secrets"]
        ]
        if undeclared:
            raise ValidationFailedError(
                f"endpoint uses $secret.{undeclared[0]}: list {undeclared[0]!r} in secrets",
                "secrets",
            )
    if "policy" in body or current is None:
        fields["policy"] = policy(body.get("policy"))
    return fields


def _api_action_fields(
    body: dict[str, Any], current: Action | None, fields: dict[str, Any], max_timeout_ms: int
) -> None:
    """Set an API action's ``endpoint``, empty ``code`` and the schema made from the endpoint."""
    if body.get("code"):
        raise ValidationFailedError("code is only for type 'python'", field="code")
    fields["code"] = ""
    stored = current.endpoint if current is not None else None
    if "endpoint" in body:
        fields["endpoint"] = http_actions.check_endpoint(body["endpoint"], stored, max_timeout_ms)
    elif stored is None:
        raise ValidationFailedError("endpoint is required for type 'api'", field="endpoint")
    refined = check_schema(body["parameters"]) if "parameters" in body else None
    was = current.parameters if current is not None else None
    fields["parameters"] = http_actions.parameters_for(fields["endpoint"], refined, was)


def _python_only(body: dict[str, Any], current: Action | None) -> None:
    if "endpoint" in body:
        raise ValidationFailedError("endpoint is only for type 'api'", field="endpoint")
    if current is not None and current.type is not ActionType.PYTHON and "code" not in body:
        raise ValidationFailedError("code is required", field="code")


def record_fields(body: dict[str, Any], fields: dict[str, Any], creating: bool) -> None:
    """The record fields (user texts, trigger) of a schema-checked body into ``fields``."""
    for wire_name, name in _RECORD_FIELDS.items():
        if wire_name not in body and not creating:
            continue
        value = body.get(wire_name)
        if wire_name == "invocationTrigger":
            fields[name] = InvocationTrigger(value or InvocationTrigger.USER_QUERY)
        else:
            fields[name] = value


def policy(raw: dict[str, Any] | None) -> Policy:
    """A Policy from a schema-checked ``{timeoutMs, memoryMb, cpus, egress}`` (each optional).

    Raises ValidationFailedError for a malformed host pattern."""
    if raw is None:
        return Policy()
    values: dict[str, Any] = {
        name: raw[wire_name]
        for wire_name, name in _POLICY_FIELDS.items()
        if raw.get(wire_name) is not None
    }
    if raw.get("egress") is not None:
        values["egress"] = egress_patterns(raw["egress"], "policy.egress")
    if raw.get("isolation") is not None:
        values["isolation"] = Isolation(raw["isolation"])
    return Policy(**values)


def egress_patterns(raw: list[str], field: str) -> tuple[str, ...]:
    """Host patterns, each checked and normalised. Raises ValidationFailedError."""
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
        "endpoint": http_actions.masked(action.endpoint),
        "policy": {
            **{
                wire: getattr(action.policy, name)
                for wire, name in _POLICY_FIELDS.items()
                if getattr(action.policy, name) is not None
            },
            **({"egress": list(action.policy.egress)} if action.policy.egress else {}),
            **(
                {"isolation": str(action.policy.isolation)}
                if action.policy.isolation is not None
                else {}
            ),
        },
        "createdBy": action.created_by,
        "createdAt": iso(action.created_at),
        "updatedBy": action.updated_by,
        "updatedAt": iso(action.updated_at),
        "userWaitingText": action.user_waiting_text,
        "userSuccessText": action.user_success_text,
        "userErrorText": action.user_error_text,
        "invocationTrigger": str(action.invocation_trigger),
        "returns": action.returns,
        "secrets": list(action.secrets),
    }


# --- execute -------------------------------------------------------------------------------


def execute_request(
    body: dict[str, Any], schema: str = "ExecuteRequest"
) -> tuple[dict[str, Any], str | None]:
    """``(args, conversationId)`` from an execute body. Raises ValidationFailedError."""
    checked(schema, body)
    return body.get("args") or {}, body.get("conversationId")


def execute_options(body: dict[str, Any]) -> tuple[int | None, str | None]:
    """``(waitMs, callbackUrl)`` from an execute body checked by execute_request."""
    return body.get("waitMs"), body.get("callbackUrl")


def run_out(run: RunResult, logs_tail_bytes: int | None = None) -> dict[str, Any]:
    """The run on the wire; with ``logs_tail_bytes`` (an execute response) only the end of
    its logs, behind a line saying how much is left out and where it is."""
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
        "logs": run.logs if logs_tail_bytes is None else logs_tail(run, logs_tail_bytes),
        "startedAt": iso(run.started_at),
        "finishedAt": None if run.status is RunStatus.RUNNING else iso(run.finished_at),
        "imageDigest": run.image_digest,
        "policyHash": run.policy_hash,
        "egress": [dict(e) for e in run.egress],
        "callerKeyId": run.caller_key_id,
        "args": run.args,
        "secrets": list(run.secrets),
        "executor": run.executor,
        "isolation": None if run.isolation is None else str(run.isolation),
        "runtimeVersion": run.runtime_version,
    }


def worker_out(worker: WorkerStatus, now: float) -> dict[str, Any]:
    """A live executor worker as /health and `actioncage workers --json` show it."""
    return {
        "name": worker.name,
        "host": worker.host,
        "slots": worker.slots,
        "busy": worker.busy,
        "warm": dict(worker.warm),
        "lastHeartbeatAgoS": round(max(0.0, now - worker.sent_at), 3),
    }


def logs_tail(run: RunResult, max_bytes: int) -> str:
    """The last ``max_bytes`` of the run's logs (UTF-8), behind a marker when any are left out."""
    data = run.logs.encode("utf-8")
    if len(data) <= max_bytes:
        return run.logs
    tail = data[-max_bytes:].decode("utf-8", errors="ignore")
    left_out = len(data) - len(tail.encode("utf-8"))
    return (
        f"[actioncage: {left_out} earlier bytes of logs not shown here; "
        f"GET /v1/runs/{run.run_id} has them all]\n{tail}"
    )


def run_ids(runs: list[RunResult]) -> list[dict[str, Any]]:
    """Short references to runs a call set off (triggers)."""
    return [{"runId": r.run_id, "actionId": r.action_id, "status": str(r.status)} for r in runs]


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
        "egress": None if org.egress is None else list(org.egress),
        "minIsolation": None if org.min_isolation is None else str(org.min_isolation),
    }


def policy_out(
    description: dict[str, Any], org: OrgPolicy | None, digest: str, tiers: list[TierStatus]
) -> dict[str, Any]:
    """``GET /v1/policy``: the effective sandbox settings, container options as the engine
    takes them (snake_case, as docker's API client names them), and every isolation tier."""
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
        "egressCeiling": description["egress_ceiling"],
        "isolation": str(limits["isolation"]),
        "tiers": [
            {
                "isolation": str(t.isolation),
                "available": t.available,
                "runtimeVersion": t.runtime_version,
                "flags": list(t.flags),
                "reason": t.reason,
            }
            for t in tiers
        ],
    }


# --- conversations -------------------------------------------------------------------------


def conversation_in(body: dict[str, Any]) -> dict[str, Any]:
    """Fields of a new conversation: ``id``, ``messages``, ``metadata``, ``tags``.

    Raises ValidationFailedError naming the field."""
    checked("ConversationInput", body)
    return {
        "conversation_id": body.get("id"),
        "messages": body.get("messages", []),
        "metadata": body.get("metadata", {}),
        "tags": list(dict.fromkeys(body.get("tags", []))),
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


# --- secrets -------------------------------------------------------------------------------


def secret_request(body: dict[str, Any]) -> tuple[str, str]:
    """``(name, value)`` of a secret body. Raises ValidationFailedError (never echoing the
    value)."""
    checked("SecretInput", body)
    return body["name"], body["value"]


def secret_out(record: SecretRecord, used_by: list[str]) -> dict[str, Any]:
    return {
        "name": record.name,
        "createdAt": iso(record.created_at),
        "updatedAt": iso(record.updated_at),
        "usedBy": used_by,
    }
