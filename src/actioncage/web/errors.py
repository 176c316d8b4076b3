"""web/: the error kinds every front door shares, and the native API's table from them to
HTTP, rendered as ``{"error": {"type", "message"}}``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, current_app, jsonify
from werkzeug.exceptions import HTTPException

from actioncage import errors

log = logging.getLogger(__name__)

# The kinds of error the run service and the views raise, most specific first: the first
# matching class decides. Every front door maps a kind to its own protocol in one table of
# its own (native below; Rasa and Botpress in web/frontdoors/), and tests hold the tables to
# one meaning: the caller's limits and a full system are 429 with Retry-After everywhere, no
# run at all is 503.
KINDS: list[tuple[type[errors.ActioncageError], str]] = [
    (errors.AuthError, "unauthorized"),
    (errors.NotFoundError, "not_found"),
    (errors.BadRequestError, "bad_request"),
    (errors.InvalidCodeError, "invalid_code"),
    (errors.PolicyError, "policy_violation"),
    (errors.ValidationFailedError, "validation_failed"),
    (errors.ConflictError, "conflict"),
    (errors.OverloadedError, "overloaded"),
    (errors.RateLimitedError, "rate_limited"),
    (errors.BusyError, "busy"),
    (errors.SharedStateError, "shared_state_unavailable"),
    (errors.EngineUnavailableError, "engine_unavailable"),
    (errors.SandboxError, "sandbox_error"),
    (errors.HostCallError, "host_call_failed"),
    (errors.ActioncageError, "internal_error"),
]

# The native API's table: kind -> HTTP status; the kind is the body's error type.
NATIVE: dict[str, int] = {
    "unauthorized": 401,
    "not_found": 404,
    "bad_request": 400,
    "invalid_code": 422,
    "policy_violation": 422,
    "validation_failed": 422,
    "conflict": 409,
    "overloaded": 429,
    "rate_limited": 429,
    "busy": 429,
    "shared_state_unavailable": 503,
    "engine_unavailable": 503,
    "sandbox_error": 503,
    "host_call_failed": 502,
    "internal_error": 500,
}


def kind_of(exc: errors.ActioncageError) -> str:
    """The kind of a domain error (see KINDS)."""
    for cls, kind in KINDS:
        if isinstance(exc, cls):
            return kind
    return "internal_error"


def status_for(exc: errors.ActioncageError) -> tuple[int, str]:
    """The native HTTP status and error type for a domain error."""
    kind = kind_of(exc)
    return NATIVE[kind], kind


def error_body(exc: errors.ActioncageError) -> dict[str, Any]:
    status, type_ = status_for(exc)
    body: dict[str, Any] = {"type": type_, "message": str(exc)}
    field = getattr(exc, "field", None)
    if field:
        body["field"] = field
    line = getattr(exc, "line", None)
    if line:
        body["line"] = line
    return {"error": body}


def _json(body: dict[str, Any], status: int) -> Response:
    response = jsonify(body)
    response.status_code = status
    return response


def error_headers(exc: errors.ActioncageError) -> dict[str, str]:
    """Headers an error answer carries whatever its protocol (Retry-After on 429)."""
    retry_after = getattr(exc, "retry_after_s", None)
    if isinstance(retry_after, int):
        return {"Retry-After": str(retry_after)}
    return {}


def _page(status: int, message: str) -> Response | None:
    """The HTML error page a browser asking for a page gets, when the dashboard installed
    a renderer (``app.extensions["actioncage.error_page"]``); None: answer JSON."""
    render: Callable[[int, str], Response | None] | None = current_app.extensions.get(
        "actioncage.error_page"
    )
    return None if render is None else render(status, message)


def register(app: Flask) -> None:
    """Install the JSON handlers for domain errors, HTTP errors and everything else (HTML
    pages instead where the dashboard's renderer says so)."""

    @app.errorhandler(errors.ActioncageError)
    def _domain(exc: errors.ActioncageError) -> Response:
        status, _ = status_for(exc)
        if status >= 500:
            log.error("request failed: %s", exc)
        if (page := _page(status, str(exc))) is not None:
            return page
        response = _json(error_body(exc), status)
        response.headers.update(error_headers(exc))
        return response

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        if (page := _page(exc.code or 500, exc.description or exc.name)) is not None:
            return page
        type_ = (exc.name or "error").lower().replace(" ", "_")
        response = _json(
            {"error": {"type": type_, "message": exc.description or exc.name}}, exc.code or 500
        )
        if exc.code == 405 and exc.valid_methods:  # type: ignore[attr-defined]
            response.headers["Allow"] = ", ".join(exc.valid_methods)  # type: ignore[attr-defined]
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        # Log the traceback for the operator; never echo the request or user code.
        log.exception("unhandled error")
        if (page := _page(500, "internal error")) is not None:
            return page
        return _json({"error": {"type": "internal_error", "message": "internal error"}}, 500)
