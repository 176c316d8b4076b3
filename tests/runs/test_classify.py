"""Outcome classification without an engine: every branch of runs/executor.classify, fed the
RawOutcome a container would hand back."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from actioncage.models import Effect, EffectiveLimits, EffectKind, ErrorType, RawOutcome, RunStatus
from actioncage.runs.executor import Outcome, classify
from actioncage.sandbox.envelope import RUNTIME_ERROR_TYPES

LIMITS = EffectiveLimits(
    timeout_ms=5000,
    memory_mb=128,
    cpus=0.5,
    pids=64,
    tmpfs_mb=16,
    max_output_bytes=1000,
    max_host_calls=10,
)
OK_FRAME: dict[str, Any] = {"status": "ok", "output": {"answer": 42}, "effects": []}
TAG = {"kind": "add_tag", "tag": "vip"}


def _raw(frame: dict[str, Any] | None = None, **fields: Any) -> RawOutcome:
    values: dict[str, Any] = {
        "result_frame": frame,
        "logs": b"",
        "exit_code": 0,
        "oom_killed": False,
        "timed_out": False,
        "output_exceeded": False,
        "protocol_error": None,
        "duration_ms": 12,
    }
    values.update(fields)
    return RawOutcome(**values)


def _error(outcome: Outcome) -> tuple[ErrorType, str]:
    assert outcome.status is RunStatus.ERROR and outcome.error is not None, outcome
    assert outcome.output is None and outcome.effects == ()
    return outcome.error.type, outcome.error.message


def test_an_ok_frame_gives_its_output_and_no_effects() -> None:
    outcome = classify(_raw(OK_FRAME), LIMITS, has_conversation=False)
    assert outcome == Outcome(status=RunStatus.OK, output={"answer": 42})


def test_an_ok_frame_without_an_effects_list_counts_as_none() -> None:
    outcome = classify(_raw({"status": "ok", "output": None}), LIMITS, has_conversation=False)
    assert outcome == Outcome(status=RunStatus.OK, output=None)


def test_ok_with_effects_in_a_conversation_carries_the_validated_effects() -> None:
    frame = {**OK_FRAME, "effects": [TAG, {"kind": "set_metadata", "key": "k", "value": [1]}]}
    outcome = classify(_raw(frame), LIMITS, has_conversation=True)
    assert outcome.status is RunStatus.OK and outcome.output == {"answer": 42}
    assert outcome.effects == (
        Effect(EffectKind.ADD_TAG, {"tag": "vip"}),
        Effect(EffectKind.SET_METADATA, {"key": "k", "value": [1]}),
    )


def test_effects_without_a_conversation_are_an_invalid_return() -> None:
    outcome = classify(_raw({**OK_FRAME, "effects": [TAG]}), LIMITS, has_conversation=False)
    assert _error(outcome) == (
        ErrorType.INVALID_RETURN,
        "effects rejected: the run has no conversation",
    )


def test_effects_breaking_the_contract_are_an_invalid_return_naming_the_problem() -> None:
    frame = {**OK_FRAME, "effects": [{"kind": "launch_rockets"}]}
    type_, message = _error(classify(_raw(frame), LIMITS, has_conversation=True))
    assert type_ is ErrorType.INVALID_RETURN
    assert message == "effects rejected: effects[0]: unknown kind 'launch_rockets'"


def test_an_output_over_the_limit_is_output_limit_even_when_the_stream_fitted() -> None:
    big = {"status": "ok", "output": "x" * LIMITS.max_output_bytes}  # +2 for the quotes
    type_, message = _error(classify(_raw(big), LIMITS, has_conversation=False))
    assert type_ is ErrorType.OUTPUT_LIMIT
    assert message == f"the result is {LIMITS.max_output_bytes + 2} bytes, over the limit"
    # One byte less than the limit as JSON still fits.
    fits = {"status": "ok", "output": "x" * (LIMITS.max_output_bytes - 2)}
    assert classify(_raw(fits), LIMITS, has_conversation=False).status is RunStatus.OK


def test_a_timed_out_run_is_timeout_whatever_else_came_back() -> None:
    raw = _raw(OK_FRAME, timed_out=True, output_exceeded=True, oom_killed=True, exit_code=137)
    assert _error(classify(raw, LIMITS, has_conversation=False)) == (
        ErrorType.TIMEOUT,
        "the run passed its 5000 ms deadline",
    )


def test_a_flooded_stream_is_output_limit_before_memory() -> None:
    raw = _raw(None, output_exceeded=True, oom_killed=True, exit_code=137)
    assert _error(classify(raw, LIMITS, has_conversation=False)) == (
        ErrorType.OUTPUT_LIMIT,
        "result and logs passed the 1000-byte output limit",
    )


def test_an_oom_kill_is_memory_limit_even_with_a_result_frame() -> None:
    raw = _raw(OK_FRAME, oom_killed=True, exit_code=137)
    assert _error(classify(raw, LIMITS, has_conversation=False)) == (
        ErrorType.MEMORY_LIMIT,
        "the run passed its 128 MiB memory limit",
    )


def test_a_protocol_error_is_an_invalid_return_with_its_message() -> None:
    raw = _raw(OK_FRAME, protocol_error="frame 2: not JSON")
    assert _error(classify(raw, LIMITS, has_conversation=False)) == (
        ErrorType.INVALID_RETURN,
        "frame 2: not JSON",
    )


@pytest.mark.parametrize(
    ("exit_code", "message"),
    [
        (137, "the script's process died (SIGKILL) before returning a result"),
        (139, "the script's process died (SIGSEGV) before returning a result"),
        (128 + 99, "the script's process died (signal 99) before returning a result"),
        (3, "the script ended the process (exit code 3) before returning a result"),
        (0, "the script ended the process (exit code 0) before returning a result"),
        (None, "the script ended the process (exit code None) before returning a result"),
    ],
)
def test_no_result_frame_is_an_exception_naming_the_signal_or_exit_code(
    exit_code: int | None, message: str
) -> None:
    raw = _raw(None, exit_code=exit_code)
    assert _error(classify(raw, LIMITS, has_conversation=False)) == (ErrorType.EXCEPTION, message)


@pytest.mark.parametrize("type_", sorted(RUNTIME_ERROR_TYPES))
def test_a_runtime_error_frame_keeps_its_type_message_and_traceback(type_: str) -> None:
    frame = {
        "status": "error",
        "error": {"type": type_, "message": "boom", "traceback": "Traceback ..."},
    }
    outcome = classify(_raw(frame), LIMITS, has_conversation=False)
    assert outcome.status is RunStatus.ERROR and outcome.error is not None
    assert (outcome.error.type, outcome.error.message) == (ErrorType(type_), "boom")
    assert outcome.error.traceback == "Traceback ..."


def test_a_runtime_error_frame_may_omit_the_traceback_and_long_parts_are_cut() -> None:
    frame = {"status": "error", "error": {"type": "exception", "message": "m" * 10_000}}
    outcome = classify(_raw(frame), LIMITS, has_conversation=False)
    assert outcome.error is not None and outcome.error.traceback is None
    assert outcome.error.message == "m" * 4096
    frame["error"] = {"type": "exception", "message": "m", "traceback": "t" * 20_000}
    outcome = classify(_raw(frame), LIMITS, has_conversation=False)
    assert outcome.error is not None and outcome.error.traceback == "t" * 16 * 1024


@pytest.mark.parametrize(
    "frame",
    [
        # Types only the control plane may decide are not the sandbox's to claim.
        {"status": "error", "error": {"type": "timeout", "message": "m"}},
        {"status": "error", "error": {"type": "sandbox_error", "message": "m"}},
        {"status": "error", "error": {"type": "invalid_args", "message": "m"}},
        {"status": "error", "error": {"type": "made_up", "message": "m"}},
        {"status": "error", "error": {"type": "exception", "message": 7}},
        {"status": "error", "error": {"type": "exception", "message": "m", "traceback": 1}},
        {"status": "error", "error": "exception"},
        {"status": "error"},
        {"status": "ok"},
        {"status": "maybe", "output": 1},
        {},
    ],
)
def test_a_malformed_frame_is_an_invalid_return(frame: dict[str, Any]) -> None:
    assert _error(classify(_raw(frame), LIMITS, has_conversation=False)) == (
        ErrorType.INVALID_RETURN,
        "the sandbox sent a malformed result frame",
    )


def test_the_messages_name_the_run_s_own_limits() -> None:
    limits = replace(LIMITS, timeout_ms=250, memory_mb=64, max_output_bytes=10)
    assert "250 ms" in _error(classify(_raw(timed_out=True), limits, False))[1]
    assert "64 MiB" in _error(classify(_raw(oom_killed=True), limits, False))[1]
    assert "10-byte" in _error(classify(_raw(output_exceeded=True), limits, False))[1]
