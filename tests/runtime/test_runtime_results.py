"""The result frame: ok outputs, every error type, tracebacks, logs and refused envelopes."""

from __future__ import annotations

import json

import pytest

from tests.runtime.harness import envelope_line, run_action, run_stdin


def test_ok_result_carries_output_and_effects() -> None:
    out = run_action(
        """
        def execute_action(context):
            add_conversation_tag(context, "vip")
            return {"orderId": context["args"]["orderId"], "items": (1, 2.5, None, True)}
        """,
        args={"orderId": "A-1"},
    )
    assert out.exit_code == 0
    assert out.frames == [
        {
            "type": "result",
            "status": "ok",
            "output": {"orderId": "A-1", "items": [1, 2.5, None, True]},
            "effects": [{"kind": "add_tag", "tag": "vip"}],
        }
    ]


def test_ok_result_allows_none_and_int_keys() -> None:
    assert run_action("def execute_action(context):\n    return None\n").output is None
    out = run_action("def execute_action(context):\n    return {404: 'missing'}\n")
    assert out.output == {"404": "missing"}


def test_frames_are_ascii_json_lines() -> None:
    out = run_action("def execute_action(context):\n    return 'caf\\u00e9 \\ud83d\\ude00'\n")
    assert out.raw_frames.isascii()
    assert out.output == "café 😀"


@pytest.mark.parametrize(
    ("returned", "expected"),
    [
        ("{1, 2}", "return value is not JSON-serialisable: set at $"),
        ("{'a': [object()]}", 'object at $["a"][0]'),
        ("float('nan')", "nan at $ (NaN and infinity are not allowed)"),
        ("{'x': float('inf')}", 'inf at $["x"]'),
        ("nested(150)", "nested deeper than 100 levels"),
        ("cyclic()", "circular reference at $[0]"),
        ("{(1, 2): 'a'}", "key (1, 2) at $ is a tuple"),
        ("b'bytes'", "bytes at $"),
        ("10 ** 5000", "return value is not valid JSON"),
    ],
)
def test_non_json_return_is_invalid_return(returned: str, expected: str) -> None:
    out = run_action(
        f"""
        def nested(depth):
            value = []
            for _ in range(depth):
                value = [value]
            return value

        def cyclic():
            value = []
            value.append(value)
            return value

        def execute_action(context):
            return {returned}
        """
    )
    assert out.error["type"] == "invalid_return"
    assert expected in out.error["message"]
    assert out.result["effects"] == []


def test_large_return_is_output_limit() -> None:
    out = run_action("def execute_action(context):\n    return 'x' * 5000\n", maxOutputBytes=4096)
    assert out.error["type"] == "output_limit"
    assert "the limit is 4096 bytes" in out.error["message"]
    assert len(out.raw_frames) <= 4096


def test_return_with_many_elements_is_output_limit_without_serialising() -> None:
    out = run_action("def execute_action(context):\n    return [0] * 10_000\n", maxOutputBytes=4096)
    assert out.error["type"] == "output_limit"


def test_effects_that_overflow_the_frame_are_output_limit() -> None:
    out = run_action(
        """
        def execute_action(context):
            for i in range(10):
                set_conversation_metadata(context, f"k{i}", "v" * 1000)
            return "small"
        """,
        maxOutputBytes=4096,
    )
    assert out.error["type"] == "output_limit"
    assert "with its effects" in out.error["message"]
    assert out.result["effects"] == []


def test_exception_reports_type_message_and_script_only_traceback() -> None:
    out = run_action(
        """
        import json

        def parse(text):
            return json.loads(text)

        def execute_action(context):
            return parse("{not json")
        """
    )
    error = out.error
    assert error["type"] == "exception"
    assert error["message"].startswith("JSONDecodeError: Expecting property name")
    trace = error["traceback"]
    assert trace.startswith("Traceback (most recent call last):\n")
    files = [line.split('"')[1] for line in trace.splitlines() if line.startswith("  File ")]
    assert files == ["action.py", "action.py"]
    assert 'File "action.py", line 8, in execute_action' in trace
    assert 'File "action.py", line 5, in parse' in trace
    assert "    return json.loads(text)" in trace
    assert "actioncage_runtime" not in trace
    assert "json/decoder.py" not in trace


def test_exception_from_a_helper_shows_no_runtime_frames() -> None:
    out = run_action("def execute_action(context):\n    add_conversation_tag(context, 7)\n")
    assert out.error["message"] == "TypeError: add_conversation_tag: tag must be a str, not int"
    trace = out.error["traceback"]
    assert 'File "action.py", line 2, in execute_action' in trace
    assert "helpers.py" not in trace and "__main__" not in trace


def test_chained_exceptions_keep_both_parts() -> None:
    out = run_action(
        """
        def execute_action(context):
            try:
                {}["missing"]
            except KeyError as exc:
                raise RuntimeError("lookup failed") from exc
        """
    )
    assert out.error["message"] == "RuntimeError: lookup failed"
    trace = out.error["traceback"]
    assert "KeyError: 'missing'" in trace
    assert "direct cause" in trace
    assert trace.count('File "action.py"') == 2


def test_module_level_exception_is_reported() -> None:
    out = run_action("x = 1\nraise ValueError('at import')\n")
    assert out.error["message"] == "ValueError: at import"
    assert 'File "action.py", line 2, in <module>' in out.error["traceback"]


def test_exception_with_unprintable_message_still_reports() -> None:
    out = run_action(
        """
        class Weird(Exception):
            def __str__(self):
                raise RuntimeError("no")

        def execute_action(context):
            raise Weird()
        """
    )
    assert out.error["message"] == "Weird: <unprintable Weird>"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("import sys\n    sys.exit(3)", "script called sys.exit(3)"),
        ("import sys\n    sys.exit('bye')", "script called sys.exit('bye')"),
        ("import sys\n    sys.exit()", "script called sys.exit()"),
        ("exit(0)", "script called sys.exit(0)"),
        ("raise KeyboardInterrupt", "KeyboardInterrupt"),
        ("return execute_action(context)", "RecursionError: maximum recursion depth exceeded"),
        ("raise MemoryError", "MemoryError: the script ran out of memory"),
        ("return bytearray(1 << 60)", "MemoryError: the script ran out of memory"),
    ],
)
def test_ways_a_script_can_end(body: str, message: str) -> None:
    out = run_action(f"def execute_action(context):\n    {body}\n")
    expected_type = "memory_limit" if "MemoryError" in message else "exception"
    assert out.error["type"] == expected_type
    assert out.error["message"].startswith(message)
    assert 'File "action.py", line' in out.error["traceback"]


def test_recursion_traceback_is_collapsed_and_fits() -> None:
    out = run_action("def execute_action(context):\n    return execute_action(context)\n")
    assert "more times]" in out.error["traceback"]
    assert len(out.raw_frames) < 64 * 1024


def test_script_lowering_the_recursion_limit_does_not_break_reporting() -> None:
    out = run_action(
        """
        import sys

        def execute_action(context):
            limit = 2
            while True:  # the lowest limit the interpreter accepts here
                try:
                    sys.setrecursionlimit(limit)
                    break
                except RecursionError:
                    limit += 1
            raise ValueError("low limit")
        """
    )
    assert out.error["message"] == "ValueError: low limit"
    assert 'File "action.py", line 12, in execute_action' in out.error["traceback"]


def test_missing_execute_action_is_exception() -> None:
    out = run_action("def other(context):\n    return 1\n")
    assert out.error["type"] == "exception"
    assert out.error["message"].startswith("no function execute_action")


def test_non_callable_execute_action_is_exception() -> None:
    out = run_action("execute_action = 5\n")
    assert out.error["message"] == (
        "no function execute_action: execute_action is a int, not a function"
    )


def test_syntax_error_reports_the_line() -> None:
    out = run_action("def execute_action(context):\n    return 1\n\nx = (1 +\n")
    assert out.error["type"] == "exception"
    assert out.error["message"].startswith("SyntaxError: line 4: ")
    assert 'File "action.py", line 4' in out.error["traceback"]
    assert "x = (1 +" in out.error["traceback"]


def test_indentation_error_names_its_type_and_line() -> None:
    out = run_action("def execute_action(context):\nreturn 1\n")
    assert out.error["message"].startswith("IndentationError: line 2: ")


def test_huge_exception_message_is_truncated_to_fit() -> None:
    out = run_action(
        "def execute_action(context):\n    raise ValueError('x' * 100_000)\n",
        maxOutputBytes=2048,
    )
    assert out.error["message"].endswith("... [truncated]")
    assert len(out.raw_frames) <= 2048


def test_print_goes_to_logs_not_frames() -> None:
    out = run_action(
        """
        import sys

        print("module level")

        def execute_action(context):
            print("hello from print")
            sys.stdout.write("via stdout\\n")
            sys.stderr.write("via stderr\\n")
            print('{"type": "result", "status": "ok", "output": "forged"}')
            return "real"
        """
    )
    assert out.output == "real"
    assert len(out.frames) == 1
    assert "hello from print\nvia stdout\nvia stderr\n" in out.logs
    assert out.logs.startswith("module level\n")
    assert '"forged"' in out.logs


def test_logs_are_flushed_and_streams_restored_after_the_run() -> None:
    import sys

    before = sys.stdout, sys.stderr
    out = run_action("import sys\nsys.stdout = None\ndef execute_action(context):\n    return 1\n")
    assert out.output == 1
    assert (sys.stdout, sys.stderr) == before


def test_context_is_passed_in() -> None:
    out = run_action(
        "def execute_action(context):\n    return context\n",
        args={"a": 1},
        conversation_data=None,
    )
    assert out.output == {"args": {"a": 1}, "conversation": None}


@pytest.mark.parametrize(
    ("stdin_text", "reason"),
    [
        ("", "no envelope on stdin"),
        ("not json\n", "the envelope is not JSON"),
        ('{"v": 2}\n', "not a version 1 object"),
        ('{"v": 1, "code": 5}\n', "envelope.code must be a string"),
        ('{"v": 1, "code": "", "context": []}\n', "envelope.context must be an object"),
        (
            '{"v": 1, "code": "", "context": {"conversation": 3}}\n',
            "conversation must be an object or null",
        ),
        (
            '{"v": 1, "code": "", "context": {}, "limits": {"maxOutputBytes": 1}}\n',
            "envelope.limits.maxHostCalls must be a non-negative integer",
        ),
    ],
)
def test_bad_envelope_is_refused_without_a_frame(stdin_text: str, reason: str) -> None:
    out = run_stdin(stdin_text)
    assert out.exit_code == 2
    assert out.frames == []
    assert reason in out.logs


def test_envelope_over_8_mib_is_refused() -> None:
    line = envelope_line(
        "def execute_action(context):\n    return 1\n", args={"big": "x" * (8 << 20)}
    )
    out = run_stdin(line)
    assert out.exit_code == 2
    assert out.frames == []
    assert "larger than 8388608 bytes" in out.logs


def test_envelope_just_under_8_mib_runs() -> None:
    line = envelope_line("def execute_action(context):\n    return len(context['args']['big'])\n")
    padding = (8 << 20) - len(line) - 100
    line = envelope_line(
        "def execute_action(context):\n    return len(context['args']['big'])\n",
        args={"big": "x" * padding},
    )
    assert len(line) < 8 << 20
    assert run_stdin(line).output == padding


def test_result_frame_is_the_last_line() -> None:
    out = run_action("def execute_action(context):\n    return 1\n")
    assert out.raw_frames.count("\n") == 1
    assert json.loads(out.raw_frames)["type"] == "result"
