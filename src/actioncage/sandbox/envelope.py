"""sandbox/: The JSON sent into the sandbox and read back, mirroring runtime/
(docs/protocol.md)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from actioncage.models import EffectiveLimits

PROTOCOL_VERSION = 1
MAX_METADATA_VALUE_BYTES = 64 * 1024
MAX_EVENT_BYTES = 64 * 1024
MAX_TAGS_PER_RUN = 100
MAX_EVENTS_PER_RUN = 100
HOST_CALL_NAMES = frozenset(
    {"llm_classify_binary", "llm_classify_category", "add_google_sheets_row"}
)
RUNTIME_ERROR_TYPES = frozenset({"exception", "invalid_return", "output_limit", "memory_limit"})


def build_envelope(
    code: str,
    args: dict[str, Any],
    conversation: dict[str, Any] | None,
    limits: EffectiveLimits,
    restricted_imports: Iterable[str] | None = None,
    egress_socket: str | None = None,
    secrets: dict[str, str | None] | None = None,
) -> bytes:
    """The first stdin line: code, context and the limits the helpers enforce; with
    ``restricted_imports``, the script is compiled in restricted mode with that allowlist;
    ``secrets`` are the action's declared secrets (None: not available) for get_secret."""
    envelope = {
        "v": PROTOCOL_VERSION,
        "code": code,
        "context": {"args": args, "conversation": conversation},
        "limits": {
            "maxOutputBytes": limits.max_output_bytes,
            "maxHostCalls": limits.max_host_calls,
            "maxTags": MAX_TAGS_PER_RUN,
            "maxEvents": MAX_EVENTS_PER_RUN,
            "maxMetadataValueBytes": MAX_METADATA_VALUE_BYTES,
        },
    }
    if restricted_imports is not None:
        envelope["restricted"] = {"imports": sorted(restricted_imports)}
    if egress_socket is not None:
        envelope["egress"] = {"socket": egress_socket}
    if secrets is not None:
        envelope["secrets"] = secrets
    return json.dumps(envelope, separators=(",", ":")).encode() + b"\n"


def host_reply(call_id: Any, ok: bool, value: Any = None, error: str | None = None) -> bytes:
    """One stdin line answering a host call."""
    reply: dict[str, Any] = {"type": "host_result", "id": call_id, "ok": ok}
    if ok:
        reply["value"] = value
    else:
        reply["error"] = error
    return json.dumps(reply, separators=(",", ":")).encode() + b"\n"


def parse_frame(line: bytes) -> dict[str, Any] | None:
    """A frame as a dict with a known ``type``, or None when the line is not one."""
    try:
        frame = json.loads(line, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return None
    if not isinstance(frame, dict) or frame.get("type") not in {"host_call", "result", "end"}:
        return None
    return frame


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
