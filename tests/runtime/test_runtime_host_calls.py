"""Host calls over the stdio channel: frames, replies, failures, fallbacks and the cap."""

from __future__ import annotations

import json
import os
import threading
from typing import Any

import pytest

from actioncage_runtime.__main__ import run
from tests.runtime.harness import envelope_line, run_action


def ok(call_id: int, value: Any) -> dict[str, Any]:
    return {"type": "host_result", "id": call_id, "ok": True, "value": value}


def failed(call_id: int, error: str = "LLM provider is not configured") -> dict[str, Any]:
    return {"type": "host_result", "id": call_id, "ok": False, "error": error}


def test_host_calls_write_frames_and_return_the_replies() -> None:
    out = run_action(
        """
        def execute_action(context):
            return [
                llm_classify_binary("Is this a refund request?", "I want my money back"),
                llm_classify_category("Which team?", "charged twice", ["billing", "tech"]),
                add_google_sheets_row("sheet-1", ["a", 1, 2.5, True, None]),
                add_google_sheets_row("sheet-1", {"name": "Ann", "count": 2}),
            ]
        """,
        replies=[ok(1, True), ok(2, "billing"), ok(3, {"updatedRange": "A1:E1"}), ok(4, None)],
    )
    assert out.output == [True, "billing", {"updatedRange": "A1:E1"}, None]
    assert out.host_calls == [
        {
            "type": "host_call",
            "id": 1,
            "name": "llm_classify_binary",
            "args": {"prompt": "Is this a refund request?", "input": "I want my money back"},
        },
        {
            "type": "host_call",
            "id": 2,
            "name": "llm_classify_category",
            "args": {
                "prompt": "Which team?",
                "input": "charged twice",
                "options": ["billing", "tech"],
            },
        },
        {
            "type": "host_call",
            "id": 3,
            "name": "add_google_sheets_row",
            "args": {"sheetId": "sheet-1", "data": ["a", 1, 2.5, True, None]},
        },
        {
            "type": "host_call",
            "id": 4,
            "name": "add_google_sheets_row",
            "args": {"sheetId": "sheet-1", "data": {"name": "Ann", "count": 2}},
        },
    ]
    assert out.frames[-1]["type"] == "result"


def test_failure_returns_the_fallback() -> None:
    out = run_action(
        """
        def execute_action(context):
            return [
                llm_classify_binary("p", "i", fallback=False),
                llm_classify_category("p", "i", ["a", "b"], fallback="other"),
            ]
        """,
        replies=[failed(1), failed(2)],
    )
    assert out.output == [False, "other"]


def test_failure_without_fallback_raises_host_call_error() -> None:
    out = run_action(
        "def execute_action(context):\n    return llm_classify_binary('p', 'i')\n",
        replies=[failed(1, "LLM provider is not configured")],
    )
    assert out.error["type"] == "exception"
    assert out.error["message"] == (
        "HostCallError: llm_classify_binary: LLM provider is not configured"
    )
    assert 'File "action.py", line 2, in execute_action' in out.error["traceback"]
    assert "helpers.py" not in out.error["traceback"]


def test_script_can_catch_host_call_error() -> None:
    out = run_action(
        """
        def execute_action(context):
            try:
                add_google_sheets_row("sheet-1", ["a"])
            except HostCallError as exc:
                return f"caught: {exc}"
        """,
        replies=[failed(1, "Sheets is not configured")],
    )
    assert out.output == "caught: add_google_sheets_row: Sheets is not configured"


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ("not json\n", "malformed reply from the control plane"),
        ("[1, 2]\n", "malformed reply from the control plane"),
        (json.dumps(ok(2, True)) + "\n", "malformed reply from the control plane"),
        (json.dumps({**ok(1, True), "id": True}) + "\n", "malformed reply from the control plane"),
        (json.dumps({**ok(1, True), "type": "host_call"}) + "\n", "malformed reply"),
        (json.dumps({**ok(1, True), "ok": "yes"}) + "\n", "malformed reply"),
        (json.dumps(ok(1, "true")) + "\n", "unexpected reply value 'true'"),
        (json.dumps(ok(1, 1)) + "\n", "unexpected reply value 1"),
        (json.dumps({"type": "host_result", "id": 1, "ok": True}) + "\n", "unexpected reply value"),
        (json.dumps({"type": "host_result", "id": 1, "ok": False}) + "\n", "host call failed"),
        ("", "the control plane sent no reply"),
    ],
)
def test_malformed_binary_reply_is_a_failure(reply: str, reason: str) -> None:
    with_fallback = run_action(
        "def execute_action(context):\n    return llm_classify_binary('p', 'i', fallback=True)\n",
        replies=[reply],
    )
    assert with_fallback.output is True
    without = run_action(
        "def execute_action(context):\n    return llm_classify_binary('p', 'i')\n",
        replies=[reply],
    )
    assert without.error["message"].startswith("HostCallError: llm_classify_binary: ")
    assert reason in without.error["message"]


def test_category_reply_outside_the_options_is_a_failure() -> None:
    out = run_action(
        """
        def execute_action(context):
            return llm_classify_category("p", "i", ["billing", "tech"], fallback="billing")
        """,
        replies=[ok(1, "sales")],
    )
    assert out.output == "billing"


def test_overlong_reply_is_skipped_and_the_channel_stays_in_step() -> None:
    huge = json.dumps(ok(1, "x" * (1024 * 1024 + 10))) + "\n"
    out = run_action(
        """
        def execute_action(context):
            try:
                add_google_sheets_row("s", ["a"])
            except HostCallError as exc:
                return [str(exc), add_google_sheets_row("s", ["b"])]
        """,
        replies=[huge, ok(2, "second")],
    )
    assert out.output == ["add_google_sheets_row: malformed reply from the control plane", "second"]


def test_host_call_cap_raises_even_with_a_fallback() -> None:
    out = run_action(
        """
        def execute_action(context):
            results = [llm_classify_binary("p", "i"), llm_classify_binary("p", "i")]
            try:
                llm_classify_binary("p", "i", fallback=False)
            except HostCallError as exc:
                results.append(str(exc))
            return results
        """,
        replies=[ok(1, True), ok(2, False)],
        maxHostCalls=2,
    )
    assert out.output == [True, False, "llm_classify_binary: host call limit reached (2 per run)"]
    assert [call["id"] for call in out.host_calls] == [1, 2]


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (
            "llm_classify_binary(1, 'i')",
            "TypeError: llm_classify_binary: prompt must be a str, not int",
        ),
        (
            "llm_classify_binary('', 'i')",
            "ValueError: llm_classify_binary: prompt must be 1-32768 characters, got 0",
        ),
        (
            "llm_classify_binary('p', 'i' * 32769)",
            "ValueError: llm_classify_binary: input must be at most 32768 characters, got 32769",
        ),
        (
            "llm_classify_binary('p', None)",
            "TypeError: llm_classify_binary: input must be a str, not NoneType",
        ),
        (
            "llm_classify_binary('p', 'i', fallback='no')",
            "TypeError: llm_classify_binary: fallback must be a bool or None, not str",
        ),
        (
            "llm_classify_category('p', 'i', [])",
            "ValueError: llm_classify_category: options must have 1-100 items, got 0",
        ),
        (
            "llm_classify_category('p', 'i', 'ab')",
            "TypeError: llm_classify_category: options must be a list of str, not str",
        ),
        (
            "llm_classify_category('p', 'i', ['a'] * 101)",
            "ValueError: llm_classify_category: options must have 1-100 items, got 101",
        ),
        (
            "llm_classify_category('p', 'i', ['a', None])",
            "TypeError: llm_classify_category: options[1] must be a str, not NoneType",
        ),
        (
            "llm_classify_category('p', 'i', ['a'], fallback=1)",
            "TypeError: llm_classify_category: fallback must be a str or None, not int",
        ),
        (
            "add_google_sheets_row('', ['a'])",
            "ValueError: add_google_sheets_row: sheet_id must be 1-256 characters, got 0",
        ),
        (
            "add_google_sheets_row('s', 'a,b')",
            "TypeError: add_google_sheets_row: data must be a list or a dict, not str",
        ),
        (
            "add_google_sheets_row('s', [])",
            "ValueError: add_google_sheets_row: data must not be empty",
        ),
        (
            "add_google_sheets_row('s', [['nested']])",
            "TypeError: add_google_sheets_row: data[0] must be a str, int, float, bool or None",
        ),
        (
            "add_google_sheets_row('s', {1: 'a'})",
            "TypeError: add_google_sheets_row: data keys must be str, not int",
        ),
        (
            "add_google_sheets_row('s', {'n': {}})",
            "TypeError: add_google_sheets_row: data['n'] must be a str",
        ),
        (
            "add_google_sheets_row('s', [float('nan')])",
            "ValueError: add_google_sheets_row: data is not valid JSON: nan at $[0]",
        ),
        (
            "add_google_sheets_row('s', ['x' * 70000])",
            "ValueError: add_google_sheets_row: data is 70004 bytes serialised",
        ),
    ],
)
def test_host_calls_reject_bad_arguments_without_calling(call: str, expected: str) -> None:
    out = run_action(f"def execute_action(context):\n    return {call}\n")
    assert out.error["message"].startswith(expected)
    assert out.host_calls == []


def test_host_calls_block_for_the_reply_over_real_pipes() -> None:
    """A control-plane thread answers each host_call frame as it arrives, like the real one."""
    stdin_read, stdin_write = os.pipe()
    frames_read, frames_write = os.pipe()
    code = """
        def execute_action(context):
            first = llm_classify_binary("p", "one")
            second = llm_classify_category("p", "two", ["x", "y"])
            return [first, second]
        """
    seen: list[dict[str, Any]] = []

    def control_plane() -> None:
        with open(stdin_write, "w") as to_runtime, open(frames_read) as from_runtime:
            to_runtime.write(envelope_line(code))
            to_runtime.flush()
            for line in from_runtime:
                frame = json.loads(line)
                seen.append(frame)
                if frame["type"] == "result":
                    return
                value = frame["args"]["input"] == "one" or "y"
                to_runtime.write(json.dumps(ok(frame["id"], value)) + "\n")
                to_runtime.flush()

    thread = threading.Thread(target=control_plane)
    thread.start()
    with open(stdin_read) as stdin, open(frames_write, "w") as frames_out:
        assert run(stdin, frames_out) == 0
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert [frame["type"] for frame in seen] == ["host_call", "host_call", "result"]
    assert seen[-1]["output"] == [True, "y"]
