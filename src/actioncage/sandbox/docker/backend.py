"""sandbox/docker/: sandbox/docker/backend.py: the Docker backend: containers through the
engine's HTTP API."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

import docker
import docker.errors

from actioncage.errors import EngineUnavailableError, SandboxError
from actioncage.models import Isolation
from actioncage.sandbox.backend import (
    END,
    ExitStatus,
    Output,
    Profile,
    Sandbox,
    Stream,
    TierStatus,
    new_owner_id,
    wait_drained,
)
from actioncage.sandbox.docker.engine import EngineAPIError, EngineConnections
from actioncage.sandbox.docker.errors import UNREACHABLE, engine_errors, image_missing
from actioncage.sandbox.foreground import Foreground
from actioncage.sandbox.limits import (
    COMMAND,
    LINGER_FLAG,
    MANAGED_LABEL,
    OWNER_LABEL,
    RUN_ID_LABEL,
    container_options,
)
from actioncage.sandbox.refresh import Refreshed, Retry
from actioncage.sandbox.runner import SandboxRunner
from actioncage.settings import Settings

if TYPE_CHECKING:
    from actioncage.shared.state import LiveSet

log = logging.getLogger(__name__)

# Removal retries (the engine refuses a removal that races the container's own exit).
_REMOVE_ATTEMPTS = 5
_REMOVE_RETRY_S = 0.1
# The attach stream's chunk header: stream id, 3 bytes padding, payload size.
_HEADER = struct.Struct(">BxxxL")
_STREAMS = {1: Stream.STDOUT, 2: Stream.STDERR}
_WRITE_TIMEOUT_S = 60.0
# How long what the engine said about its runtimes is trusted (a runtime registered later,
# by scripts/ensure-gvisor.sh, shows up within this).
_RUNTIMES_TTL_S = 30.0


def bare_runner(settings: Settings) -> SandboxRunner:
    """A runner over a Docker backend without a pool, owned by a fresh id registered nowhere
    (so no sweep takes its containers for a dead owner's): for one-off processes such as
    ``actioncage run`` and the self-audit. Close it with ``runner.backend.close()``."""
    foreground = Foreground(settings.engine_work_defer_ms)
    return SandboxRunner(DockerBackend(settings, new_owner_id(), foreground), foreground)


class DockerSandbox:
    """A created, attached and started container: its multiplexed attach stream as chunks."""

    def __init__(
        self,
        backend: DockerBackend,
        container_id: str,
        sock: socket.socket,
        pending: bytes,
        profile: Profile,
    ) -> None:
        self._backend = backend
        self._container_id = container_id
        self._profile = profile
        self._sock: socket.socket | None = sock
        # Stream bytes read but not yet handed out (the attach response may carry some).
        self._buffer = bytearray(pending)
        self._eof = False
        self.ready_at = time.monotonic()

    @property
    def sandbox_id(self) -> str:
        return self._container_id

    @property
    def profile(self) -> Profile:
        return self._profile

    def write(self, data: bytes) -> None:
        sock = self._open()
        with self._backend.errors():
            # The runtime reads stdin while it waits for a reply; one that stops reading is
            # cut off rather than left to block this thread forever.
            sock.settimeout(_WRITE_TIMEOUT_S)
            sock.sendall(data)

    def read(self, timeout_s: float) -> Output | None:
        deadline = time.monotonic() + timeout_s
        while True:
            chunk = self._next_chunk()
            if chunk is not None:
                return chunk
            if self._eof:
                return END
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            sock = self._open()
            with self._backend.errors():
                sock.settimeout(remaining)
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    return None
            if not data:
                self._eof = True
            self._buffer += data

    def _next_chunk(self) -> Output | None:
        while len(self._buffer) >= _HEADER.size:
            stream, size = _HEADER.unpack_from(self._buffer)
            if len(self._buffer) < _HEADER.size + size:
                return None
            payload = bytes(self._buffer[_HEADER.size : _HEADER.size + size])
            del self._buffer[: _HEADER.size + size]
            if stream in _STREAMS:  # stdin echo (0) never comes; skip anything unknown
                return _STREAMS[stream], payload
        return None

    def alive(self) -> bool:
        if self._eof or self._sock is None:
            return False
        try:
            self._sock.settimeout(0)  # a peek that never waits
            return bool(self._sock.recv(1, socket.MSG_PEEK) != b"")
        except BlockingIOError:
            return True  # nothing to read: alive and waiting, as it should be
        except OSError:
            return False

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def kill(self) -> None:
        with self._backend.errors(), contextlib.suppress(docker.errors.APIError):
            self._backend.client().kill(self._container_id)  # already stopped: as wanted

    def wait(self, timeout_s: float) -> ExitStatus:
        with self._backend.errors():
            api = self._backend.client()
            status = api.wait(self._container_id, timeout=timeout_s).get("StatusCode")
            if status != 137:  # only SIGKILL can be the OOM killer: skip the inspect otherwise
                return ExitStatus(status)
            state: dict[str, Any] = api.inspect_container(self._container_id)["State"]
            return ExitStatus(state.get("ExitCode"), bool(state.get("OOMKilled")))

    def _open(self) -> socket.socket:
        if self._sock is None:
            raise SandboxError("the sandbox's channel is closed")
        return self._sock


class DockerBackend:
    """Starts each sandbox as a new container labelled with its owner, and removes it after.

    Implements actioncage.sandbox.backend.SandboxBackend. Removals run on a background
    thread that yields to runs in flight (``foreground``).
    """

    def __init__(
        self,
        settings: Settings,
        owner_id: str,
        foreground: Foreground,
        shared_live: LiveSet | None = None,
        runtimes_ttl_s: float = _RUNTIMES_TTL_S,
    ) -> None:
        self._settings = settings
        self.owner_id = owner_id
        # With ACTIONCAGE_REDIS_URL: live containers counted over every process (shared/),
        # so the warm pool's cap holds for all of them.
        self._shared_live = shared_live
        self._api: docker.APIClient | None = None
        self._connections: EngineConnections | None = None
        self._lock = threading.Lock()
        self._digest: str | None = None
        self._count_lock = threading.Lock()
        self._live: set[str] = set()
        self._configs: dict[str, dict[str, Any]] = {}
        # An engine that does not answer is asked again on the next call.
        self._tiers = Refreshed(
            self._ask_tiers, runtimes_ttl_s, name="actioncage-tiers", retry=Retry.NEXT_CALL
        )
        self.remover = _Remover(
            self._remove_now, settings.removal_queue_size, foreground.wait_quiet
        )

    def client(self) -> docker.APIClient:
        """docker-py's client, for the rare calls (version, wait, inspect, list)."""
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
                except UNREACHABLE as exc:
                    raise EngineUnavailableError(f"no container engine answers: {exc}") from exc
            return self._api

    def errors(self) -> contextlib.AbstractContextManager[None]:
        """Translates engine errors in the block (sandbox/docker/errors.py)."""
        return engine_errors(self._settings.sandbox_image, self.ping)

    def _engine(self) -> EngineConnections:
        """Kept-alive connections for the calls every run makes (create, attach, start,
        remove); docker-py keeps the rare ones."""
        self.client()
        assert self._connections is not None
        return self._connections

    def close(self) -> None:
        """Finish pending removals, then close the engine connection (a later call reopens)."""
        self._tiers.close()  # a refresh in flight would reopen the connection after us
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
            return bool(self.client().ping())
        except (EngineUnavailableError, *UNREACHABLE):
            return False

    def tier(self, isolation: Isolation) -> TierStatus:
        """``container`` (the engine's runc, or ACTIONCAGE_DOCKER_RUNTIME) and ``gvisor`` (the
        engine's runtime ACTIONCAGE_GVISOR_RUNTIME, runsc) are this backend's tiers; each is
        available when the engine answers and knows its runtime. Never raises.

        Only the first answer is waited for: after that the last one is returned at once,
        and when it is older than ``runtimes_ttl_s`` (30 s) a background thread asks the
        engine again (``docker info``, and ``runsc --version``), so no run pays for that on
        its path."""
        if isolation is Isolation.JAIL:
            return TierStatus(isolation, False, reason="the jail is not a Docker tier")
        try:
            return self._tiers.get()[isolation]
        except EngineUnavailableError as exc:  # nothing remembered: asked again next call
            return TierStatus(isolation, False, reason=str(exc))

    def _ask_tiers(self) -> dict[Isolation, TierStatus]:
        """Ask the engine about its runtimes now: each Docker tier's status.
        Raises EngineUnavailableError when the engine does not answer."""
        try:
            info: dict[str, Any] = self.client().info()
        except EngineUnavailableError:
            raise  # its message already says so
        except (SandboxError, docker.errors.APIError, *UNREACHABLE) as exc:
            raise EngineUnavailableError(f"no container engine answers: {exc}") from exc
        return {
            tier: _runtime_status(tier, info, name)
            for tier, name in (
                (Isolation.CONTAINER, self._settings.docker_runtime or "runc"),
                (Isolation.GVISOR, self._settings.gvisor_runtime),
            )
        }

    def image_digest(self) -> str:
        """The sandbox image's id. Raises SandboxError when the image is missing."""
        if self._digest is None:
            try:
                self._digest = str(self.client().inspect_image(self._settings.sandbox_image)["Id"])
            except docker.errors.ImageNotFound as exc:
                raise image_missing(self._settings.sandbox_image) from exc
            except UNREACHABLE as exc:
                raise EngineUnavailableError(f"no container engine answers: {exc}") from exc
        return self._digest

    def current_image_digest(self) -> str:
        """The sandbox image's id as the engine has it now (image_digest() keeps the first
        answer): the jail re-exports its root filesystem when this changes. Raises
        SandboxError when the image is missing."""
        try:
            return str(self.client().inspect_image(self._settings.sandbox_image)["Id"])
        except docker.errors.ImageNotFound as exc:
            raise image_missing(self._settings.sandbox_image) from exc
        except UNREACHABLE as exc:
            raise EngineUnavailableError(f"no container engine answers: {exc}") from exc

    def export_rootfs(self, dest: str) -> None:
        """Write the sandbox image's root filesystem into the empty directory ``dest``, for
        the jail tier: a container is created (never started), exported through ``tar`` and
        removed. Device nodes are left out (the jail mounts its own /dev).

        Raises SandboxError (EngineUnavailableError when no engine answers).
        """
        labels = {
            **self._settings.container_labels,
            MANAGED_LABEL: "true",
            RUN_ID_LABEL: "rootfs-export",
            OWNER_LABEL: self.owner_id,
        }
        with self.errors():
            api = self.client()
            container_id = str(
                api.create_container(self._settings.sandbox_image, labels=labels)["Id"]
            )
            try:
                tar = subprocess.Popen(
                    ["tar", "-x", "-C", dest, "--exclude=./dev/*", "--exclude=dev/*"],
                    stdin=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )
                assert tar.stdin is not None
                # The raw response, closed here (docker-py's export() generator leaves it
                # to the garbage collector).
                response = api._get(api._url("/containers/{0}/export", container_id), stream=True)
                try:
                    api._raise_for_status(response)
                    for chunk in response.iter_content(1 << 20):
                        tar.stdin.write(chunk)
                finally:
                    response.close()
                    tar.stdin.close()
                    problem = b""
                    if tar.stderr is not None:
                        problem = tar.stderr.read()
                        tar.stderr.close()
                    code = tar.wait()
                if code != 0:
                    raise SandboxError(
                        f"could not unpack the sandbox image into {dest}: "
                        f"{problem.decode(errors='replace').strip()[:500]}"
                    )
            finally:
                self._remove_now(container_id)

    def start(self, run_id: str, profile: Profile) -> DockerSandbox:
        """Create, attach to and start one container named ``actioncage-<run_id>``; the caller
        must discard() it. A warm profile's container runs the runtime with ``--preload``.

        Raises SandboxError (EngineUnavailableError when no engine answers).
        """
        engine = self._engine()
        body = dict(self._config(container_options(profile.limits, self._settings)))
        if profile.preload is not None:
            body["Cmd"] = [*COMMAND, LINGER_FLAG, "--preload", profile.preload]
        body["Labels"] = {
            **self._settings.container_labels,
            MANAGED_LABEL: "true",
            RUN_ID_LABEL: run_id,
            OWNER_LABEL: self.owner_id,
        }
        container_id: str | None = None
        sock: socket.socket | None = None
        try:
            with self.errors():
                created = engine.call(
                    "POST", "/containers/create", {"name": f"actioncage-{run_id}"}, body
                )
                container_id = str(created["Id"])
                self._live_add(container_id)
                sock, pending = engine.attach(container_id)
                engine.call("POST", f"/containers/{container_id}/start")
            return DockerSandbox(self, container_id, sock, pending, profile)
        except BaseException:
            if sock is not None:
                sock.close()
            if container_id is not None:
                self.remover.remove(container_id)
            raise

    def discard(self, sandbox: Sandbox) -> None:
        """Have a sandbox that will run nothing more removed, and hang up on it just before
        (its runtime, lingering after a clean result, exits at the hang-up: the container's
        exit, costly to the engine, waits for the removal's quiet moment too)."""
        self.remover.remove(sandbox.sandbox_id, hang_up=sandbox.close)

    def sweep(self, dead_owners: Collection[str], unowned_older_than_s: float) -> int:
        """Remove the containers that dead owners left (and unowned ones past the age), among
        those carrying our extra labels too: parallel test sessions (or deployments) sharing
        an engine never sweep each other's. Never one of this process's own. Returns count.

        Raises SandboxError (EngineUnavailableError when no engine answers).
        """
        own = [f"{k}={v}" for k, v in self._settings.container_labels.items()]
        filters = {"label": [f"{MANAGED_LABEL}=true", *own]}
        with self.errors():
            listed = self.client().containers(all=True, filters=filters)
        removed = 0
        now = time.time()
        for c in listed:
            owner = (c.get("Labels") or {}).get(OWNER_LABEL)
            if owner is None:
                if now - float(c.get("Created") or now) < unowned_older_than_s:
                    continue
            elif owner == self.owner_id or owner not in dead_owners:
                continue
            self._remove_now(c["Id"])
            removed += 1
        return removed

    @property
    def live_count(self) -> int:
        """Containers not removed yet: this process's, or every process's when shared."""
        if self._shared_live is not None:
            return self._shared_live.count()
        with self._count_lock:
            return len(self._live)

    @property
    def pending_removals(self) -> int:
        return self.remover.pending

    def drain(self, timeout_s: float = 30.0) -> bool:
        """Wait until every queued removal is done; False when ``timeout_s`` passed first."""
        return self.remover.drain(timeout_s)

    def _config(self, options: dict[str, Any]) -> dict[str, Any]:
        """The create request's body for these container options (labels aside), built and
        checked against the API version by docker-py once per distinct options."""
        key = json.dumps(options, sort_keys=True, default=str)
        with self._count_lock:
            cached = self._configs.get(key)
        if cached is None:
            api = self.client()
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
        except (SandboxError, *UNREACHABLE):
            # Never hide the first error; a later sweep removes it by its owner label.
            log.exception("could not remove container %s", container_id)
        finally:
            self._live_discard(container_id)

    def _live_add(self, container_id: str) -> None:
        with self._count_lock:
            self._live.add(container_id)
        if self._shared_live is not None:
            self._shared_live.add(container_id)

    def _live_discard(self, container_id: str) -> None:
        with self._count_lock:
            self._live.discard(container_id)
        if self._shared_live is not None:
            self._shared_live.discard(container_id)


def _runtime_status(isolation: Isolation, info: dict[str, Any], name: str) -> TierStatus:
    """A Docker tier's status from the engine's info: its runtime ``name`` registered (with
    its flags), and the runtime's version (the engine reports runc's; another runtime's
    binary is asked, when it is on this machine)."""
    runtime = (info.get("Runtimes") or {}).get(name)
    if runtime is None:
        hint = " (scripts/ensure-gvisor.sh registers it)" if isolation is Isolation.GVISOR else ""
        return TierStatus(
            isolation, False, reason=f"the container engine has no runtime {name!r}{hint}"
        )
    flags = (f"--runtime={name}", *runtime.get("runtimeArgs", ()))
    version: str | None = None
    if name == "runc":
        version = "runc " + str((info.get("RuncCommit") or {}).get("ID") or "unknown")
    else:
        path = str(runtime.get("path") or name)
        try:
            out = subprocess.run(
                [path, "--version"], capture_output=True, text=True, timeout=10, check=False
            ).stdout
            words = out.split()
            version = f"{name} {words[2]}" if words[1:2] == ["version"] else None
        except (OSError, subprocess.SubprocessError, IndexError):
            version = None  # the engine may run on another machine: its version is unknown
    return TierStatus(isolation, True, runtime_version=version, flags=flags)


# A queued removal: the container, when it was queued (monotonic), what hangs up on it.
_Removal = tuple[str, float, Callable[[], None] | None]


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
        self._queue: queue.Queue[_Removal | None] = queue.Queue(maxsize=max(1, maxsize))
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False

    def remove(self, container_id: str, hang_up: Callable[[], None] | None = None) -> None:
        """Have the container removed soon (now, on this thread, when the queue is full),
        calling ``hang_up`` (which must not raise) just before."""
        with self._lock:
            if not self._closed and self._thread is None:
                self._thread = threading.Thread(
                    target=self._work, name="actioncage-remover", daemon=True
                )
                self._thread.start()
            closed = self._closed
        if not closed:
            try:
                self._queue.put_nowait((container_id, time.monotonic(), hang_up))
                return
            except queue.Full:
                pass
        if hang_up is not None:
            hang_up()
        self._remove(container_id)

    @property
    def pending(self) -> int:
        return self._queue.unfinished_tasks

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until every queued removal is done; False when ``timeout`` passed first."""
        return wait_drained(self._queue, timeout)

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
                container_id, queued_at, hang_up = item
                with self._lock:
                    closing = self._closed
                if not closing:
                    self._wait_quiet(queued_at)
                if hang_up is not None:
                    hang_up()
                self._remove(container_id)
            except Exception:  # the thread must outlive any one failure
                log.exception("removal of %s failed", item)
            finally:
                self._queue.task_done()
