"""Egress inside the sandbox: a loopback TCP forwarder to the control plane's proxy socket.

The container has no network, only ``lo``. For a run with egress the control plane mounts its
egress proxy's unix socket; this forwarder listens on 127.0.0.1 and pipes each connection to
that socket, and the standard proxy variables point ``requests`` (and urllib) at it. The proxy
decides what is allowed; this end only carries bytes.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import threading

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")


def start_forwarder(socket_path: str) -> str:
    """Start forwarding in a daemon thread; returns the proxy URL (``http://127.0.0.1:N``)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    threading.Thread(target=_accept, args=(listener, socket_path), daemon=True).start()
    return f"http://127.0.0.1:{port}"


def use_proxy(socket_path: str) -> None:
    """Start the forwarder and point the standard proxy variables at it."""
    url = start_forwarder(socket_path)
    for name in PROXY_VARIABLES:
        os.environ[name] = url
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        os.environ.pop(name, None)


def _accept(listener: socket.socket, socket_path: str) -> None:
    while True:
        try:
            client, _ = listener.accept()
        except OSError:
            return
        threading.Thread(target=_forward, args=(client, socket_path), daemon=True).start()


def _forward(client: socket.socket, socket_path: str) -> None:
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        upstream.connect(socket_path)
        peers = {client: upstream, upstream: client}
        while True:
            readable, _, _ = select.select(list(peers), [], [], 60)
            if not readable:
                return
            for source in readable:
                data = source.recv(65536)
                if not data:
                    return
                peers[source].sendall(data)
    except OSError:
        return
    finally:
        for s in (client, upstream):
            with contextlib.suppress(OSError):
                s.close()
