"""What a worker sends back is untrusted: the control plane bounds and checks it as it would
a container's own output, before the executor classifies it."""

from __future__ import annotations

import base64
import sys
from pathlib import Path
from typing import Any

import pytest

from actioncage.dispatch.messages import (
    MessageInvalidError,
    RunTask,
    outcome_body,
    parse_outcome,
    parse_task,
    task_body,
)
from actioncage.models import EffectiveLimits, ErrorType, RawOutcome, RunStatus
from actioncage.runs.executor import classify
from actioncage.runs.sandboxes import SandboxRun
from actioncage.runs.tickets import Tickets

LIMITS = EffectiveLimits(
    timeout_ms=1000,
    memory_mb=64,
    cpus=0.5,
    pids=32,
    tmpfs_mb=4,
    max_output_bytes=2048,
    max_host_calls=3,
    egress=("api.example.test",),
)


def _raw(**changes: Any) -> RawOutcome:
    values: dict[str, Any] = {
        "result_frame": {"type": "result", "status": "ok", "output": {"a": 1}, "effects": []},
        "logs": b"hello\n",
        "exit_code": None,
        "oom_killed": False,
        "timed_out": False,
        "output_exceeded": False,
        "protocol_error": None,
        "duration_ms": 12,
        "host_calls": 0,
    }
    values.update(changes)
    return RawOutcome(**values)


def _sent(raw: RawOutcome | None = None, error: str | None = None) -> dict[str, Any]:
    egress = ({"host": "h", "port": 443, "allowed": True, "reason": None, "address": "1.2.3.4",
               "bytesOut": 1, "bytesIn": 2},)  # fmt: skip
    return outcome_body("run_1", "w1", "grant", SandboxRun(raw, error, egress, "sha256:abc", "w1"))


def test_a_task_and_an_outcome_go_through_the_wire_unchanged() -> None:
    task = RunTask("run_1", b'{"v":1}\n', LIMITS, "inbox", 1234.5)
    assert parse_task(task_body(task)) == task
    # The handover ticket rides along, opaque to the worker.
    ticketed = RunTask("run_1", b'{"v":1}\n', LIMITS, "inbox", 1234.5, ticket="eyJ9.c2ln")
    assert parse_task(task_body(ticketed)) == ticketed
    with pytest.raises(MessageInvalidError, match="ticket"):
        parse_task({**task_body(task), "ticket": 12})
    ran = parse_outcome(_sent(_raw()), LIMITS)
    assert ran.raw == _raw() and ran.executor == "w1" and ran.image_digest == "sha256:abc"
    assert classify(ran.raw, LIMITS, has_conversation=False).status is RunStatus.OK


def test_logs_past_the_output_cap_are_cut_and_classified_as_output_limit() -> None:
    body = _sent(_raw(logs=b"x" * 10_000))
    ran = parse_outcome(body, LIMITS)
    assert ran.raw is not None and len(ran.raw.logs) == LIMITS.max_output_bytes
    assert ran.raw.output_exceeded
    outcome = classify(ran.raw, LIMITS, has_conversation=False)
    assert outcome.error is not None and outcome.error.type is ErrorType.OUTPUT_LIMIT


def test_a_result_frame_past_the_output_cap_is_flagged() -> None:
    big = {"type": "result", "status": "ok", "output": "y" * 100_000, "effects": []}
    ran = parse_outcome(_sent(_raw(result_frame=big)), LIMITS)
    assert ran.raw is not None and ran.raw.output_exceeded


def test_a_worker_s_forged_effects_still_go_through_the_executor_s_checks() -> None:
    frame = {"type": "result", "status": "ok", "output": 1, "effects": [{"kind": "nonsense"}]}
    ran = parse_outcome(_sent(_raw(result_frame=frame)), LIMITS)
    assert ran.raw is not None
    outcome = classify(ran.raw, LIMITS, has_conversation=True)
    assert outcome.error is not None and outcome.error.type is ErrorType.INVALID_RETURN


@pytest.mark.parametrize(
    ("path", "value", "problem"),
    [
        (("raw", "logs"), "not base64!", "base64"),
        (("raw", "resultFrame"), ["a", "list"], "resultFrame"),
        (("raw", "exitCode"), "0", "exitCode"),
        (("raw", "exitCode"), 10**9, "exitCode"),
        (("raw", "timedOut"), "no", "timedOut"),
        (("raw", "durationMs"), -1, "durationMs"),
        (("raw", "protocolError"), 7, "protocolError"),
        (("worker",), "", "worker"),
        (("worker",), "w" * 65, "worker"),
        (("egress",), "all", "egress"),
        (("egress",), [{"host": "h"}], "egress"),
        (
            ("egress",),
            [
                {
                    "host": 1,
                    "port": 1,
                    "allowed": True,
                    "reason": None,
                    "address": None,
                    "bytesOut": 0,
                    "bytesIn": 0,
                }
            ],
            "egress.host",
        ),  # fmt: skip
        (("raw",), "nope", "outcome.raw"),
    ],
)
def test_malformed_outcomes_are_refused_naming_the_field(
    path: tuple[str, ...], value: Any, problem: str
) -> None:
    body = _sent(_raw())
    target = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(MessageInvalidError, match=problem):
        parse_outcome(body, LIMITS)


def test_an_outcome_with_neither_raw_nor_error_is_refused() -> None:
    with pytest.raises(MessageInvalidError, match="neither"):
        parse_outcome(_sent(None, None), LIMITS)
    ran = parse_outcome(_sent(None, "the engine is gone"), LIMITS)
    assert ran.raw is None and ran.error == "the engine is gone"


def test_logs_are_any_bytes() -> None:
    logs = bytes(range(256))
    body = _sent(_raw(logs=logs))
    assert base64.b64decode(body["raw"]["logs"]) == logs
    ran = parse_outcome(body, LIMITS)
    assert ran.raw is not None and ran.raw.logs == logs


def test_the_benchs_message_sizes_come_from_the_messages_a_run_sends() -> None:
    # bench/distributed.py reports the broker bytes per run (docs/scaling.md quotes them)
    # from the same builders the worker and dispatcher use: it must keep up with them.
    bench = Path(__file__).resolve().parents[2] / "bench"
    sys.path.insert(0, str(bench))
    try:
        import distributed
    finally:
        sys.path.remove(str(bench))
    sizes = distributed.message_sizes()
    assert set(sizes) == {"envelope", "task", "claim", "claim_answer", "outcome"}
    assert sizes["envelope"] < sizes["task"]  # the task carries the envelope and the ticket
    grant = len(Tickets("0" * 64).grant("run_1", "w1"))
    assert sizes["claim_answer"] > grant and sizes["outcome"] > grant
