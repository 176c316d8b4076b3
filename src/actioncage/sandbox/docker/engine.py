"""sandbox/docker/: Kept-alive HTTP connections to the engine's API, for the calls every run
makes.

docker-py opens a new connection for every URL it has not seen (its unix-socket adapter keeps
one connection pool per URL, and each container has its own URLs), and each call goes through
requests: measured here, about 4.3 ms of control-plane CPU for create+attach+start+remove.
Through one kept-alive ``http.client`` connection per thread the same four calls cost about
1.1 ms, and the engine accepts no new connection per call. docker-py still builds the request
bodies (once per profile) and makes the rare calls (version, wait, inspect, list).
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from actioncage.errors import SandboxError

# ("unix", path) or ("tcp", (host, port)).
Address = tuple[str, str | tuple[str, int]]

# A response head (status line and headers) larger than this is not from an engine.
_MAX_HEAD_BYTES = 64 * 1024
# Errors that mean a kept-alive connection was closed under us: reconnect and retry once.
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


class EngineAPIError(SandboxError):
    """The engine answered with an error status; ``status`` and the engine's message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"container engine error: {message}")
        self.status = status
        self.engine_message = message


def engine_address(url: str) -> Address:
    """``("unix", path)`` or ``("tcp", (host, port))`` for an engine URL.

    Accepts ``unix:///path``, ``tcp://host:port`` and ``http://host:port``; raises ValueError
    for anything else (TLS and ssh engines are not supported).
    """
    parts = urlsplit(url)
    if parts.scheme == "unix" and parts.path.startswith("/") and not parts.netloc:
        return "unix", parts.path
    if parts.scheme in ("tcp", "http") and parts.hostname and not parts.path.strip("/"):
        return "tcp", (parts.hostname, parts.port or 2375)
    raise ValueError(f"unsupported engine URL {url!r}: use unix:///path or tcp://host:port")


class _Connection(http.client.HTTPConnection):
    def __init__(self, address: Address, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = _open_socket(self._address, self.timeout)


def _open_socket(address: Address, timeout: float | None) -> socket.socket:
    kind, where = address
    if kind == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(where)
        except BaseException:
            sock.close()
            raise
        return sock
    assert isinstance(where, tuple)
    sock = socket.create_connection(where, timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class EngineConnections:
    """One kept-alive connection to the engine per thread; close() closes them all.

    A connection whose thread has ended is closed the next time any thread opens one, so
    short-lived callers leave no sockets behind.
    """

    def __init__(self, url: str, api_version: str, timeout: float = 60.0) -> None:
        self._address = engine_address(url)
        self._prefix = f"/v{api_version}"
        self._timeout = timeout
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: dict[_Connection, threading.Thread] = {}  # each with its thread
        self.opened = 0  # connections made so far (each one costs the engine an accept)

    @property
    def open_count(self) -> int:
        """Connections open now."""
        with self._lock:
            return len(self._open)

    def call(
        self,
        method: str,
        path: str,
        query: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None,
    ) -> Any:
        """Make one API call; return the decoded JSON body (None when empty).

        Raises EngineAPIError for an error status and OSError when the engine cannot be
        reached.
        """
        target = self._prefix + path + ("?" + urlencode(query) if query else "")
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        while True:
            connection, reused = self._connection()
            try:
                status, data = _exchange(connection, method, target, payload, headers)
                break
            except _STALE:
                self._drop(connection)
                if not reused:
                    raise
                # The engine closed the idle connection before reading the request: say it
                # again, once, on a new connection (which is not reused, so never retried).
            except BaseException:
                self._drop(connection)
                raise
        if status >= 400:
            raise EngineAPIError(status, _engine_message(data, data[:200].decode(errors="replace")))
        return _decode(data)

    def attach(self, container_id: str) -> tuple[socket.socket, bytes]:
        """Attach to a created container's stdin, stdout and stderr (a connection of its own).

        Returns the socket, now carrying the multiplexed stream, and the stream bytes that
        came with the response head. Raises EngineAPIError or OSError.
        """
        query = urlencode({"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
        request = (
            f"POST {self._prefix}/containers/{quote(container_id)}/attach?{query} HTTP/1.1\r\n"
            "Host: localhost\r\nUpgrade: tcp\r\nConnection: Upgrade\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        sock = _open_socket(self._address, self._timeout)
        try:
            sock.sendall(request)
            head = bytearray()
            while b"\r\n\r\n" not in head:
                chunk = sock.recv(65536)
                if not chunk:
                    raise EngineAPIError(0, "the engine closed the attach connection")
                head += chunk
                if len(head) > _MAX_HEAD_BYTES and b"\r\n\r\n" not in head:
                    raise EngineAPIError(0, "the engine's attach response head is too large")
            raw_head, _, rest = bytes(head).partition(b"\r\n\r\n")
            status_line = raw_head.split(b"\r\n", 1)[0].split()
            status = int(status_line[1]) if len(status_line) > 1 and status_line[1].isdigit() else 0
            if status not in (101, 200):
                raise EngineAPIError(status, _engine_message(rest, f"attach answered {status}"))
            return sock, rest
        except BaseException:
            sock.close()
            raise

    def close(self) -> None:
        """Close every thread's connection (a later call opens a new one)."""
        with self._lock:
            connections, self._open = list(self._open), {}
        for connection in connections:
            connection.close()

    def _connection(self) -> tuple[_Connection, bool]:
        connection: _Connection | None = getattr(self._local, "connection", None)
        with self._lock:
            if connection is not None and connection in self._open:
                return connection, True
            orphans = [c for c, thread in self._open.items() if not thread.is_alive()]
            for orphan in orphans:
                del self._open[orphan]
            connection = _Connection(self._address, self._timeout)
            self._open[connection] = threading.current_thread()
            self.opened += 1
        self._local.connection = connection
        for orphan in orphans:
            orphan.close()
        return connection, False

    def _drop(self, connection: _Connection) -> None:
        with self._lock:
            self._open.pop(connection, None)
        connection.close()


def _exchange(
    connection: _Connection,
    method: str,
    target: str,
    payload: bytes | None,
    headers: dict[str, str],
) -> tuple[int, bytes]:
    connection.request(method, target, body=payload, headers=headers)
    response = connection.getresponse()
    data = response.read()
    if response.will_close:
        connection.close()  # the next request reconnects
    return response.status, data


def _engine_message(data: bytes, fallback: str) -> str:
    """The ``message`` of the engine's JSON error body, else ``fallback``."""
    decoded = _decode(data)
    message = decoded.get("message") if isinstance(decoded, dict) else None
    return str(message or fallback)


def _decode(data: bytes) -> Any:
    if not data.strip():
        return None
    try:
        return json.loads(data)
    except ValueError:
        return None
