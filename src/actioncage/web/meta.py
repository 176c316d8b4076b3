"""/health, /metrics and /openapi.json."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

import actioncage
from actioncage.metrics import CONTENT_TYPE
from actioncage.web import calls

bp = Blueprint("meta", __name__)


@bp.get("/health")
def health() -> tuple[Response, int]:
    runner = calls.components().runner
    engine = runner.ping()
    body = {
        "status": "ok" if engine else "degraded",
        "engine": engine,
        "version": actioncage.__version__,
    }
    return jsonify(body), 200 if engine else 503


@bp.get("/metrics")
def metrics() -> Response:
    components = calls.components()
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


_RECORD_INPUT: dict[str, Any] = {
    "endpoint": {"$ref": "#/components/schemas/Endpoint"},
    "userWaitingText": {"type": "string", "maxLength": 2048, "nullable": True},
    "userSuccessText": {"type": "string", "maxLength": 2048, "nullable": True},
    "userErrorText": {"type": "string", "maxLength": 2048, "nullable": True},
    "invocationTrigger": {
        "type": "string",
        "enum": ["user_query", "webhook.conversation_start", "webhook.conversation_end"],
    },
}

_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Same key and body within 24 h: the stored answer, not a new run",
    "schema": {"type": "string", "maxLength": 255},
}

_WAITING = {
    "type": "object",
    "properties": {
        "runId": {"type": "string"},
        "status": {"type": "string", "enum": ["running"]},
        "userWaitingText": {"type": "string", "nullable": True},
    },
}

_ANY_OBJECT = {"type": "object", "additionalProperties": True}


def _front_door_paths() -> dict[str, Any]:
    """Conversation end, the webhook secret, and the Rasa and Botpress front doors."""
    rasa_error = _json(
        {
            "type": "object",
            "properties": {"error": {"type": "string"}, "action_name": {"type": "string"}},
        },
        "Rasa error",
    )
    botpress_error = _json(
        {
            "type": "object",
            "properties": {
                "id": {"type": "string"},
                "code": {"type": "integer"},
                "type": {"type": "string"},
                "message": {"type": "string"},
            },
        },
        "Botpress error",
    )
    token = {"name": "token", "in": "query", "required": False, "schema": {"type": "string"}}

    def header(name: str, required: bool) -> dict[str, Any]:
        return {"name": name, "in": "header", "required": required, "schema": {"type": "string"}}

    return {
        "/v1/conversations/{conversationId}/end": {
            "parameters": [_path_param("conversationId")],
            "post": _op(
                "End a conversation; its webhook.conversation_end actions run",
                {"200": _json(_ref("Conversation"), "Ended, with triggeredRuns")},
            ),
        },
        "/v1/webhook-secret": {
            "get": _op(
                "The org's secret for callback signatures (X-Actioncage-Signature)",
                {"200": _json(_ANY_OBJECT, "The secret")},
            )
        },
        "/webhook": {
            "post": {
                "summary": "Rasa action server: run next_action",
                "parameters": [token, _IDEMPOTENCY_KEY],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ANY_OBJECT}},
                },
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "events": {"type": "array", "items": _ANY_OBJECT},
                                "responses": {"type": "array", "items": _ANY_OBJECT},
                            },
                        },
                        "Events and responses",
                    ),
                    "400": rasa_error,
                    "401": rasa_error,
                    "404": rasa_error,
                    "409": rasa_error,
                    "449": rasa_error,
                },
            }
        },
        "/actions": {
            "get": {
                "summary": "Rasa action server: the action names",
                "parameters": [token],
                "responses": {
                    "200": _json({"type": "array", "items": _ANY_OBJECT}, "Actions"),
                    "401": rasa_error,
                },
            }
        },
        "/v1/chat/actions": {
            "post": {
                "summary": "Botpress runtime callAction",
                "parameters": [
                    header("x-bot-id", True),
                    header("x-integration-id", False),
                    header("x-integration-alias", False),
                    _IDEMPOTENCY_KEY,
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "additionalProperties": False,
                                "required": ["type", "input"],
                                "properties": {
                                    "type": {"type": "string", "maxLength": 200},
                                    "input": _ANY_OBJECT,
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "output": _ANY_OBJECT,
                                "meta": {
                                    "type": "object",
                                    "properties": {"cached": {"type": "boolean"}},
                                },
                            },
                        },
                        "The action's output",
                    ),
                    "default": botpress_error,
                },
            }
        },
    }


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
                        "type": {"type": "string", "enum": ["python", "api"]},
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
                        **_RECORD_INPUT,
                    },
                },
                "Endpoint": {
                    "type": "object",
                    "description": "type api only; $variables become required arguments",
                    "additionalProperties": False,
                    "required": ["url"],
                    "properties": {
                        "url": {"type": "string", "maxLength": 2048},
                        "method": {"type": "string", "enum": ["GET", "POST", "PUT", "DELETE"]},
                        "headers": {
                            "type": "object",
                            "additionalProperties": {"type": "string"},
                            "description": "secret values read back as ***; *** keeps them",
                        },
                        "query": {"type": "object", "additionalProperties": {"type": "string"}},
                        "payload": {},
                        "timeoutMs": {"type": "integer", "minimum": 1, "nullable": True},
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
                        **_RECORD_INPUT,
                        "endpoint": {"allOf": [_ref("Endpoint")], "nullable": True},
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
                        "waitMs": {"type": "integer", "minimum": 0, "maximum": 600000},
                        "callbackUrl": {"type": "string", "format": "uri"},
                    },
                },
                "Run": {
                    "type": "object",
                    "properties": {
                        "runId": {"type": "string"},
                        "actionId": {"type": "string"},
                        "actionVersion": {"type": "integer"},
                        "conversationId": {"type": "string", "nullable": True},
                        "status": {"type": "string", "enum": ["ok", "error", "running"]},
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
                        "policyHash": {"type": "string", "nullable": True},
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
                        "202": _json(_WAITING, "Still running after waitMs"),
                        "409": {"$ref": "#/components/responses/Error"},
                        "429": {"$ref": "#/components/responses/Error"},
                    },
                    "ExecuteRequest",
                    parameters=[_IDEMPOTENCY_KEY],
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
            **_front_door_paths(),
            "/v1/runs/{runId}": {
                "parameters": [_path_param("runId")],
                "get": _op("Get a run's audit record", {"200": _json(_ref("Run"), "The run")}),
            },
            "/v1/runs": {
                "get": {
                    **_op(
                        "List runs, newest first (filters and keyset paging)",
                        {
                            "200": _json(
                                {
                                    "type": "object",
                                    "properties": {
                                        "runs": {"type": "array", "items": _ref("Run")},
                                        "nextCursor": {"type": "string", "nullable": True},
                                    },
                                },
                                "A page of runs",
                            )
                        },
                    ),
                    "parameters": [
                        {"name": n, "in": "query", "required": False, "schema": {"type": t}}
                        for n, t in (
                            ("actionId", "string"),
                            ("status", "string"),
                            ("limit", "integer"),
                            ("cursor", "string"),
                        )
                    ],
                },
            },
            "/v1/policy": {
                "get": _op(
                    "The effective sandbox settings: container flags, seccomp hash, image "
                    "digest, limits and the org's ceiling",
                    {"200": _json({"type": "object"}, "The policy")},
                ),
            },
        },
    }
