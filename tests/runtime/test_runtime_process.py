"""`python -m actioncage_runtime` as a real process: the fd set-up of main() and the exit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from tests.runtime.harness import RUNTIME_DIR, envelope_line

LOGS_END = "\x00actioncage:logs-end\x00"


def start(args: list[str] | None = None, **popen: Any) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(RUNTIME_DIR)}
    return subprocess.Popen(
        [sys.executable, "-m", "actioncage_runtime", *(args or [])],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **popen,
    )


def run_process(stdin_text: str) -> tuple[int, str, str]:
    process = start()
    stdout, stderr = process.communicate(stdin_text, timeout=60)
    return process.returncode, stdout, stderr


def result_of(stdout: str) -> dict[str, Any]:
    """The result frame, checking that the runtime's end frame follows it and nothing else."""
    result, end, rest = stdout.split("\n", 2)
    assert json.loads(end) == {"type": "end"} and rest == ""
    frame: dict[str, Any] = json.loads(result)
    return frame


def test_only_frames_reach_stdout() -> None:
    code = """
        import os, subprocess, sys

        def execute_action(context):
            print("printed")
            sys.stdout.flush()
            os.write(1, b"raw fd 1\\n")
            sys.stderr.write("to stderr\\n")
            sys.stderr.flush()
            subprocess.run(["echo", "from a child"], check=True)
            return {"stdin": sys.stdin.read()}
        """
    returncode, stdout, stderr = run_process(envelope_line(code) + '{"type": "host_result"}\n')
    assert returncode == 0
    assert stdout.count("\n") == 2
    frame = result_of(stdout)
    assert frame == {"type": "result", "status": "ok", "output": {"stdin": ""}, "effects": []}
    # After the last log byte, the end-of-logs marker (docs/protocol.md).
    assert stderr == "printed\nraw fd 1\nto stderr\nfrom a child\n" + LOGS_END


def test_preload_imports_then_says_ready_before_reading_the_envelope() -> None:
    process = start(args=["--preload", "json,no_such_module_here"])
    assert process.stdout is not None and process.stdin is not None
    # The ready frame comes before any envelope is sent: the sandbox waits after it.
    assert json.loads(process.stdout.readline()) == {"type": "ready"}
    code = "import sys\ndef execute_action(context):\n    return 'json' in sys.modules\n"
    stdout, _ = process.communicate(envelope_line(code), timeout=60)
    assert process.returncode == 0
    assert result_of(stdout)["output"] is True


def test_error_results_still_exit_zero() -> None:
    code = "def execute_action(context):\n    print('before')\n    raise ValueError('bad')\n"
    returncode, stdout, stderr = run_process(envelope_line(code))
    assert returncode == 0
    assert result_of(stdout)["error"]["message"] == "ValueError: bad"
    assert stderr == "before\n" + LOGS_END


def test_refused_envelope_exits_2_without_a_frame() -> None:
    returncode, stdout, stderr = run_process("{not json\n")
    assert returncode == 2
    assert stdout == ""
    assert "actioncage_runtime: the envelope is not JSON" in stderr


def test_host_call_round_trip_over_process_pipes() -> None:
    code = "def execute_action(context):\n    return llm_classify_binary('p', 'i')\n"
    process = start()
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(envelope_line(code))
    process.stdin.flush()
    call = json.loads(process.stdout.readline())
    assert call["type"] == "host_call" and call["name"] == "llm_classify_binary"
    process.stdin.write(
        json.dumps({"type": "host_result", "id": call["id"], "ok": True, "value": True}) + "\n"
    )
    process.stdin.flush()
    stdout, _ = process.communicate(timeout=60)
    assert result_of(stdout)["output"] is True
    assert process.returncode == 0


def test_threads_left_running_do_not_hold_the_process() -> None:
    code = """
        import threading, time

        def execute_action(context):
            threading.Thread(target=time.sleep, args=(3600,)).start()
            return "returned"
        """
    returncode, stdout, _ = run_process(envelope_line(code))
    assert returncode == 0
    assert result_of(stdout)["output"] == "returned"
