"""dispatch/: the messages between the control plane and executor workers, as JSON-able
dicts, and their checks. No broker here. What a worker sends is untrusted: every field is
checked and bounded before the executor classifies it, as it would a container's output."""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass
from typing import Any

from actioncage.errors import ActioncageError
from actioncage.models import EffectiveLimits, RawOutcome, WorkerStatus
from actioncage.runs.sandboxes import SandboxRun
from actioncage.runs.tickets import MAX_TICKET_BYTES
from actioncage.sandbox.limits import FRAME_ALLOWANCE_BYTES

VERSION = 1
# Egress records a run keeps (the proxy keeps at most 200 plus a note), and their text.
_MAX_EGRESS = 256
_MAX_TEXT = 4096
_MAX_NAME = 64


class MessageInvalidError(ActioncageError):
    """A message from the broker is not what its type requires; the text says what."""


# --- the run task: control plane -> worker ----------------------------------------------


@dataclass(frozen=True)
class RunTask:
    """One run handed to a worker: the envelope, its limits, where to ask for the start
    claim and send the outcome (the dispatching process's inbox), the wall-clock time
    (epoch seconds) after which nobody waits for it to start, and its handover ticket
    (opaque to the worker: sent back with an outcome the dispatching process did not take).
    """

    run_id: str
    envelope: bytes
    limits: EffectiveLimits
    reply_to: str
    start_by: float
    ticket: str | None = None


def task_body(task: RunTask) -> dict[str, Any]:
    limits = task.limits
    return {
        "v": VERSION,
        "runId": task.run_id,
        "envelope": task.envelope.decode(),
        "limits": {
            "timeoutMs": limits.timeout_ms,
            "memoryMb": limits.memory_mb,
            "cpus": limits.cpus,
            "pids": limits.pids,
            "tmpfsMb": limits.tmpfs_mb,
            "maxOutputBytes": limits.max_output_bytes,
            "maxHostCalls": limits.max_host_calls,
            "egress": list(limits.egress),
        },
        "replyTo": task.reply_to,
        "startBy": task.start_by,
        "ticket": task.ticket,
    }


def parse_task(body: Any) -> RunTask:
    """The RunTask in a task body. Raises MessageInvalidError."""
    d = _dict(body, "task")
    if d.get("v") != VERSION:
        raise MessageInvalidError(f"task: version {d.get('v')!r}, this worker speaks {VERSION}")
    limits = _dict(d.get("limits"), "task.limits")
    egress = limits.get("egress")
    if not isinstance(egress, list) or not all(isinstance(p, str) for p in egress):
        raise MessageInvalidError("task.limits.egress: not a list of strings")
    return RunTask(
        run_id=_name(d, "runId"),
        envelope=_str(d, "envelope", None).encode(),
        limits=EffectiveLimits(
            timeout_ms=_int(limits, "timeoutMs"),
            memory_mb=_int(limits, "memoryMb"),
            cpus=_number(limits, "cpus"),
            pids=_int(limits, "pids"),
            tmpfs_mb=_int(limits, "tmpfsMb"),
            max_output_bytes=_int(limits, "maxOutputBytes"),
            max_host_calls=_int(limits, "maxHostCalls"),
            egress=tuple(egress),
        ),
        reply_to=_str(d, "replyTo", 255),
        start_by=_number(d, "startBy"),
        ticket=_optional_str(d, "ticket", MAX_TICKET_BYTES),
    )


# --- worker -> control plane ------------------------------------------------------------


def outcome_body(run_id: str, worker: str, grant: str, ran: SandboxRun) -> dict[str, Any]:
    """What a worker sends back once the sandbox part of ``run_id`` is over; ``grant``: the
    start grant the worker won the run with."""
    raw = ran.raw
    return {
        "type": "outcome",
        "runId": run_id,
        "worker": worker,
        "grant": grant,
        "error": ran.error,
        "imageDigest": ran.image_digest,
        "egress": list(ran.egress),
        "raw": None
        if raw is None
        else {
            "resultFrame": raw.result_frame,
            "logs": base64.b64encode(raw.logs).decode(),
            "exitCode": raw.exit_code,
            "oomKilled": raw.oom_killed,
            "timedOut": raw.timed_out,
            "outputExceeded": raw.output_exceeded,
            "protocolError": raw.protocol_error,
            "durationMs": raw.duration_ms,
            "hostCalls": raw.host_calls,
        },
    }


def parse_outcome(body: dict[str, Any], limits: EffectiveLimits) -> SandboxRun:
    """The SandboxRun in an outcome from a worker, bounded by the run's ``limits`` as a
    container's own output is: logs past the output cap are cut and flagged, a result frame
    past it is flagged. Raises MessageInvalidError for anything malformed."""
    worker = _name(body, "worker")
    digest = _optional_str(body, "imageDigest", 128)
    egress = _egress(body.get("egress"))
    error = _optional_str(body, "error", _MAX_TEXT)
    raw_in = body.get("raw")
    if raw_in is None:
        if error is None:
            raise MessageInvalidError("outcome: neither a raw outcome nor an error")
        return SandboxRun(None, error, egress, digest, worker)
    raw = _dict(raw_in, "outcome.raw")
    try:
        logs = base64.b64decode(_str(raw, "logs", None), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MessageInvalidError("outcome.raw.logs: not base64") from exc
    output_exceeded = _bool(raw, "outputExceeded")
    if len(logs) > limits.max_output_bytes:
        logs, output_exceeded = logs[: limits.max_output_bytes], True
    frame = raw.get("resultFrame")
    if frame is not None:
        if not isinstance(frame, dict):
            raise MessageInvalidError("outcome.raw.resultFrame: not an object")
        cap = limits.max_output_bytes + FRAME_ALLOWANCE_BYTES
        if len(json.dumps(frame, separators=(",", ":"))) + len(logs) > cap:
            output_exceeded = True
    exit_code = raw.get("exitCode")
    if exit_code is not None and (type(exit_code) is not int or not -1024 < exit_code < 1024):
        raise MessageInvalidError("outcome.raw.exitCode: not a small integer")
    return SandboxRun(
        RawOutcome(
            result_frame=frame,
            logs=logs,
            exit_code=exit_code,
            oom_killed=_bool(raw, "oomKilled"),
            timed_out=_bool(raw, "timedOut"),
            output_exceeded=output_exceeded,
            protocol_error=_optional_str(raw, "protocolError", _MAX_TEXT),
            duration_ms=_int(raw, "durationMs"),
            host_calls=_int(raw, "hostCalls"),
        ),
        error,
        egress,
        digest,
        worker,
    )


def heartbeat_body(status: WorkerStatus) -> dict[str, Any]:
    return {
        "type": "heartbeat",
        "worker": status.name,
        "host": status.host,
        "slots": status.slots,
        "busy": status.busy,
        "warm": status.warm,
        "imageDigest": status.image_digest,
        "leaving": status.leaving,
        "at": status.sent_at,
    }


def parse_heartbeat(body: dict[str, Any], seen_at: float) -> WorkerStatus:
    """Raises MessageInvalidError."""
    warm = _dict(body.get("warm"), "heartbeat.warm")
    if len(warm) > 64 or not all(
        isinstance(k, str) and len(k) <= _MAX_NAME and type(v) is int and v >= 0
        for k, v in warm.items()
    ):
        raise MessageInvalidError("heartbeat.warm: not a small map of profile -> count")
    return WorkerStatus(
        name=_name(body, "worker"),
        host=_str(body, "host", 255),
        slots=_int(body, "slots"),
        busy=_int(body, "busy"),
        warm=dict(warm),
        image_digest=_optional_str(body, "imageDigest", 128),
        leaving=_bool(body, "leaving"),
        seen_at=seen_at,
        sent_at=_number(body, "at"),
    )


# --- field checks -------------------------------------------------------------------------


def _dict(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MessageInvalidError(f"{where}: not an object")
    return value


def _str(d: dict[str, Any], key: str, max_len: int | None) -> str:
    value = d.get(key)
    if not isinstance(value, str) or (max_len is not None and len(value) > max_len):
        raise MessageInvalidError(f"{key}: not a string" + (f" of <= {max_len}" if max_len else ""))
    return value


def _optional_str(d: dict[str, Any], key: str, max_len: int) -> str | None:
    return None if d.get(key) is None else _str(d, key, max_len)[:max_len]


def _name(d: dict[str, Any], key: str) -> str:
    value = _str(d, key, _MAX_NAME)
    if not value or not value.isprintable():
        raise MessageInvalidError(f"{key}: not a name")
    return value


def _int(d: dict[str, Any], key: str) -> int:
    value = d.get(key)
    if type(value) is not int or not 0 <= value < 2**53:
        raise MessageInvalidError(f"{key}: not a non-negative integer")
    return value


def _number(d: dict[str, Any], key: str) -> float:
    value = d.get(key)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise MessageInvalidError(f"{key}: not a number")
    if not math.isfinite(value) or value < 0:
        raise MessageInvalidError(f"{key}: not a non-negative number")
    return float(value)


def _bool(d: dict[str, Any], key: str) -> bool:
    value = d.get(key)
    if not isinstance(value, bool):
        raise MessageInvalidError(f"{key}: not a boolean")
    return value


_EGRESS_FIELDS: dict[str, tuple[type, ...]] = {
    "host": (str,),
    "port": (int,),
    "allowed": (bool,),
    "reason": (str, type(None)),
    "address": (str, type(None)),
    "bytesOut": (int,),
    "bytesIn": (int,),
}


def _egress(value: Any) -> tuple[dict[str, Any], ...]:
    if not isinstance(value, list) or len(value) > _MAX_EGRESS:
        raise MessageInvalidError(f"egress: not a list of at most {_MAX_EGRESS} records")
    records = []
    for entry in value:
        if not isinstance(entry, dict) or set(entry) != set(_EGRESS_FIELDS):
            raise MessageInvalidError("egress: a record without exactly the audit fields")
        for key, types in _EGRESS_FIELDS.items():
            field = entry[key]
            if type(field) not in types or (isinstance(field, str) and len(field) > _MAX_TEXT):
                raise MessageInvalidError(f"egress.{key}: wrong type or too long")
        records.append(dict(entry))
    return tuple(records)
