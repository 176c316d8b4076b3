"""Creates, feeds, waits on and always removes one container. Returns a raw outcome."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

import docker
import docker.errors
import requests.exceptions

from actioncage.errors import EngineUnavailableError, SandboxError
from actioncage.models import EffectiveLimits, RawOutcome
from actioncage.sandbox import envelope
from actioncage.sandbox.limits import (
    FRAME_ALLOWANCE_BYTES,
    MANAGED_LABEL,
    RUN_ID_LABEL,
    container_options,
)
from actioncage.settings import Settings

log = logging.getLogger(__name__)

# Given a host call frame, returns the stdin line that answers it.
HostCallHandler = Callable[[dict[str, Any]], bytes]

_STDOUT, _STDERR = 1, 2
# After the result frame, how long we keep reading for late logs before we stop waiting.
_AFTER_RESULT_GRACE_S = 2.0
# Host calls past the limit are refused; a sandbox that keeps asking is cut off.
_HOST_CALL_SLACK = 10
_ENGINE_ERRORS = (
    docker.errors.DockerException,
    requests.exceptions.RequestException,
    OSError,
)


class DockerRunner:
    """Runs one envelope in one new container, through the engine's HTTP API."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._api: docker.APIClient | None = None
        self._lock = threading.Lock()
        self._digest: str | None = None

    def _client(self) -> docker.APIClient:
        url = self._settings.docker_url or "unix:///var/run/docker.sock"
        # A connect to a missing unix socket leaks the socket inside docker-py; look first.
        if url.startswith("unix://") and not os.path.exists(url.removeprefix("unix://")):
            raise EngineUnavailableError(f"no container engine answers: {url} does not exist")
        with self._lock:
            if self._api is None:
                try:
                    self._api = docker.APIClient(
                        base_url=url,
                        version="auto",
                        timeout=60,
                    )
                except _ENGINE_ERRORS as exc:
                    raise EngineUnavailableError(f"no container engine answers: {exc}") from exc
            return self._api

    def close(self) -> None:
        """Close the engine connection (a later call opens a new one)."""
        with self._lock:
            if self._api is not None:
                self._api.close()
                self._api = None

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

        Raises SandboxError (EngineUnavailableError when no engine answers) when no run could
        be produced; every script failure is an outcome instead.
        """
        api = self._client()
        options = container_options(limits, self._settings)
        labels = {**self._settings.container_labels, MANAGED_LABEL: "true", RUN_ID_LABEL: run_id}
        container_id: str | None = None
        sock: Any = None
        try:
            host_config = api.create_host_config(**options.pop("host_config"))
            container_id = api.create_container(
                self._settings.sandbox_image,
                name=f"actioncage-{run_id}",
                labels=labels,
                host_config=host_config,
                **options,
            )["Id"]
            sock = api.attach_socket(
                container_id, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
            )
            api.start(container_id)
            started = time.monotonic()
            channel = _Channel(getattr(sock, "_sock", sock), limits, on_host_call)
            channel.send(envelope_line)
            channel.pump(deadline=started + limits.timeout_ms / 1000)
            # Hang up first: the engine will not finish stopping a container whose attached
            # streams nobody drains.
            _close_attach(sock)
            sock = None
            if not channel.eof or channel.result_frame is None or channel.must_kill:
                self._kill(api, container_id)
            state = self._final_state(api, container_id)
            return RawOutcome(
                result_frame=channel.result_frame,
                logs=bytes(channel.logs),
                exit_code=state.get("ExitCode"),
                oom_killed=bool(state.get("OOMKilled")),
                timed_out=channel.timed_out,
                output_exceeded=channel.output_exceeded,
                protocol_error=channel.protocol_error,
                duration_ms=int((time.monotonic() - started) * 1000),
                host_calls=channel.host_calls,
            )
        except docker.errors.ImageNotFound as exc:
            raise SandboxError(
                f"sandbox image {self._settings.sandbox_image} is missing: "
                "run `actioncage image build`"
            ) from exc
        except docker.errors.APIError as exc:
            raise SandboxError(f"container engine error: {exc.explanation or exc}") from exc
        except _ENGINE_ERRORS as exc:
            if not self.ping():
                raise EngineUnavailableError(f"no container engine answers: {exc}") from exc
            raise SandboxError(f"container engine error: {exc}") from exc
        finally:
            if sock is not None:
                _close_attach(sock)
            if container_id is not None:
                self._remove(api, container_id)

    def _kill(self, api: docker.APIClient, container_id: str) -> None:
        with contextlib.suppress(docker.errors.APIError):  # already stopped: as wanted
            api.kill(container_id)

    def _final_state(self, api: docker.APIClient, container_id: str) -> dict[str, Any]:
        api.wait(container_id, timeout=30)
        state: dict[str, Any] = api.inspect_container(container_id)["State"]
        return state

    def _remove(self, api: docker.APIClient, container_id: str) -> None:
        try:
            api.remove_container(container_id, force=True)
        except _ENGINE_ERRORS:
            # Never hide the first error; the start-up sweep removes it by label later.
            log.exception("could not remove container %s", container_id)

    def remove_leftovers(self) -> int:
        """Remove every container we manage (a previous process's leftovers). Returns count."""
        api = self._client()
        removed = 0
        try:
            # Only containers carrying our extra labels too: parallel test sessions (or
            # instances) sharing an engine must not sweep each other's live runs.
            labels = [f"{MANAGED_LABEL}=true"]
            labels += [f"{k}={v}" for k, v in self._settings.container_labels.items()]
            for c in api.containers(all=True, filters={"label": labels}):
                self._remove(api, c["Id"])
                removed += 1
        except _ENGINE_ERRORS as exc:
            raise SandboxError(f"cannot list containers: {exc}") from exc
        return removed


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

    @property
    def must_kill(self) -> bool:
        return self.timed_out or self.output_exceeded or self.protocol_error is not None

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
            self._sock.settimeout(remaining)
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
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
                room = self._log_cap - len(self.logs)
                self.logs += payload[: max(0, room)]
                if size > room:
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
        if self.result_frame is not None:
            self.protocol_error = "the sandbox wrote after its result frame"
            return
        frame = envelope.parse_frame(line)
        if frame is None:
            self.protocol_error = "the sandbox wrote a malformed frame"
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
