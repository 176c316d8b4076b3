"""The egress proxy in-process, over its real unix socket: refusals and shutdown."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from threading import Thread

from actioncage.egress.guard import EgressGuard, parse_patterns
from actioncage.egress.proxy import SOCKET_NAME, EgressProxy


def _ask(directory: str, request: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(os.path.join(directory, SOCKET_NAME))
        s.sendall(request)
        data = b""
        while chunk := s.recv(4096):
            data += chunk
        return data


def test_non_proxy_requests_are_refused_and_recorded(tmp_path: Path) -> None:
    proxy = EgressProxy(parse_patterns(["api.test"]), EgressGuard(), str(tmp_path))
    directory = proxy.start()
    assert oct(os.stat(os.path.join(directory, SOCKET_NAME)).st_mode & 0o777) == "0o666"
    assert _ask(directory, b"GET /relative HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert _ask(directory, b"CONNECT nohost HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert _ask(directory, b"GET http://user@api.test/ HTTP/1.1\r\n\r\n").startswith(
        b"HTTP/1.1 400"
    )
    assert _ask(directory, b"CONNECT other.test:443 HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 403")
    records = proxy.close()
    assert [r["allowed"] for r in records] == [False] * 4
    assert records[-1]["host"] == "other.test" and records[-1]["port"] == 443
    assert not os.path.exists(directory)


def test_close_cuts_open_tunnels(tmp_path: Path) -> None:
    upstream = socket.socket()
    upstream.bind(("127.0.0.1", 0))
    upstream.listen()
    port = upstream.getsockname()[1]
    accepted: list[socket.socket] = []
    acceptor = Thread(target=lambda: accepted.append(upstream.accept()[0]), daemon=True)
    acceptor.start()
    proxy = EgressProxy(
        parse_patterns(["up.test"]),
        EgressGuard(allowed_cidrs=["127.0.0.1/32"], resolver=lambda h, p: ["127.0.0.1"]),
        str(tmp_path),
    )
    directory = proxy.start()
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        client.settimeout(5)
        client.connect(os.path.join(directory, SOCKET_NAME))
        client.sendall(f"CONNECT up.test:{port} HTTP/1.1\r\n\r\n".encode())
        assert client.recv(1024).startswith(b"HTTP/1.1 200")
        records = proxy.close()
        assert client.recv(1024) == b""  # the run ended: the tunnel is cut
        assert records[0]["allowed"] is True and records[0]["address"] == "127.0.0.1"
    finally:
        client.close()
        proxy.close()
        acceptor.join(timeout=5)
        for s in accepted:
            s.close()
        upstream.close()
