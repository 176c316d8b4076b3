"""Runs the in-container runtime in-process through the real envelope and frame format."""

from __future__ import annotations

import io
import json
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import actioncage_runtime
from actioncage_runtime.__main__ import run

RUNTIME_DIR = Path(actioncage_runtime.__file__).resolve().parents[1]

DEFAULT_LIMITS = {
    "maxOutputBytes": 1024 * 1024,
    "maxHostCalls": 20,
    "maxTags": 100,
    "maxEvents": 100,
    "maxMetadataValueBytes": 64 * 1024,
}
_DEFAULT = object()


def conversation(
    conversation_id: str = "c1", metadata: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A conversation as the control plane puts it in the envelope's context."""
    return {"id": conversation_id, "messages": [], "metadata": metadata or {}, "tags": []}


def envelope_line(
    code: str,
    *,
    args: dict[str, Any] | None = None,
    conversation_data: Any = _DEFAULT,
    secrets: Any = None,
    **limits: int,
) -> str:
    """The envelope as the first stdin line; ``limits`` override the defaults by wire name;
    ``secrets`` (name -> value or None) is the envelope's ``secrets`` when given."""
    envelope = {
        "v": 1,
        "code": textwrap.dedent(code),
        "context": {
            "args": args or {},
            "conversation": conversation() if conversation_data is _DEFAULT else conversation_data,
        },
        "limits": {**DEFAULT_LIMITS, **limits},
    }
    if secrets is not None:
        envelope["secrets"] = secrets
    return json.dumps(envelope) + "\n"


@dataclass
class RunOutput:
    """What one run wrote: its exit code, the parsed frames and the logs."""

    exit_code: int
    frames: list[dict[str, Any]]
    raw_frames: str
    logs: str

    @property
    def result(self) -> dict[str, Any]:
        """The one result frame, checked to be the last frame."""
        results = [frame for frame in self.frames if frame.get("type") == "result"]
        assert len(results) == 1, self.frames
        assert self.frames[-1] is results[0]
        return results[0]

    @property
    def host_calls(self) -> list[dict[str, Any]]:
        return [frame for frame in self.frames if frame.get("type") == "host_call"]

    @property
    def output(self) -> Any:
        assert self.result["status"] == "ok", self.result
        return self.result["output"]

    @property
    def error(self) -> dict[str, Any]:
        assert self.result["status"] == "error", self.result
        return self.result["error"]


def run_stdin(stdin_text: str) -> RunOutput:
    """Run the runtime on ``stdin_text`` with in-memory frame and log streams."""
    frames_out, logs = io.StringIO(), io.StringIO()
    exit_code = run(io.StringIO(stdin_text), frames_out, logs)
    raw = frames_out.getvalue()
    assert raw == "" or raw.endswith("\n")
    return RunOutput(
        exit_code, [json.loads(line) for line in raw.splitlines()], raw, logs.getvalue()
    )


def run_action(
    code: str, *, replies: Iterable[dict[str, Any] | str] = (), **options: Any
) -> RunOutput:
    """Run ``code`` and return what it wrote.

    Keywords: ``args``, ``conversation_data`` (a conversation dict, or None for none),
    ``replies`` (host_result objects, or raw lines, fed after the envelope) and limit overrides
    by wire name, e.g. ``maxHostCalls=2``.
    """
    reply_lines = "".join(
        reply if isinstance(reply, str) else json.dumps(reply) + "\n" for reply in replies
    )
    return run_stdin(envelope_line(code, **options) + reply_lines)
