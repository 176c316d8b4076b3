"""web/frontdoors/: The Model Context Protocol's streamable HTTP transport at /mcp: an org's
actions as tools.

Built on the official ``mcp`` SDK's low-level server and its streamable HTTP session manager,
stateless and answering in JSON, so both protocol revisions are served from one route: the
2026-07-28 revision (no handshake, ``server/discover``, each POST self-contained) and the
handshake revisions (2025-11-25 and before: ``initialize`` then one POST per message, no
session kept). The SDK's server is ASGI: web/asgi.py runs it on one event loop thread per
process, inside this Flask view, so the key check, the error table below and the request
size limit are the same as on every other route, and no other route is touched.

Auth is the REST API's: ``Authorization: Bearer <key>``; without a valid one the answer is
401 with ``WWW-Authenticate: Bearer`` (RFC 6750: there is no OAuth authorization server to
point to, so no ``resource_metadata``). A request whose ``Origin`` header is present and not
this server's own origin or one of ACTIONCAGE_MCP_ALLOWED_ORIGINS is 403, as the spec
requires against DNS rebinding.

``tools/call`` goes through the run service (front door ``mcp``: limits, idempotency, the
run record). A failing script is a result with ``isError`` true carrying its error type and
message, so the model can correct itself; an unknown tool is a JSON-RPC error. The call's
``_meta`` may carry ``io.actioncage/conversationId`` (the conversation is made when missing,
as platforms that own the conversation expect) and ``io.actioncage/idempotencyKey`` (or the
Idempotency-Key header).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from typing import Any

import anyio.to_thread
import mcp_types as types
from flask import Blueprint, Flask, Response, current_app, request
from mcp.server.lowlevel.server import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.exceptions import MCPError
from werkzeug.exceptions import HTTPException, MethodNotAllowed

import actioncage
from actioncage import errors
from actioncage.actions import tools
from actioncage.actions.validation import CONVERSATION_ID_RE
from actioncage.components import Components
from actioncage.models import Action, FrontDoor, RunResult, RunStatus
from actioncage.runs.idempotency import Answer
from actioncage.runs.service import Caller, ConversationRef, RunRequest
from actioncage.store import repo
from actioncage.web import calls
from actioncage.web.asgi import (
    AsgiApp,
    AsgiResponse,
    EventLoopThread,
    Scope,
    exchange,
    http_scope,
)
from actioncage.web.auth import authenticate, key_from_request
from actioncage.web.errors import error_headers, kind_of

bp = Blueprint("mcp", __name__)

CONVERSATION_META_KEY = "io.actioncage/conversationId"
IDEMPOTENCY_META_KEY = "io.actioncage/idempotencyKey"
_SCOPE_CALLER = "actioncage.caller"
_SCOPE_IDEMPOTENCY_KEY = "actioncage.idempotency_key"
_SCOPE_ANSWER = "actioncage.answer"
_WWW_AUTHENTICATE = 'Bearer realm="actioncage"'
# Implementation-defined JSON-RPC server errors (-32000 to -32099).
_LIMITED = -32029
_UNAVAILABLE = -32003
_CONFLICT = -32009

# The error kinds (web/errors.py KINDS) to (HTTP status, JSON-RPC error code). The limits and
# a full system are 429 with Retry-After and no run at all is 503, as on every front door;
# the body is always a JSON-RPC error, which the SDK clients surface at any status.
_CODES: dict[str, tuple[int, int]] = {
    "unauthorized": (401, types.INVALID_REQUEST),
    "not_found": (400, types.INVALID_PARAMS),  # an unknown tool, per the spec
    "bad_request": (400, types.INVALID_PARAMS),
    "invalid_code": (400, types.INVALID_PARAMS),
    "policy_violation": (400, types.INVALID_PARAMS),
    "validation_failed": (400, types.INVALID_PARAMS),
    "conflict": (409, _CONFLICT),
    "overloaded": (429, _LIMITED),
    "rate_limited": (429, _LIMITED),
    "busy": (429, _LIMITED),
    "shared_state_unavailable": (503, _UNAVAILABLE),
    "engine_unavailable": (503, _UNAVAILABLE),
    "sandbox_error": (503, _UNAVAILABLE),
    "host_call_failed": (502, types.INTERNAL_ERROR),
    "internal_error": (500, types.INTERNAL_ERROR),
}


class OriginRejectedError(errors.AuthError):
    """An ``Origin`` that is neither this server nor an allowed one (DNS rebinding)."""


def _rpc_error(code: int, message: str, data: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": None, "error": error}


def _json(body: Any, status: int, headers: Mapping[str, str] | None = None) -> Response:
    response = Response(
        json.dumps(body, separators=(",", ":")), status, mimetype="application/json"
    )
    response.headers.update(headers or {})
    return response


@bp.errorhandler(errors.ActioncageError)
def _error(exc: errors.ActioncageError) -> Response:
    kind = kind_of(exc)
    status, code = _CODES[kind]
    if isinstance(exc, OriginRejectedError):
        status = 403
    message = "internal error" if status == 500 else str(exc)
    headers = error_headers(exc)
    if status == 401:
        headers["WWW-Authenticate"] = _WWW_AUTHENTICATE
    return _json(_rpc_error(code, message, {"type": kind}), status, headers)


@bp.errorhandler(HTTPException)
def _http(exc: HTTPException) -> Response:
    status = exc.code or 500
    code = types.INVALID_REQUEST if status < 500 else types.INTERNAL_ERROR
    headers = {"Allow": "POST"} if status == 405 else {}
    return _json(_rpc_error(code, exc.description or exc.name), status, headers)


def _check_origin(allowed: tuple[str, ...]) -> None:
    origin = request.headers.get("Origin")
    if origin is None:
        return
    own = f"{request.scheme}://{request.host}"
    if origin.rstrip("/") != own and origin.rstrip("/") not in allowed:
        raise OriginRejectedError(f"Origin {origin!r} is not allowed")


@bp.route("/mcp", methods=["GET", "DELETE"])
def no_stream() -> Response:
    """Stateless: no stream for server-sent messages (GET) and no session to end (DELETE)."""
    raise MethodNotAllowed(["POST"], "this MCP server is stateless: POST each message")


@bp.post("/mcp")
def mcp_endpoint() -> Response:
    components: Components = current_app.extensions["actioncage"]
    _check_origin(components.settings.mcp_allowed_origin_list)
    key = authenticate(key_from_request())
    idempotency_key = calls.idempotency_key()
    server = _server_of(current_app)
    body = request.get_data(cache=False)  # MAX_CONTENT_LENGTH holds
    scope = http_scope(
        request.method,
        request.path,
        request.query_string,
        list(request.headers.items()),
        None,
        None,
        request.scheme,
        {
            _SCOPE_CALLER: Caller(key.org_id, key.id, FrontDoor.MCP),
            _SCOPE_IDEMPOTENCY_KEY: idempotency_key,
        },
    )
    answer = server.call(scope, body)
    override = scope.get(_SCOPE_ANSWER)
    headers = [(k, v) for k, v in answer.headers if k.lower() not in ("content-length", "date")]
    if not answer.body:  # 202: a notification, taken
        return Response(status=answer.status)
    if (
        not dict((k.lower(), v) for k, v in headers)
        .get("content-type", "")
        .startswith("application/json")
    ):  # the SDK's few plain-text refusals (a wrong Content-Type) as JSON-RPC errors
        text = answer.body.decode("utf-8", "replace")
        return _json(_rpc_error(types.INVALID_REQUEST, text), answer.status)
    response = Response(answer.body, answer.status, headers=headers)
    if override is not None:
        response.status_code, extra = override
        response.headers.update(extra)
    return response


def _server_of(app: Flask) -> McpServer:
    server: McpServer = app.extensions["actioncage.mcp"]
    return server


def register(app: Flask, components: Components) -> None:
    """Serve /mcp on ``app`` for ``components``' actions; the SDK starts on first use."""
    # The SDK logs every stateless request at INFO ("Terminating session: None").
    for name in ("mcp.server.streamable_http", "mcp.server.streamable_http_manager"):
        logging.getLogger(name).setLevel(logging.WARNING)
    app.extensions["actioncage.mcp"] = McpServer(components)
    app.register_blueprint(bp)


class McpServer:
    """The SDK's low-level server over one app's components, started lazily on the process's
    event loop thread."""

    def __init__(self, components: Components) -> None:
        self._components = components
        self._server: Server[Any] = Server(
            "actioncage",
            version=actioncage.__version__,
            on_list_tools=self._list_tools,
            on_call_tool=self._call_tool,
        )
        self._manager = StreamableHTTPSessionManager(
            self._server,
            json_response=True,
            stateless=True,
            max_request_body_size=components.settings.max_request_bytes,
        )
        self._lock = threading.Lock()
        self._started = False
        self._loop: EventLoopThread | None = None

    def call(self, scope: Scope, body: bytes) -> AsgiResponse:
        """Answer one HTTP request."""
        loop = self._start()
        app: AsgiApp = self._manager.handle_request
        return loop.submit(exchange(app, scope, body)).result()

    def _start(self) -> EventLoopThread:
        with self._lock:
            if self._loop is None:
                loop = EventLoopThread.shared()
                ready = threading.Event()

                async def keep() -> None:
                    async with self._manager.run():
                        ready.set()
                        await anyio.sleep_forever()

                loop.submit(keep())
                ready.wait()
                self._loop = loop
            return self._loop

    # --- handlers (on the event loop; the run service runs in a worker thread) -------------

    async def _list_tools(
        self, ctx: Any, params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        caller = _caller(ctx)

        def actions() -> list[Action]:
            with self._components.store.session() as s:
                return repo.list_actions(s, caller.org_id)

        listed = await anyio.to_thread.run_sync(actions)
        return types.ListToolsResult(tools=[tool_of(a) for a in listed])

    async def _call_tool(
        self, ctx: Any, params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        caller = _caller(ctx)
        meta: Mapping[str, Any] = params.meta or {}
        scope = ctx.request.scope
        conversation_id = meta.get(CONVERSATION_META_KEY)
        if conversation_id is not None and (
            not isinstance(conversation_id, str) or not CONVERSATION_ID_RE.match(conversation_id)
        ):
            raise MCPError(
                types.INVALID_PARAMS, f"_meta {CONVERSATION_META_KEY} is not a conversation id"
            )
        idempotency_key = meta.get(IDEMPOTENCY_META_KEY, scope.get(_SCOPE_IDEMPOTENCY_KEY))
        if idempotency_key is not None and (
            not isinstance(idempotency_key, str)
            or not 1 <= len(idempotency_key) <= 255
            or not idempotency_key.isascii()
            or not idempotency_key.isprintable()
        ):
            raise MCPError(
                types.INVALID_PARAMS, f"_meta {IDEMPOTENCY_META_KEY} must be 1-255 printable ASCII"
            )
        args = params.arguments or {}
        service = self._components.service

        def run() -> dict[str, Any]:
            action = service.action(caller, params.name)
            request_ = RunRequest(
                caller,
                action,
                args,
                None if conversation_id is None else ConversationRef(conversation_id, create=True),
            )

            def answer() -> Answer:
                result = service.run(request_)
                assert isinstance(result, RunResult)  # no waitMs: never pending
                return result_of(action, result), 200

            out, _, _ = service.once(
                caller,
                idempotency_key,
                f"mcp:{params.name}",
                {"name": params.name, "arguments": args, "conversationId": conversation_id},
                answer,
            )
            body: dict[str, Any] = out
            return body

        try:
            result = await anyio.to_thread.run_sync(run)
        except errors.ActioncageError as exc:
            kind = kind_of(exc)
            status, code = _CODES[kind]
            data: dict[str, Any] = {"type": kind}
            headers = error_headers(exc)
            if "Retry-After" in headers:
                data["retryAfterS"] = int(headers["Retry-After"])
            if status >= 429:  # the HTTP status says "try later" / "no run" as elsewhere
                scope[_SCOPE_ANSWER] = (status, headers)
            message = "internal error" if status == 500 else str(exc)
            raise MCPError(code, message, data) from exc
        return types.CallToolResult.model_validate(result)


def _caller(ctx: Any) -> Caller:
    caller: Caller = ctx.request.scope[_SCOPE_CALLER]
    return caller


def tool_of(action: Action) -> types.Tool:
    """One action as an MCP tool."""
    return types.Tool(
        name=action.name,
        description=action.description,
        input_schema=tools.input_schema(action),
        output_schema=tools.output_schema(action),
    )


def result_of(action: Action, run: RunResult) -> dict[str, Any]:
    """A run as a CallToolResult (wire JSON): ``structuredContent`` plus the same JSON as
    text; a failed run is ``isError`` with ``{error: {type, message}, runId}``."""
    if run.status is RunStatus.OK:
        text = json.dumps(run.output, separators=(",", ":"))
        return {
            "content": [{"type": "text", "text": text}],
            "structuredContent": tools.structured_output(action, run.output),
            "isError": False,
            "_meta": {"io.actioncage/runId": run.run_id},
        }
    assert run.error is not None
    failure = {
        "error": {"type": str(run.error.type), "message": run.error.message},
        "runId": run.run_id,
    }
    return {
        "content": [{"type": "text", "text": json.dumps(failure, separators=(",", ":"))}],
        "isError": True,
        "_meta": {"io.actioncage/runId": run.run_id},
    }
