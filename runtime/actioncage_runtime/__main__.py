"""Reads the envelope, injects the helpers, calls execute_action and writes the result."""

from __future__ import annotations

import builtins
import os
import sys

from actioncage_runtime import jsoncodec
from actioncage_runtime.guards import JSONValueError, NotJSONError, SizeLimitError, dump_json
from actioncage_runtime.helpers import Helpers, HostChannel, Limits, write_frame

# Every sandbox imports this module before it can run anything, and its imports are CPU that
# each run pays (a sandbox is used once): modules only a failure needs (traceback, linecache)
# are imported when it happens, names used only in annotations only for type checkers, and
# no dataclasses, typing or contextlib at all (about 15 ms of CPU less per sandbox); not even
# json, which imports re (jsoncodec: about 3.5 ms more).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TextIO

PROTOCOL_VERSION = 1
MAX_ENVELOPE_BYTES = 8 * 1024 * 1024
SCRIPT_FILENAME = "action.py"
LOGS_END = b"\x00actioncage:logs-end\x00"
END_FRAME = b'{"type":"end"}\n'
EXIT_OK = 0
EXIT_BAD_ENVELOPE = 2
# Given by the container backend: after a clean result, wait for the control plane's hang-up
# instead of exiting (see linger()).
LINGER_FLAG = "--linger"
_LINGER_COMMAND = "/bin/cat"
# Error frames are shrunk step by step until they fit in maxOutputBytes: (message, traceback).
_ERROR_TEXT_CHARS = ((4096, 32768), (1024, 4096), (256, 0))


class EnvelopeError(ValueError):
    """The first stdin line is not a usable envelope, so no user code ran."""


class Envelope:
    """The first stdin line: the user's code, the context it is called with, and the limits.

    ``restricted_imports`` is set in restricted mode: the modules the script may import
    (RestrictedPython compile). ``egress_socket`` is set for runs with egress: the proxy's
    unix socket, mounted by the control plane.
    """

    __slots__ = ("code", "context", "limits", "restricted_imports", "egress_socket", "secrets")

    def __init__(
        self,
        code: str,
        context: dict[str, Any],
        limits: Limits,
        restricted_imports: frozenset[str] | None = None,
        egress_socket: str | None = None,
        secrets: dict[str, str | None] | None = None,
    ) -> None:
        self.code = code
        self.context = context
        self.limits = limits
        self.restricted_imports = restricted_imports
        self.egress_socket = egress_socket
        self.secrets = secrets


class Failure:
    """An error result: the contract's ``error.type``, a message, the script's traceback."""

    __slots__ = ("type", "message", "traceback")

    def __init__(self, type: str, message: str, traceback: str | None = None) -> None:
        self.type = type
        self.message = message
        self.traceback = traceback


def read_envelope(stdin: TextIO) -> Envelope:
    """Read and check the envelope line; raises EnvelopeError saying what was wrong."""
    try:
        line = stdin.readline(MAX_ENVELOPE_BYTES + 1)
    except ValueError as exc:  # undecodable input
        raise EnvelopeError(f"cannot read the envelope: {exc}") from None
    if not line.strip():
        raise EnvelopeError("no envelope on stdin")
    if len(line.encode("utf-8", "surrogatepass")) > MAX_ENVELOPE_BYTES:
        raise EnvelopeError(f"the envelope is larger than {MAX_ENVELOPE_BYTES} bytes")
    try:
        raw = jsoncodec.loads(line)
    except (ValueError, RecursionError) as exc:
        raise EnvelopeError(f"the envelope is not JSON: {exc}") from None
    if not isinstance(raw, dict) or raw.get("v") != PROTOCOL_VERSION:
        raise EnvelopeError(f"the envelope is not a version {PROTOCOL_VERSION} object")
    code, context = raw.get("code"), raw.get("context")
    if not isinstance(code, str):
        raise EnvelopeError("envelope.code must be a string")
    if not isinstance(context, dict):
        raise EnvelopeError("envelope.context must be an object")
    conversation = context.get("conversation")
    if conversation is not None and not isinstance(conversation, dict):
        raise EnvelopeError("envelope.context.conversation must be an object or null")
    try:
        limits = Limits.from_json(raw.get("limits"))
    except ValueError as exc:
        raise EnvelopeError(f"envelope.{exc}") from None
    restricted = raw.get("restricted")
    restricted_imports = None
    if restricted is not None:
        imports = restricted.get("imports") if isinstance(restricted, dict) else None
        if not isinstance(imports, list) or not all(isinstance(i, str) for i in imports):
            raise EnvelopeError("envelope.restricted.imports must be a list of module names")
        restricted_imports = frozenset(imports)
    egress = raw.get("egress")
    egress_socket = None
    if egress is not None:
        egress_socket = egress.get("socket") if isinstance(egress, dict) else None
        if not isinstance(egress_socket, str) or not egress_socket.startswith("/"):
            raise EnvelopeError("envelope.egress.socket must be an absolute path")
    secrets = raw.get("secrets")
    if secrets is not None and not (
        isinstance(secrets, dict)
        and all(isinstance(k, str) and isinstance(v, str | None) for k, v in secrets.items())
    ):
        raise EnvelopeError("envelope.secrets must map names to strings or null")
    return Envelope(code, context, limits, restricted_imports, egress_socket, secrets)


def run(stdin: TextIO, frames_out: TextIO, logs: TextIO | None = None) -> int:
    """Run the envelope read from ``stdin`` and write its one result frame to ``frames_out``.

    Host-call replies are read from ``stdin`` too. With ``logs`` given, ``sys.stdout`` and
    ``sys.stderr`` point at it while the script runs; either way they are restored and
    flushed before the result frame is written. Everything but the fd-level redirection
    happens here, so tests can drive it in-process with file objects.

    Returns EXIT_OK once the result frame is written, or EXIT_BAD_ENVELOPE when the envelope is
    refused: then nothing ran, no frame was written, and the reason went to the logs.
    """
    try:
        envelope = read_envelope(stdin)
    except EnvelopeError as exc:
        print(f"actioncage_runtime: {exc}", file=logs or sys.stderr, flush=True)
        return EXIT_BAD_ENVELOPE

    if envelope.egress_socket is not None:
        from actioncage_runtime.egress import use_proxy

        use_proxy(envelope.egress_socket)
    helpers = Helpers(
        envelope.context, envelope.limits, HostChannel(stdin, frames_out), envelope.secrets
    )
    saved_streams = sys.stdout, sys.stderr
    if logs is not None:
        sys.stdout = sys.stderr = logs
    try:
        value, failure = execute(
            envelope.code, envelope.context, helpers, envelope.restricted_imports
        )
    finally:
        script_streams = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = saved_streams

    max_bytes = envelope.limits.max_output_bytes
    outcome = failure if failure is not None else _ok_line(value, helpers.effects, max_bytes)
    line = outcome if isinstance(outcome, str) else _error_line(outcome, max_bytes)

    for stream in (*script_streams, *saved_streams, logs):
        _flush_quietly(stream)
    write_frame(frames_out, line)
    return EXIT_OK


def execute(
    code: str,
    context: dict[str, Any],
    helpers: Helpers,
    restricted_imports: frozenset[str] | None = None,
) -> tuple[Any, Failure | None]:
    """Compile and run the script, then call its ``execute_action(context)``. With
    ``restricted_imports`` set, compile it with RestrictedPython and allow only those imports.

    Returns ``(value, None)`` with what execute_action returned, or ``(None, failure)`` when the
    script did not compile, raised, exited, or defines no execute_action.
    """
    _forget_cached_source()
    script_globals: dict[str, Any] = {
        "__name__": "action",
        "__file__": SCRIPT_FILENAME,
        # Tracebacks (the script's own and ours) read the script's lines through it.
        "__loader__": _ScriptSource(code),
        "__builtins__": builtins,
        **helpers.script_globals(),
    }
    recursion_limit = sys.getrecursionlimit()
    raised: BaseException | None = None
    value: Any = None
    function: Any = None
    try:
        if restricted_imports is None:
            compiled = compile(code, SCRIPT_FILENAME, "exec", dont_inherit=True)
        else:
            from actioncage_runtime.restricted import compile_restricted, restricted_globals

            compiled = compile_restricted(code, SCRIPT_FILENAME)
            script_globals.update(restricted_globals(restricted_imports))
        exec(compiled, script_globals)
        function = script_globals.get("execute_action")
        if callable(function):
            value = function(context)
    except BaseException as exc:  # every way a script can end is an outcome, even SystemExit
        raised = exc
    finally:
        # The script may have lowered the limit; formatting its failure needs the usual one.
        sys.setrecursionlimit(recursion_limit)

    if raised is not None:
        return None, _describe_failure(raised)
    if not callable(function):
        if "execute_action" not in script_globals:
            message = "no function execute_action: the script must define execute_action(context)"
        else:
            message = (
                f"no function execute_action: execute_action is a {type(function).__name__}, "
                "not a function"
            )
        return None, Failure("exception", message)
    return value, None


def main() -> None:
    """Set up the container's fds for the channel, run the envelope, and exit at once (with
    ``--linger`` after a clean result: once the control plane hangs up, see linger()).

    Frames go to a private duplicate of fd 1 and host-call replies come from a private
    duplicate of fd 0. Then fd 1 is pointed at fd 2 and fd 0 at /dev/null, so whatever the
    script (or a child process) prints lands in the logs and its reads of stdin see end of file.
    """
    frames_fd = os.dup(1)
    replies_fd = os.dup(0)
    os.dup2(2, 1)
    null_fd = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null_fd, 0)
    os.close(null_fd)

    frames_out = open(frames_fd, "w", encoding="utf-8", newline="\n")  # noqa: SIM115
    replies = open(replies_fd, encoding="utf-8", errors="replace", newline="\n")  # noqa: SIM115
    sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115
    sys.stdout = open(  # noqa: SIM115
        1, "w", encoding="utf-8", errors="backslashreplace", buffering=1, closefd=False
    )
    sys.stderr = open(  # noqa: SIM115
        2, "w", encoding="utf-8", errors="backslashreplace", buffering=1, closefd=False
    )

    preload(sys.argv[1:], frames_out)
    status = run(replies, frames_out)
    for stream in (sys.stdout, sys.stderr, frames_out):
        _flush_quietly(stream)
    # Tells the control plane the frames and the logs are complete, so it need not wait for
    # the exit. The end frame travels behind the result on the same stream, so a result frame
    # the script forged earlier is always followed by ours and caught as a second result.
    try:
        if status == 0:  # a result frame was written
            os.write(frames_fd, END_FRAME)
        os.write(2, LOGS_END)
    except OSError:
        pass
    if status == EXIT_OK and LINGER_FLAG in sys.argv[1:]:
        linger(replies_fd)
    # Exit without waiting for threads the script left behind or running its atexit hooks.
    os._exit(status)


def linger(replies_fd: int) -> None:
    """After a clean result, in a container: end everything the script left running, then
    stay, doing nothing, until the control plane hangs up (end of file on ``replies_fd``).

    A container's exit costs the engine far more CPU than a warm run (its shim, the engine's
    bookkeeping, the cgroup's teardown), and that work would land on the control plane's
    answer to the run. The control plane hangs up when it removes the sandbox, in a moment
    with no run in flight (sandbox/foreground.py), so the exit happens then instead.

    Nothing of the script outlives its result: every other process of the sandbox is killed
    (``kill(-1)``: everything in its own pid namespace but its init and this process), and
    the exec ends every thread it started. What is left is ``cat`` reading the hang-up, its
    output thrown away. Returns only when that fails (the caller then exits at once).
    """
    import signal

    try:  # noqa: SIM105 (contextlib is one import more for every sandbox)
        os.kill(-1, signal.SIGKILL)
    except OSError:
        pass  # nothing else was running
    try:
        null_fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(replies_fd, 0)
        os.dup2(null_fd, 1)
        os.dup2(null_fd, 2)
        os.execv(_LINGER_COMMAND, [_LINGER_COMMAND])
    except OSError:
        return


def preload(argv: list[str], frames_out: TextIO) -> None:
    """In a warm sandbox (``--preload mod1,mod2``), import those modules, then say ready.

    The control plane hands a warm sandbox to a run only after its ``{"type": "ready"}`` frame,
    so a run never waits on these imports. A module that fails to import is skipped: the
    script then gets the same ImportError a cold sandbox would give it.
    """
    # The image's entrypoint may repeat the interpreter's own arguments before ours.
    if "--preload" not in argv[:-1]:
        return
    for name in filter(None, argv[argv.index("--preload") + 1].split(",")):
        try:  # noqa: SIM105 (contextlib is one import more for every sandbox)
            __import__(name)
        except Exception:
            pass
    write_frame(frames_out, '{"type":"ready"}')


def _ok_line(value: Any, effects: list[dict[str, Any]], max_bytes: int) -> str | Failure:
    """The ok result frame, or the Failure that the return value or the frame's size causes."""
    try:
        output = dump_json(value, "return value", max_bytes)
        line = (
            '{"type":"result","status":"ok","output":'
            + output
            + ',"effects":'
            + jsoncodec.dumps(effects)
            + "}"
        )
    except (NotJSONError, JSONValueError) as exc:
        return Failure("invalid_return", str(exc))
    except SizeLimitError as exc:
        return Failure("output_limit", str(exc))
    except MemoryError:
        return Failure("memory_limit", "ran out of memory serialising the return value")
    if len(line) > max_bytes:
        return Failure(
            "output_limit",
            f"the result with its effects is {len(line)} bytes serialised; "
            f"the limit is {max_bytes} bytes",
        )
    return line


def _error_line(failure: Failure, max_bytes: int) -> str:
    """The error result frame, its texts shortened until it fits in ``max_bytes`` if it can."""
    line = ""
    for message_chars, traceback_chars in _ERROR_TEXT_CHARS:
        error = {
            "type": failure.type,
            "message": _head(failure.message, message_chars),
            "traceback": _tail(failure.traceback, traceback_chars),
        }
        frame = {"type": "result", "status": "error", "error": error, "effects": []}
        line = jsoncodec.dumps(frame)
        if len(line) <= max_bytes:
            break
    return line


def _describe_failure(exc: BaseException) -> Failure:
    trace = _script_traceback(exc)
    if isinstance(exc, MemoryError):
        return Failure("memory_limit", "MemoryError: the script ran out of memory", trace)
    if isinstance(exc, SystemExit):
        code = "" if exc.code is None else repr(exc.code)
        return Failure("exception", f"script called sys.exit({code})", trace)
    if isinstance(exc, SyntaxError):
        return Failure("exception", f"{type(exc).__name__}: line {exc.lineno}: {exc.msg}", trace)
    detail = _safe_str(exc)
    message = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    return Failure("exception", message, trace)


def _script_traceback(exc: BaseException) -> str | None:
    """The traceback of ``exc`` showing only the script's own frames (and chained causes)."""
    try:
        import traceback

        _forget_cached_source()  # whatever the script put there, the lines come from its loader
        top = traceback.TracebackException.from_exception(exc)
        pending, seen = [top], set()
        while pending:
            current = pending.pop()
            if id(current) in seen:
                continue
            seen.add(id(current))
            current.stack = traceback.StackSummary.from_list(
                [frame for frame in current.stack if frame.filename == SCRIPT_FILENAME]
            )
            chained = [current.__cause__, current.__context__, *(current.exceptions or ())]
            pending.extend(item for item in chained if item is not None)
        return "".join(top.format())
    except Exception:  # a traceback that cannot be formatted must not lose the result
        return None


def _forget_cached_source() -> None:
    """Drop linecache's entry for the script (an earlier run's, in-process, or the script's
    own), so the next traceback reads the lines from the script's ``__loader__``."""
    linecache = sys.modules.get("linecache")
    if linecache is not None:
        linecache.cache.pop(SCRIPT_FILENAME, None)


class _ScriptSource:
    """The script's ``__loader__``: linecache asks it for the source when a traceback is
    formatted, so the runtime need not import linecache for runs that never fail."""

    __slots__ = ("_code",)

    def __init__(self, code: str) -> None:
        self._code = code

    def get_source(self, name: str) -> str:
        return self._code


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # the script's __str__ may raise anything
        return f"<unprintable {type(exc).__name__}>"


def _head(text: str, max_chars: int) -> str:
    return text if len(text) <= max_chars else text[: max(max_chars - 15, 0)] + "... [truncated]"


def _tail(text: str | None, max_chars: int) -> str | None:
    if text is None or max_chars == 0:
        return None
    return text if len(text) <= max_chars else "[truncated] ..." + text[-(max_chars - 15) :]


def _flush_quietly(stream: Any) -> None:
    # A log stream the script closed or replaced with something odd must not lose the result.
    try:
        if stream is not None:
            stream.flush()
    except Exception:
        pass


if __name__ == "__main__":
    main()
