"""The one table from domain errors to HTTP, rendered as ``{"error": {"type", "message"}}``."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from actioncage import errors

log = logging.getLogger(__name__)

# Most specific first: the first matching class decides.
STATUS: list[tuple[type[errors.ActioncageError], int, str]] = [
    (errors.AuthError, 401, "unauthorized"),
    (errors.NotFoundError, 404, "not_found"),
    (errors.BadRequestError, 400, "bad_request"),
    (errors.InvalidCodeError, 422, "invalid_code"),
    (errors.PolicyError, 422, "policy_violation"),
    (errors.ValidationFailedError, 422, "validation_failed"),
    (errors.ConflictError, 409, "conflict"),
    (errors.OverloadedError, 429, "overloaded"),
    (errors.RateLimitedError, 429, "rate_limited"),
    (errors.EngineUnavailableError, 503, "engine_unavailable"),
    (errors.SandboxError, 503, "sandbox_error"),
    (errors.HostCallError, 502, "host_call_failed"),
    (errors.BusyError, 503, "busy"),
    (errors.ActioncageError, 500, "internal_error"),
]


def status_for(exc: errors.ActioncageError) -> tuple[int, str]:
    """The HTTP status and error type for a domain error."""
    for cls, status, type_ in STATUS:
        if isinstance(exc, cls):
            return status, type_
    return 500, "internal_error"


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
    if isinstance(exc, errors.RateLimitedError):
        return {"Retry-After": str(exc.retry_after_s)}
    return {}


def register(app: Flask) -> None:
    """Install the JSON handlers for domain errors, HTTP errors and everything else."""

    @app.errorhandler(errors.ActioncageError)
    def _domain(exc: errors.ActioncageError) -> Response:
        status, _ = status_for(exc)
        if status >= 500:
            log.error("request failed: %s", exc)
        response = _json(error_body(exc), status)
        response.headers.update(error_headers(exc))
        return response

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
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
        return _json({"error": {"type": "internal_error", "message": "internal error"}}, 500)
