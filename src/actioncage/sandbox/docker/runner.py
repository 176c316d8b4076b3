"""Creates, feeds, waits on and always removes one container. Returns a raw outcome."""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import queue
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import docker
import docker.errors
import requests.exceptions

from actioncage.errors import EngineUnavailableError, SandboxError
from actioncage.models import EffectiveLimits, RawOutcome
from actioncage.sandbox import envelope
from actioncage.sandbox.docker.engine import EngineAPIError, EngineConnections
from actioncage.sandbox.foreground import Foreground
from actioncage.sandbox.limits import (
    FRAME_ALLOWANCE_BYTES,
    MANAGED_LABEL,
    RUN_ID_LABEL,
    container_options,
)
from actioncage.settings import Settings

if TYPE_CHECKING:
    from actioncage.sandbox.pool import WarmPool
    from actioncage.shared.state import LiveSet

log = logging.getLogger(__name__)

# Given a host call frame, returns the stdin line that answers it.
HostCallHandler = Callable[[dict[str, Any]], bytes]

_STDOUT, _STDERR = 1, 2
# After the result frame, how long we keep reading for late logs before we stop waiting.
_AFTER_RESULT_GRACE_S = 2.0
# Removal retries (the engine refuses a removal that races the container's own exit).
_REMOVE_ATTEMPTS = 5
_REMOVE_RETRY_S = 0.1
# The runtime flushes its logs before it writes the result frame, but stdout and stderr are
# separate pipes, so their bytes may reach us in either order: after the frame, logs that
# come within this quiet window are kept, and the run does not wait for the process to exit.
_AFTER_RESULT_IDLE_S = 0.01
# What the runtime writes to stderr after its last log byte (docs/protocol.md).
LOGS_END = b"\x00actioncage:logs-end\x00"
# Host calls past the limit are refused; a sandbox that keeps asking is cut off.
_HOST_CALL_SLACK = 10
_ENGINE_ERRORS = (
    docker.errors.DockerException,
    requests.exceptions.RequestException,
    http.client.HTTPException,
    OSError,
)


@dataclass
class StartedContainer:
    """A created, attached and started container that has not been sent an envelope."""

    container_id: str
    sock: Any
    # Stream bytes already read past the ready frame (a warm container's), not yet demuxed.
    pending: bytes = b""
    ready_at: float = field(default_factory=time.monotonic)


class DockerRunner:
    """Runs one envelope in one new container, through the engine's HTTP API."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._api: docker.APIClient | None = None
        self._connections: EngineConnections | None = None
        self._lock = threading.Lock()
        self._digest: str | None = None
        self._count_lock = threading.Lock()
        self._live: set[str] = set()
        self._configs: dict[str, dict[str, Any]] = {}
        self.cold_starts = 0
        self.warm_starts = 0
        # Set by the app when a warm pool is configured; run() then takes from it first.
        self.pool: WarmPool | None = None
        # Set by components.build with ACTIONCAGE_REDIS_URL: live containers counted over
        # every process (shared/), so the warm pool's cap holds for all of them.
        self.shared_live: LiveSet | None = None
        # Runs in flight: removals and warm-pool refills wait for a quiet moment (bounded).
        self.foreground = Foreground(settings.engine_work_defer_ms)
        self.remover = _Remover(
            self._remove_now, settings.removal_queue_size, self.foreground.wait_quiet
        )

    def _client(self) -> docker.APIClient:
        url = self._settings.docker_url or "unix:///var/run/docker.sock"
        # A connect to a missing unix socket leaks the socket inside docker-py; look first.
        if url.startswith("unix://") and not os.path.exists(url.removeprefix("unix://")):
            raise EngineUnavailableError(f"no container engine answers: {url} does not exist")
        with self._lock:
            if self._api is None:
                try:
                    api = docker.APIClient(base_url=url, version="auto", timeout=60)
                    api.trust_env = False  # no proxy or netrc applies to the engine
                    self._connections = EngineConnections(url, api.api_version, timeout=60)
                    self._api = api
                except _ENGINE_ERRORS as exc:
                    raise EngineUnavailableError(f"no container engine answers: {exc}") from exc
            return self._api

    def _engine(self) -> EngineConnections:
        """Kept-alive connections for the calls every run makes (create, attach, start,
        remove); docker-py keeps the rare ones."""
        self._client()
        assert self._connections is not None
        return self._connections

    def close(self) -> None:
        """Finish pending removals, then close the engine connection (a later call reopens)."""
        self.remover.close()
        with self._lock:
            if self._api is not None:
                self._api.close()
                self._api = None
            if self._connections is not None:
                self._connections.close()
                self._connections = None

    def ping(self) -> bool:
        """True when the engine answers."""
        try:
            return bool(self._client().ping())
        except (EngineUnavailableError, *_ENGINE_ERRORS):
            return False

    def image_digest(self) -> str:
        """The sandbox image's id. Raises SandboxError when the image is missing."""
        if self._digest is None:
            try:
                self._digest = str(self._client().inspect_image(self._settings.sandbox_image)["Id"])
            except docker.errors.ImageNotFound as exc:
                raise SandboxError(
                    f"sandbox image {self._settings.sandbox_image} is missing: "
                    "run `actioncage image build`"
                ) from exc
            except _ENGINE_ERRORS as exc:
                raise EngineUnavailableError(f"no container engine answers: {exc}") from exc
        return self._digest

    def run(
        self,
        run_id: str,
        envelope_line: bytes,
        limits: EffectiveLimits,
        on_host_call: HostCallHandler,
    ) -> RawOutcome:
        """Run one envelope to completion in a new container, then remove it.

        The container is a warm one from the pool when one is ready for these limits (it has
        run nothing before and is removed after this run), else a cold one started now. The
        deadline counts from when the envelope is sent.

        Raises SandboxError (EngineUnavailableError when no engine answers) when no run could
        be produced; every script failure is an outcome instead.
        """
        options = container_options(limits, self._settings)
        # A run with egress mounts its own proxy socket: its options are unique to it, so it
        # never matches (or seeds) a pool profile.
        poolable = self.pool is not None and limits.egress_dir is None
        started = self.pool.take(options) if poolable and self.pool is not None else None
        if started is None:
            with self._count_lock:
                self.cold_starts += 1
            started = self.start_container(options, name=f"actioncage-{run_id}", label_value=run_id)
        else:
            with self._count_lock:
                self.warm_starts += 1
        return self.drive(started, envelope_line, limits, on_host_call)

    def start_container(
        self,
        options: dict[str, Any],
        name: str,
        label_value: str,
        command: list[str] | None = None,
        labels: dict[str, str] | None = None,
    ) -> StartedContainer:
        """Create, attach to and start one container; the caller must drive() or discard() it.

        Raises SandboxError (EngineUnavailableError when no engine answers).
        """
        engine = self._engine()
        body = dict(self._config(options))
        if command is not None:
            body["Cmd"] = list(command)
        body["Labels"] = {
            **self._settings.container_labels,
            **(labels or {}),
            MANAGED_LABEL: "true",
            RUN_ID_LABEL: label_value,
        }
        container_id: str | None = None
        sock: Any = None
        try:
            try:
                created = engine.call("POST", "/containers/create", {"name": name}, body)
            except EngineAPIError as exc:
                if exc.status == 404 and "image" in exc.engine_message.lower():
                    raise SandboxError(
                        f"sandbox image {self._settings.sandbox_image} is missing: "
                        "run `actioncage image build`"
                    ) from exc
                raise
            container_id = str(created["Id"])
            self._live_add(container_id)
            sock, pending = engine.attach(container_id)
            engine.call("POST", f"/containers/{container_id}/start")
            return StartedContainer(container_id, sock, pending)
        except BaseException as exc:
            if sock is not None:
                _close_attach(sock)
            if container_id is not None:
                self.remover.remove(container_id)
            translated = self._translate(exc)
            if translated is exc:
                raise
            raise translated from exc

    def drive(
        self,
        started: StartedContainer,
        envelope_line: bytes,
        limits: EffectiveLimits,
        on_host_call: HostCallHandler,
    ) -> RawOutcome:
        """Send the envelope to a started container, read it to the end, then discard it."""
        api = self._client()
        container_id, sock = started.container_id, started.sock
        try:
            begun = time.monotonic()
            channel = _Channel(getattr(sock, "_sock", sock), limits, on_host_call)
            channel.take_pending(started.pending)
            channel.send(envelope_line)
            channel.pump(deadline=begun + limits.timeout_ms / 1000)
            # Hang up first: the engine will not finish stopping a container whose attached
            # streams nobody drains.
            _close_attach(sock)
            sock = None
            exit_code: int | None = None
            oom_killed = False
            if channel.result_frame is None or channel.must_kill:
                # Only a run without a clean result needs the exit status; one with a result
                # is killed and removed in the background, unseen.
                if not channel.eof or channel.must_kill:
                    self._kill(api, container_id)
                exit_code, oom_killed = self._final_state(api, container_id)
            return RawOutcome(
                result_frame=channel.result_frame,
                logs=bytes(channel.logs),
                exit_code=exit_code,
                oom_killed=oom_killed,
                timed_out=channel.timed_out,
                output_exceeded=channel.output_exceeded,
                protocol_error=channel.protocol_error,
                duration_ms=int((time.monotonic() - begun) * 1000),
                host_calls=channel.host_calls,
            )
        except BaseException as exc:
            translated = self._translate(exc)
            if translated is exc:
                raise
            raise translated from exc
        finally:
            if sock is not None:
                _close_attach(sock)
            self.remover.remove(container_id)

    def await_ready(self, started: StartedContainer, timeout_s: float) -> None:
        """Read a warm container's stream up to its ready frame.

        Raises SandboxError when anything else comes first, the stream ends, or
        ``timeout_s`` passes.
        """
        raw = getattr(started.sock, "_sock", started.sock)
        deadline = time.monotonic() + timeout_s
        # Stream bytes may have come with the attach response already.
        buffer, stdout = bytearray(started.pending), bytearray()
        while True:
            while len(buffer) >= 8:
                stream, size = struct.unpack(">BxxxL", buffer[:8])
                if len(buffer) < 8 + size:
                    break
                if stream == _STDOUT:
                    stdout += buffer[8 : 8 + size]
                del buffer[: 8 + size]
                if b"\n" in stdout:
                    line, _, rest = bytes(stdout).partition(b"\n")
                    if rest or line.strip() != b'{"type":"ready"}':
                        raise SandboxError("a warm sandbox wrote something other than ready")
                    started.pending = bytes(buffer)
                    started.ready_at = time.monotonic()
                    raw.settimeout(None)
                    return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SandboxError(f"a warm sandbox was not ready within {timeout_s} s")
            raw.settimeout(remaining)
            try:
                data = raw.recv(65536)
            except TimeoutError:
                continue
            except OSError as exc:
                raise SandboxError(f"a warm sandbox's stream failed: {exc}") from exc
            if not data:
                raise SandboxError("a warm sandbox ended before it was ready")
            buffer += data

    def is_alive(self, started: StartedContainer) -> bool:
        """False when a warm container's stream has already ended (it died while idle)."""
        raw = getattr(started.sock, "_sock", started.sock)
        try:
            return bool(raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b"")
        except BlockingIOError:
            return True  # nothing to read: alive and waiting, as it should be
        except OSError:
            return False

    def discard(self, started: StartedContainer) -> None:
        """Hang up on a started container that will run nothing, and have it removed."""
        with contextlib.suppress(OSError):
            _close_attach(started.sock)
        self.remover.remove(started.container_id)

    def _translate(self, exc: BaseException) -> BaseException:
        if isinstance(exc, SandboxError) or not isinstance(exc, Exception):
            return exc
        if isinstance(exc, docker.errors.ImageNotFound):
            return SandboxError(
                f"sandbox image {self._settings.sandbox_image} is missing: "
                "run `actioncage image build`"
            )
        if isinstance(exc, docker.errors.APIError):
            return SandboxError(f"container engine error: {exc.explanation or exc}")
        if isinstance(exc, _ENGINE_ERRORS):
            if not self.ping():
                return EngineUnavailableError(f"no container engine answers: {exc}")
            return SandboxError(f"container engine error: {exc}")
        return exc

    def _config(self, options: dict[str, Any]) -> dict[str, Any]:
        """The create request's body for these container options (labels aside), built and
        checked against the API version by docker-py once per distinct options."""
        key = json.dumps(options, sort_keys=True, default=str)
        with self._count_lock:
            cached = self._configs.get(key)
        if cached is None:
            api = self._client()
            options = dict(options)
            host_config = api.create_host_config(**options.pop("host_config"))
            cached = dict(
                api.create_container_config(
                    self._settings.sandbox_image, host_config=host_config, **options
                )
            )
            with self._count_lock:
                if len(self._configs) > 64:
                    self._configs.clear()
                self._configs[key] = cached
        return cached

    def _kill(self, api: docker.APIClient, container_id: str) -> None:
        with contextlib.suppress(docker.errors.APIError):  # already stopped: as wanted
            api.kill(container_id)

    def _final_state(self, api: docker.APIClient, container_id: str) -> tuple[int | None, bool]:
        """The exit code, and whether the kernel's OOM killer ended the container."""
        status = api.wait(container_id, timeout=30).get("StatusCode")
        if status != 137:  # only SIGKILL can be the OOM killer: skip the inspect otherwise
            return status, False
        state: dict[str, Any] = api.inspect_container(container_id)["State"]
        return state.get("ExitCode"), bool(state.get("OOMKilled"))

    def _remove_now(self, container_id: str) -> None:
        try:
            for attempt in range(_REMOVE_ATTEMPTS):
                try:
                    self._engine().call("DELETE", f"/containers/{container_id}", {"force": 1})
                    return
                except EngineAPIError as exc:
                    if exc.status == 404:  # already gone
                        return
                    if "already in progress" in str(exc):  # someone else is removing it
                        return
                    # The engine can refuse while the container is mid-exit ("Could not kill
                    # running container ... is not running"); a moment later it succeeds.
                    if attempt == _REMOVE_ATTEMPTS - 1:
                        raise
                    time.sleep(_REMOVE_RETRY_S * (2**attempt))
        except (SandboxError, *_ENGINE_ERRORS):
            # Never hide the first error; the start-up sweep removes it by label later.
            log.exception("could not remove container %s", container_id)
        finally:
            self._live_discard(container_id)

    def _live_add(self, container_id: str) -> None:
        with self._count_lock:
            self._live.add(container_id)
        if self.shared_live is not None:
            self.shared_live.add(container_id)

    def _live_discard(self, container_id: str) -> None:
        with self._count_lock:
            self._live.discard(container_id)
        if self.shared_live is not None:
            self.shared_live.discard(container_id)

    @property
    def live_containers(self) -> int:
        """Containers not removed yet: this process's, or every process's when shared."""
        if self.shared_live is not None:
            return self.shared_live.count()
        with self._count_lock:
            return len(self._live)

    def remove_leftovers(self) -> int:
        """Remove every container we manage (a previous process's leftovers). Returns count."""
        api = self._client()
        removed = 0
        try:
            # Only containers carrying our extra labels too: parallel test sessions (or
            # instances) sharing an engine must not sweep each other's live runs.
            own = [f"{k}={v}" for k, v in self._settings.container_labels.items()]
            filters = {"label": [f"{MANAGED_LABEL}=true", *own]}
            for c in api.containers(all=True, filters=filters):
                self._remove_now(c["Id"])
                removed += 1
        except _ENGINE_ERRORS as exc:
            raise SandboxError(f"cannot list containers: {exc}") from exc
        return removed


class _Remover:
    """Removes containers on a background thread, off the request path.

    Each removal first waits for a quiet moment (``wait_quiet(queued_at)``, bounded) so it
    does not take the engine's CPU from a run in flight. The queue is bounded: when it is
    full, the caller removes the container itself, so a removal is never dropped. close()
    finishes every queued removal, without waiting, before it returns.
    """

    def __init__(
        self, remove: Callable[[str], None], maxsize: int, wait_quiet: Callable[[float], object]
    ) -> None:
        self._remove = remove
        self._wait_quiet = wait_quiet
        self._queue: queue.Queue[tuple[str, float] | None] = queue.Queue(maxsize=max(1, maxsize))
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False

    def remove(self, container_id: str) -> None:
        """Have the container removed soon (now, on this thread, when the queue is full)."""
        with self._lock:
            if not self._closed and self._thread is None:
                self._thread = threading.Thread(
                    target=self._work, name="actioncage-remover", daemon=True
                )
                self._thread.start()
            closed = self._closed
        if closed:
            self._remove(container_id)
            return
        try:
            self._queue.put_nowait((container_id, time.monotonic()))
        except queue.Full:
            self._remove(container_id)

    @property
    def pending(self) -> int:
        return self._queue.unfinished_tasks

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until every queued removal is done; False when ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._queue.all_tasks_done.wait(remaining)
        return True

    def close(self) -> None:
        """Finish every queued removal and stop the thread."""
        with self._lock:
            self._closed = True
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                container_id, queued_at = item
                with self._lock:
                    closing = self._closed
                if not closing:
                    self._wait_quiet(queued_at)
                self._remove(container_id)
            except Exception:  # the thread must outlive any one failure
                log.exception("removal of %s failed", item)
            finally:
                self._queue.task_done()


def _close_attach(sock: Any) -> None:
    # docker-py hands back a SocketIO over the hijacked connection; close all three layers.
    raw, response = getattr(sock, "_sock", None), getattr(sock, "_response", None)
    if response is not None:
        response.close()
    sock.close()
    if raw is not None:
        raw.close()


class _Channel:
    """Reads the multiplexed attach stream: frames from stdout, logs from stderr."""

    def __init__(
        self, sock: socket.socket, limits: EffectiveLimits, on_host_call: HostCallHandler
    ) -> None:
        self._sock = sock
        self._on_host_call = on_host_call
        # Logs and the result frame share the output cap; each frame line is capped on its
        # own, and host calls are bounded in number, so nothing read here is unbounded.
        self._cap = limits.max_output_bytes + FRAME_ALLOWANCE_BYTES
        self._log_cap = limits.max_output_bytes
        self._max_host_calls = limits.max_host_calls
        self._pending = bytearray()  # undemuxed bytes
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

    def take_pending(self, data: bytes) -> None:
        """Bytes read from the stream before this channel existed."""
        if data:
            self._pending += data
            self._demux()

    def send(self, data: bytes) -> None:
        self._sock.sendall(data)

    def pump(self, deadline: float) -> None:
        """Read until the stream ends, the deadline passes or something must stop the run."""
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
            self._sock.settimeout(remaining)
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                if self.end_seen:
                    return  # every frame is in and the logs went quiet: no need to see the exit
                continue
            if not data:
                self.eof = True
                return
            self._pending += data
            self._demux()
            if self.result_frame is not None:
                deadline = min(deadline, time.monotonic() + _AFTER_RESULT_GRACE_S)

    def _demux(self) -> None:
        while len(self._pending) >= 8 and not self.must_kill:
            stream, size = struct.unpack(">BxxxL", self._pending[:8])
            if len(self._pending) < 8 + size:
                return
            payload = bytes(self._pending[8 : 8 + size])
            del self._pending[: 8 + size]
            if stream == _STDERR:
                room = self._log_cap + len(LOGS_END) - len(self.logs)
                self.logs += payload[: max(0, room)]
                if self.logs.endswith(LOGS_END):
                    del self.logs[-len(LOGS_END) :]
                    self.logs_done = True
                elif len(self.logs) > self._log_cap or size > room:
                    del self.logs[self._log_cap :]
                    self.output_exceeded = True
            elif stream == _STDOUT:
                self._take_stdout(payload)

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
        self._sock.sendall(reply)
