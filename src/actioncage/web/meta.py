"""/health, /metrics and /openapi.json."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify

import actioncage
from actioncage.metrics import CONTENT_TYPE

bp = Blueprint("meta", __name__)


@bp.get("/health")
def health() -> tuple[Response, int]:
    runner = current_app.extensions["actioncage"].runner
    engine = runner.ping()
    body = {
        "status": "ok" if engine else "degraded",
        "engine": engine,
        "version": actioncage.__version__,
    }
    return jsonify(body), 200 if engine else 503


@bp.get("/metrics")
def metrics() -> Response:
    components = current_app.extensions["actioncage"]
    return Response(components.metrics.render(), mimetype=None, content_type=CONTENT_TYPE)


@bp.get("/openapi.json")
def openapi() -> Response:
    return jsonify(openapi_document())


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERRORS = {
    "400": {"$ref": "#/components/responses/Error"},
    "401": {"$ref": "#/components/responses/Error"},
    "404": {"$ref": "#/components/responses/Error"},
    "422": {"$ref": "#/components/responses/Error"},
}


def _op(
    summary: str, responses: dict[str, Any], body: str | None = None, **extra: Any
) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {**responses, **_ERRORS}, **extra}
    if body:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(body)}},
        }
    return op


def _path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def openapi_document() -> dict[str, Any]:
    """A real OpenAPI 3 document of every route."""
    action_ref = [_path_param("actionRef")]
    return {
        "openapi": "3.0.3",
        "info": {"title": "actioncage", "version": actioncage.__version__},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {"Error": _json(_ref("Error"), "An error")},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["type", "message"],
                            "properties": {
                                "type": {"type": "string"},
                                "message": {"type": "string"},
                                "field": {"type": "string"},
                                "line": {"type": "integer"},
                            },
                        }
                    },
                },
                "Policy": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "timeoutMs": {"type": "integer", "minimum": 1},
                        "memoryMb": {"type": "integer", "minimum": 16},
                        "cpus": {"type": "number"},
                    },
                },
                "ActionInput": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "name": {"type": "string", "pattern": "^[A-Za-z][A-Za-z0-9_]{0,63}$"},
                        "type": {"type": "string", "enum": ["python"]},
                        "code": {"type": "string"},
                        "parameters": {
                            "oneOf": [{"type": "object"}, {"type": "boolean", "enum": [False]}]
                        },
                        "description": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": 512,
                            "nullable": True,
                        },
                        "policy": _ref("Policy"),
                    },
                },
                "Action": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string"},
                        "orgId": {"type": "string"},
                        "name": {"type": "string"},
                        "type": {"type": "string"},
                        "version": {"type": "integer"},
                        "code": {"type": "string"},
                        "parameters": {},
                        "description": {"type": "string", "nullable": True},
                        "policy": _ref("Policy"),
                        "createdBy": {"type": "string"},
                        "createdAt": {"type": "string", "format": "date-time"},
                        "updatedBy": {"type": "string"},
                        "updatedAt": {"type": "string", "format": "date-time"},
                    },
                },
                "ExecuteRequest": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "args": {"type": "object"},
                        "conversationId": {"type": "string", "nullable": True},
                    },
                },
                "Run": {
                    "type": "object",
                    "properties": {
                        "runId": {"type": "string"},
                        "actionId": {"type": "string"},
                        "actionVersion": {"type": "integer"},
                        "conversationId": {"type": "string", "nullable": True},
                        "status": {"type": "string", "enum": ["ok", "error"]},
                        "output": {},
                        "error": {
                            "type": "object",
                            "nullable": True,
                            "properties": {
                                "type": {
                                    "type": "string",
                                    "enum": [
                                        "timeout",
                                        "memory_limit",
                                        "output_limit",
                                        "exception",
                                        "invalid_return",
                                        "invalid_args",
                                        "sandbox_error",
                                    ],
                                },
                                "message": {"type": "string"},
                                "traceback": {"type": "string"},
                            },
                        },
                        "effects": {"type": "array", "items": {"type": "object"}},
                        "effectsApplied": {"type": "boolean"},
                        "durationMs": {"type": "integer"},
                        "logs": {"type": "string"},
                        "startedAt": {"type": "string", "format": "date-time"},
                        "finishedAt": {"type": "string", "format": "date-time"},
                        "imageDigest": {"type": "string", "nullable": True},
                        "callerKeyId": {"type": "string", "nullable": True},
                    },
                },
                "ConversationInput": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "id": {"type": "string"},
                        "messages": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["role", "text"],
                                "properties": {
                                    "role": {"type": "string"},
                                    "text": {"type": "string"},
                                },
                            },
                        },
                        "metadata": {"type": "object"},
                        "tags": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "Conversation": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string"},
                        "messages": {"type": "array", "items": {"type": "object"}},
                        "metadata": {"type": "object"},
                        "tags": {"type": "array", "items": {"type": "string"}},
                        "events": {"type": "array", "items": {}},
                        "handedOff": {"type": "boolean"},
                        "handOffReason": {"type": "string", "nullable": True},
                        "createdAt": {"type": "string", "format": "date-time"},
                        "updatedAt": {"type": "string", "format": "date-time"},
                    },
                },
            },
        },
        "security": [{"bearer": []}],
        "paths": {
            "/health": {
                "get": {
                    "summary": "Liveness and engine reachability",
                    "security": [],
                    "responses": {
                        "200": {"description": "Engine answers"},
                        "503": {"description": "No engine"},
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics: runs, latency, pool, queue, live containers",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "Prometheus text exposition format",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "security": [],
                    "responses": {"200": {"description": "OpenAPI"}},
                }
            },
            "/v1/actions": {
                "post": _op(
                    "Create an action", {"201": _json(_ref("Action"), "Created")}, "ActionInput"
                ),
                "get": _op(
                    "List actions",
                    {
                        "200": _json(
                            {
                                "type": "object",
                                "properties": {
                                    "actions": {"type": "array", "items": _ref("Action")}
                                },
                            },
                            "Actions",
                        )
                    },
                ),
            },
            "/v1/actions/{actionRef}": {
                "parameters": action_ref,
                "get": _op(
                    "Get an action by id or name", {"200": _json(_ref("Action"), "The action")}
                ),
                "patch": _op(
                    "Save a new version", {"200": _json(_ref("Action"), "Updated")}, "ActionInput"
                ),
                "delete": _op("Delete an action (runs stay)", {"204": {"description": "Deleted"}}),
            },
            "/v1/actions/{actionRef}/execute": {
                "parameters": action_ref,
                "post": _op(
                    "Run the action in a new sandbox",
                    {
                        "200": _json(_ref("Run"), "The run (ok or a script failure)"),
                        "503": _json(_ref("Run"), "No run could be produced (sandbox_error)"),
                    },
                    "ExecuteRequest",
                ),
            },
            "/v1/conversations": {
                "post": _op(
                    "Create a conversation",
                    {"201": _json(_ref("Conversation"), "Created")},
                    "ConversationInput",
                ),
            },
            "/v1/conversations/{conversationId}": {
                "parameters": [_path_param("conversationId")],
                "get": _op(
                    "Get a conversation", {"200": _json(_ref("Conversation"), "The conversation")}
                ),
            },
            "/v1/runs/{runId}": {
                "parameters": [_path_param("runId")],
                "get": _op("Get a run's audit record", {"200": _json(_ref("Run"), "The run")}),
            },
        },
    }
