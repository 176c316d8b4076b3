"""sandbox/: sandbox/channel.py: the framed stdio protocol over any sandbox's byte channel
(docs/protocol.md).

Frames are JSON lines on stdout, logs are stderr; the control plane sends the envelope,
answers host calls, and reads up to the end frame, within the run's deadline and output cap.
Nothing here knows which backend made the sandbox.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from actioncage.errors import SandboxError
from actioncage.models import EffectiveLimits, RawOutcome
from actioncage.sandbox import envelope
from actioncage.sandbox.backend import LOGS_END, Sandbox, Stream
from actioncage.sandbox.limits import FRAME_ALLOWANCE_BYTES

# Given a host call frame, returns the stdin line that answers it.
HostCallHandler = Callable[[dict[str, Any]], bytes]

READY_FRAME = b'{"type":"ready"}'
# After the result frame, how long we keep reading for late logs before we stop waiting.
_AFTER_RESULT_GRACE_S = 2.0
# The runtime flushes its logs before it writes the result frame, but stdout and stderr are
# separate pipes, so their bytes may reach us in either order: after the frame, logs that
# come within this quiet window are kept, and the run does not wait for the process to exit.
_AFTER_RESULT_IDLE_S = 0.01
# Host calls past the limit are refused; a sandbox that keeps asking is cut off.
_HOST_CALL_SLACK = 10
# How long we wait for a process we killed (or that ended without a result) to be reaped.
_EXIT_WAIT_S = 30.0


def await_ready(sandbox: Sandbox, timeout_s: float) -> None:
    """Read a warm sandbox's output up to its ready frame; its logs before it are dropped.

    Raises SandboxError when anything else comes first on stdout, the output ends, or
    ``timeout_s`` passes.
    """
    deadline = time.monotonic() + timeout_s
    stdout = bytearray()
    while b"\n" not in stdout:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise SandboxError(f"a warm sandbox was not ready within {timeout_s} s")
        chunk = sandbox.read(remaining)
        if chunk is None:
            continue
        stream, data = chunk
        if stream is Stream.END:
            raise SandboxError("a warm sandbox ended before it was ready")
        if stream is Stream.STDOUT:
            stdout += data
            if len(stdout) > len(READY_FRAME) + 2 and b"\n" not in stdout:
                break
    line, _, rest = bytes(stdout).partition(b"\n")
    if rest or line.strip() != READY_FRAME:
        raise SandboxError("a warm sandbox wrote something other than ready")
    sandbox.ready_at = time.monotonic()


def exchange(
    sandbox: Sandbox,
    envelope_line: bytes,
    limits: EffectiveLimits,
    on_host_call: HostCallHandler,
) -> RawOutcome:
    """Send the envelope, answer host calls and read the sandbox to its end frame (or its
    deadline, counted from the envelope, or its output cap). A run that ended without a clean
    result is hung up on, killed and its exit status read. The caller discards the sandbox
    afterwards (which hangs up on it, when this did not).

    Raises SandboxError when the channel or the backend fails; a misbehaving script is an
    outcome instead.
    """
    begun = time.monotonic()
    reader = _Reader(sandbox, limits, on_host_call)
    sandbox.write(envelope_line)
    reader.pump(deadline=begun + limits.timeout_ms / 1000)
    exit_code: int | None = None
    oom_killed = False
    if reader.result_frame is None or reader.must_kill:
        # Only a run without a clean result needs the exit status; one with a result is
        # removed in the background, unseen, and hung up on then (discard): a container's
        # runtime waits for that hang-up to exit, so its exit is off the answer's path.
        # Hang up first: an engine will not finish stopping a sandbox whose streams nobody
        # drains.
        sandbox.close()
        if not reader.eof or reader.must_kill:
            sandbox.kill()
        status = sandbox.wait(_EXIT_WAIT_S)
        exit_code, oom_killed = status.exit_code, status.oom_killed
    return RawOutcome(
        result_frame=reader.result_frame,
        logs=bytes(reader.logs),
        exit_code=exit_code,
        oom_killed=oom_killed,
        timed_out=reader.timed_out,
        output_exceeded=reader.output_exceeded,
        protocol_error=reader.protocol_error,
        duration_ms=int((time.monotonic() - begun) * 1000),
        host_calls=reader.host_calls,
    )


class _Reader:
    """Reads one run's output: frames from stdout, logs from stderr, each capped."""

    def __init__(
        self, sandbox: Sandbox, limits: EffectiveLimits, on_host_call: HostCallHandler
    ) -> None:
        self._sandbox = sandbox
        self._on_host_call = on_host_call
        # Logs and the result frame share the output cap; each frame line is capped on its
        # own, and host calls are bounded in number, so nothing read here is unbounded.
        self._cap = limits.max_output_bytes + FRAME_ALLOWANCE_BYTES
        self._log_cap = limits.max_output_bytes
        self._max_host_calls = limits.max_host_calls
        self._stdout = bytearray()  # an incomplete frame line
        self.logs = bytearray()
        self.result_frame: dict[str, Any] | None = None
        self.timed_out = False
        self.output_exceeded = False
        self.protocol_error: str | None = None
        self.host_calls = 0
        self.eof = False
        self.logs_done = False
        self.end_seen = False  # the runtime's end frame, behind its result on stdout

    @property
    def must_kill(self) -> bool:
        return self.timed_out or self.output_exceeded or self.protocol_error is not None

    def pump(self, deadline: float) -> None:
        """Read until the output ends, the deadline passes or something must stop the run."""
        while not self.must_kill:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if self.result_frame is None:
                    self.timed_out = True
                return
            if self.end_seen:
                if self.logs_done:
                    return  # every frame and log line is in: no need to see the exit
                remaining = min(remaining, _AFTER_RESULT_IDLE_S)
            chunk = self._sandbox.read(remaining)
            if chunk is None:
                if self.end_seen:
                    return  # every frame is in and the logs went quiet: no need to see the exit
                continue
            stream, data = chunk
            if stream is Stream.END:
                self.eof = True
                return
            if stream is Stream.STDERR:
                self._take_logs(data)
            else:
                self._take_stdout(data)
            if self.result_frame is not None:
                deadline = min(deadline, time.monotonic() + _AFTER_RESULT_GRACE_S)

    def _take_logs(self, data: bytes) -> None:
        room = self._log_cap + len(LOGS_END) - len(self.logs)
        self.logs += data[: max(0, room)]
        if self.logs.endswith(LOGS_END):
            del self.logs[-len(LOGS_END) :]
            self.logs_done = True
        elif len(self.logs) > self._log_cap or len(data) > room:
            del self.logs[self._log_cap :]
            self.output_exceeded = True

    def _take_stdout(self, payload: bytes) -> None:
        self._stdout += payload
        while b"\n" in self._stdout and not self.must_kill:
            line, _, rest = bytes(self._stdout).partition(b"\n")
            self._stdout = bytearray(rest)
            self._take_frame(line)
        if len(self._stdout) > self._cap:
            self.output_exceeded = True

    def _take_frame(self, line: bytes) -> None:
        if self.end_seen:
            self.protocol_error = "the sandbox wrote after its end frame"
            return
        frame = envelope.parse_frame(line)
        if frame is None:
            self.protocol_error = "the sandbox wrote a malformed frame"
            return
        if frame["type"] == "end":
            if self.result_frame is None:
                self.protocol_error = "the sandbox ended without a result frame"
            self.end_seen = True
            return
        if self.result_frame is not None:
            self.protocol_error = "the sandbox wrote after its result frame"
            return
        if frame["type"] == "result":
            if len(line) + len(self.logs) > self._cap:
                self.output_exceeded = True
            self.result_frame = frame
            return
        self.host_calls += 1
        if self.host_calls > self._max_host_calls + _HOST_CALL_SLACK:
            self.protocol_error = "the sandbox kept asking for host calls past its limit"
            return
        if self.host_calls > self._max_host_calls:
            reply = envelope.host_reply(
                frame.get("id"), False, error=f"at most {self._max_host_calls} host calls per run"
            )
        else:
            reply = self._on_host_call(frame)
        self._sandbox.write(reply)
