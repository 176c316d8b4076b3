"""web/: one ASGI app's requests answered from a WSGI view, on one event loop thread per
process (the MCP SDK's server is ASGI; actioncage is Flask under waitress).

Why a bridge in a view and not a second server or a WSGI->ASGI middleware in front of Flask:
the /mcp route then goes through Flask like every other route (the key check, the front
door's error table, MAX_CONTENT_LENGTH, the in-flight hold, the OpenAPI check of the tests'
responses), the port stays one, and nothing changes for any other route: the loop thread is
started by the first /mcp request, never by the native execute path. The MCP server answers
in JSON (never SSE: a call has exactly one result and runs report no progress), so a response
is complete when the ASGI app returns and is handed back whole.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable, Callable, Coroutine, MutableMapping
from dataclasses import dataclass
from typing import Any, TypeVar

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]

T = TypeVar("T")


@dataclass(frozen=True)
class AsgiResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


class EventLoopThread:
    """One asyncio loop running in a daemon thread; coroutines are handed to it from any
    thread. ``shared()`` is the process's one loop, started on first use."""

    _shared: EventLoopThread | None = None
    _shared_lock = threading.Lock()

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="actioncage-asgi", daemon=True
        )
        self._thread.start()

    @classmethod
    def shared(cls) -> EventLoopThread:
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run ``coro`` on the loop; its future may be waited on from any other thread."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop)


async def exchange(app: AsgiApp, scope: Scope, body: bytes) -> AsgiResponse:
    """Run one HTTP request through ``app`` and collect its whole response.

    The request body arrives in one message; the client "disconnects" only once the
    response is complete, so the app never sees a disconnect mid-answer.
    """
    complete = asyncio.Event()
    delivered = False
    status = 500
    headers: list[tuple[str, str]] = []
    chunks: list[bytes] = []

    async def receive() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await complete.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])
            headers.extend(
                (k.decode("latin-1"), v.decode("latin-1")) for k, v in message.get("headers", ())
            )
        elif message["type"] == "http.response.body":
            chunks.append(bytes(message.get("body", b"")))
            if not message.get("more_body", False):
                complete.set()

    try:
        await app(scope, receive, send)
    finally:
        complete.set()
    return AsgiResponse(status, headers, b"".join(chunks))


def http_scope(
    method: str,
    path: str,
    query_string: bytes,
    headers: list[tuple[str, str]],
    server: tuple[str, int] | None,
    client: tuple[str, int] | None,
    scheme: str,
    extra: dict[str, Any],
) -> Scope:
    """An ASGI 3 ``http`` scope for one request; ``extra`` keys ride along to the app."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": scheme,
        "path": path,
        "raw_path": path.encode("utf-8"),
        "root_path": "",
        "query_string": query_string,
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
        "server": server,
        "client": client,
        "state": {},
        **extra,
    }
