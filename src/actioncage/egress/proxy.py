"""egress/: The egress proxy: one per run with egress, on a unix socket mounted into the
container.

The container still has no network (``network_mode=none``); the only way out is this socket.
It speaks HTTP proxying: ``CONNECT host:port`` (HTTPS and any TCP) and absolute-form plain
HTTP requests. For each it asks the EgressGuard (allowlist, then resolve and check every
address), connects to the address the guard returned, and records the attempt with its
byte counts. Everything else is refused with a 4xx and recorded too.

``admit`` holds every connection until it says whether the run may reach out at all (an
executor worker's run whose start claim is not answered yet: dispatch/worker.py); a no
refuses it before its request is read, so nothing of it is resolved or sent anywhere.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

from actioncage.egress.guard import EgressGuard, HostPattern
from actioncage.errors import EgressRefusedError

SOCKET_NAME = "proxy.sock"
_MAX_HEAD_BYTES = 16 * 1024
_MAX_CONNECTIONS = 32
_MAX_ATTEMPTS_RECORDED = 200
_CONNECT_TIMEOUT_S = 5.0
_IDLE_TIMEOUT_S = 30.0


@dataclass
class EgressAttempt:
    """One connection the run asked for."""

    host: str
    port: int
    allowed: bool
    reason: str | None = None
    address: str | None = None
    bytes_out: int = 0
    bytes_in: int = 0

    def as_record(self) -> dict[str, Any]:
        record = asdict(self)
        return {
            "host": record["host"],
            "port": record["port"],
            "allowed": record["allowed"],
            "reason": record["reason"],
            "address": record["address"],
            "bytesOut": record["bytes_out"],
            "bytesIn": record["bytes_in"],
        }


class EgressProxy:
    """A run's proxy. ``start()`` returns the directory to mount; ``close()`` the attempts."""

    def __init__(
        self,
        patterns: Iterable[HostPattern],
        guard: EgressGuard,
        parent_dir: str | None = None,
        refuse_ports_on_self: Iterable[int] = (),
        admit: Callable[[], bool] | None = None,
    ) -> None:
        """``admit``: asked (and waited for) before each connection is served; False refuses
        it (None: every connection is served)."""
        self._admit = admit
        self._patterns = tuple(patterns)
        self._guard = guard
        self._parent_dir = parent_dir
        self._refuse_ports = frozenset(refuse_ports_on_self)
        self._lock = threading.Lock()
        self._attempts: list[EgressAttempt] = []
        self._dropped = 0
        self._open: set[socket.socket] = set()
        self._closed = False
        self._dir: str | None = None
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> str:
        """Listen on a fresh socket in a private directory; returns the directory."""
        if self._parent_dir:
            os.makedirs(self._parent_dir, exist_ok=True)
        # Absolute: the engine bind-mounts it by path.
        self._dir = os.path.abspath(
            tempfile.mkdtemp(prefix="actioncage-egress-", dir=self._parent_dir)
        )
        # The sandbox user (another uid) must reach the socket: traverse the dir, write the
        # socket. The directory's random name keeps other runs from guessing it.
        os.chmod(self._dir, 0o755)
        path = os.path.join(self._dir, SOCKET_NAME)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        os.chmod(path, 0o666)
        listener.listen(16)
        self._listener = listener
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()
        return self._dir

    def close(self) -> tuple[dict[str, Any], ...]:
        """Stop serving, cut every open connection, remove the directory.

        Returns the attempts as audit records (the last one notes any that were not kept).
        """
        with self._lock:
            self._closed = True
            sockets = list(self._open)
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
        # Shut down, not close: each serving thread wakes up, sees end of stream and closes
        # its own sockets, so no thread is left selecting on a closed descriptor.
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
        with self._lock:
            records = [a.as_record() for a in self._attempts]
            if self._dropped:
                records.append({"dropped": self._dropped})
        return tuple(records)

    # --- serving ------------------------------------------------------------------------------

    def _track(self, s: socket.socket) -> bool:
        with self._lock:
            if self._closed or len(self._open) >= 2 * _MAX_CONNECTIONS:
                return False
            self._open.add(s)
            return True

    def _untrack(self, s: socket.socket) -> None:
        with self._lock:
            self._open.discard(s)
        s.close()

    def _record(self, attempt: EgressAttempt) -> None:
        with self._lock:
            if len(self._attempts) < _MAX_ATTEMPTS_RECORDED:
                self._attempts.append(attempt)
            else:
                self._dropped += 1

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            if not self._track(client):
                client.close()
                continue
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        try:
            if self._admit is not None and not self._admit():
                _reply(client, 403, "egress refused: this run may not reach out")
                return
            client.settimeout(_IDLE_TIMEOUT_S)
            head, rest = _read_head(client)
            if head is None:
                _reply(client, 400, "bad request: no HTTP request head")
                return
            method, target, version, headers = _parse_head(head)
            connect = method == "CONNECT"
            host, port, path = _target(method, target)
            if host is None:
                self._record(EgressAttempt(target[:200], 0, False, "not a proxy request"))
                _reply(client, 400, "send CONNECT host:port or an absolute http:// URL")
                return
            attempt = EgressAttempt(host, port, False)
            self._record(attempt)
            try:
                address = self._guard.resolve(host, port, self._patterns)
                if port in self._refuse_ports and (address.is_loopback or address.is_unspecified):
                    raise EgressRefusedError(f"{host}:{port} is the control plane itself")
            except EgressRefusedError as exc:
                attempt.reason = str(exc)
                _reply(client, 403, f"egress refused: {exc}")
                return
            attempt.allowed, attempt.address = True, str(address)
            try:
                upstream = socket.create_connection((str(address), port), _CONNECT_TIMEOUT_S)
            except OSError as exc:
                attempt.reason = f"connect failed: {exc}"
                _reply(client, 502, f"cannot connect to {host}:{port}")
                return
            if not self._track(upstream):
                return
            upstream.settimeout(_IDLE_TIMEOUT_S)
            if connect:
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                first = rest
            else:
                first = _origin_request(method, path, version, headers) + rest
            if first:
                upstream.sendall(first)
                attempt.bytes_out += len(first)
            _pipe(client, upstream, attempt)
        except (OSError, ValueError):
            pass  # the run ended or either side hung up
        finally:
            if upstream is not None:
                self._untrack(upstream)
            self._untrack(client)


def _read_head(client: socket.socket) -> tuple[bytes | None, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > _MAX_HEAD_BYTES:
            return None, b""
        chunk = client.recv(4096)
        if not chunk:
            return None, b""
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _parse_head(head: bytes) -> tuple[str, str, str, list[tuple[str, str]]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        return "", "", "", []
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers.append((name.strip(), value.strip()))
    return parts[0].upper(), parts[1], parts[2], headers


def _target(method: str, target: str) -> tuple[str | None, int, str]:
    """(host, port, origin-form path) of a proxy request; host None when it is not one."""
    if method == "CONNECT":
        host, sep, port = target.rpartition(":")
        if not sep or not port.isdigit():
            return None, 0, ""
        return host.strip("[]").lower(), int(port), ""
    if not method or not target.lower().startswith("http://"):
        return None, 0, ""
    authority, slash, path = target[7:].partition("/")
    host, sep, port = authority.rpartition(":")
    if not sep or "]" in port:
        host, port = authority, "80"
    if not port.isdigit() or not host or "@" in host:
        return None, 0, ""
    return host.strip("[]").lower(), int(port), slash + path or "/"


def _origin_request(method: str, path: str, version: str, headers: list[tuple[str, str]]) -> bytes:
    kept = [
        f"{name}: {value}"
        for name, value in headers
        if not name.lower().startswith("proxy-") and name.lower() != "connection"
    ]
    lines = [f"{method} {path} {version}", *kept, "Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1")


def _reply(client: socket.socket, status: int, message: str) -> None:
    reason = {400: "Bad Request", 403: "Forbidden", 502: "Bad Gateway"}[status]
    body = message.encode()
    client.sendall(
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )


def _pipe(client: socket.socket, upstream: socket.socket, attempt: EgressAttempt) -> None:
    """Copy both ways until either side closes or nothing moves for the idle timeout."""
    peers = {client: upstream, upstream: client}
    while True:
        readable, _, _ = select.select(list(peers), [], [], _IDLE_TIMEOUT_S)
        if not readable:
            return
        for source in readable:
            data = source.recv(65536)
            if not data:
                return
            peers[source].sendall(data)
            if source is client:
                attempt.bytes_out += len(data)
            else:
                attempt.bytes_in += len(data)
