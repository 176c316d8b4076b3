"""web/: The OpenAPI 3.1 document of every route, derived from web/schemas.py (the schemas
requests are validated with and responses are shaped to); meta.py serves it at
/openapi.json."""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

import actioncage
from actioncage.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from actioncage.web.schemas import SCHEMAS, ref

_HTML = "text/html; charset=utf-8"


def _json(schema: dict[str, Any] | str, description: str) -> dict[str, Any]:
    body = ref(schema) if isinstance(schema, str) else schema
    return {"description": description, "content": {"application/json": {"schema": body}}}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(code): {"$ref": "#/components/responses/Error"} for code in codes}


def _body(name: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": ref(name)}}}


def _path_param(name: str, description: str = "") -> dict[str, Any]:
    param = {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
    if description:
        param["description"] = description
    return param


def _header(name: str, required: bool, description: str = "") -> dict[str, Any]:
    param: dict[str, Any] = {
        "name": name,
        "in": "header",
        "required": required,
        "schema": {"type": "string"},
    }
    if description:
        param["description"] = description
    return param


def _html(description: str) -> dict[str, Any]:
    return {"description": description, "content": {_HTML: {"schema": {"type": "string"}}}}


def _redirect(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "headers": {"Location": {"schema": {"type": "string"}}},
        "content": {_HTML: {"schema": {"type": "string"}}},
    }


def _either(*names: str) -> dict[str, Any]:
    return {"oneOf": [ref(n) for n in names]}


_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Same key and body within 24 h: the stored answer, not a new run",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
}
_ACTION_REF = _path_param("actionRef", "the action's id or name")
_RUNS_QUERY = [
    {"name": "actionId", "in": "query", "required": False, "schema": {"type": "string"}},
    {
        "name": "status",
        "in": "query",
        "required": False,
        "schema": {"type": "string", "enum": ["ok", "error"]},
    },
    {
        "name": "limit",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": 200},
    },
    {"name": "cursor", "in": "query", "required": False, "schema": {"type": "string"}},
]


def _meta_paths() -> dict[str, Any]:
    return {
        "/health": {
            "get": {
                "summary": "Liveness and engine reachability",
                "security": [],
                "responses": {
                    "200": _json("Health", "The engine answers"),
                    "503": _json("Health", "No engine"),
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
                        "content": {METRICS_CONTENT_TYPE: {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "security": [],
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")},
            }
        },
    }


def _native_paths() -> dict[str, Any]:
    auth = _errors(401)
    body_errors = _errors(400, 401, 413, 422)
    return {
        "/v1/secrets": {
            "post": {
                "summary": "Store or replace an org secret (Fernet-encrypted at rest; the value "
                "is never answered back); 409 when the server has no ACTIONCAGE_SECRETS_KEY",
                "requestBody": _body("SecretInput"),
                "responses": {
                    "201": _json("Secret", "Stored"),
                    "200": _json("Secret", "Replaced"),
                    **_errors(400, 401, 409, 413, 422),
                },
            },
            "get": {
                "summary": "The org's secrets: names, times and the actions that use them",
                "responses": {"200": _json("SecretList", "The secrets"), **auth},
            },
        },
        "/v1/secrets/{name}": {
            "parameters": [_path_param("name", "the secret's name")],
            "delete": {
                "summary": "Remove an org secret",
                "responses": {"204": {"description": "Removed"}, **_errors(401, 404)},
            },
        },
        "/v1/tools": {
            "get": {
                "summary": "The org's actions as tool definitions: MCP, OpenAI Responses "
                "function tools or Anthropic tools, each strict only when its schema meets the "
                "provider's strict mode (reasons when not)",
                "parameters": [
                    {
                        "name": "format",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "enum": ["mcp", "openai", "anthropic"]},
                    }
                ],
                "responses": {"200": _json("ToolExport", "The tools"), **_errors(401, 422)},
            }
        },
        "/v1/actions": {
            "post": {
                "summary": "Create an action",
                "requestBody": _body("ActionInput"),
                "responses": {"201": _json("Action", "Created"), **body_errors, **_errors(409)},
            },
            "get": {
                "summary": "List actions",
                "responses": {"200": _json("ActionList", "Actions"), **auth},
            },
        },
        "/v1/actions/{actionRef}": {
            "parameters": [_ACTION_REF],
            "get": {
                "summary": "Get an action by id or name",
                "responses": {"200": _json("Action", "The action"), **_errors(401, 404)},
            },
            "patch": {
                "summary": "Save a new version",
                "requestBody": _body("ActionInput"),
                "responses": {
                    "200": _json("Action", "Updated"),
                    **body_errors,
                    **_errors(404, 409),
                },
            },
            "delete": {
                "summary": "Delete an action (its runs stay)",
                "responses": {"204": {"description": "Deleted"}, **_errors(401, 404)},
            },
        },
        "/v1/actions/{actionRef}/execute": {
            "parameters": [_ACTION_REF],
            "post": {
                "summary": "Run the action in a new sandbox (or make its API call)",
                "parameters": [_IDEMPOTENCY_KEY],
                "requestBody": _body("ExecuteRequest"),
                "responses": {
                    "200": _json("Run", "The run: ok, or a failure of the script or the call"),
                    "202": _json("Waiting", "Still running after waitMs"),
                    "422": _json(
                        _either("Run", "Error"),
                        "A Run with error invalid_args (nothing ran), or an Error for a "
                        "malformed body",
                    ),
                    "503": _json(
                        _either("Run", "Error"),
                        "A Run with error sandbox_error (no run could be produced), or an "
                        "Error when no sandbox or worker is available",
                    ),
                    **_errors(400, 401, 404, 409, 413, 429),
                },
            },
        },
        "/v1/conversations": {
            "post": {
                "summary": "Create a conversation; its webhook.conversation_start actions run",
                "requestBody": _body("ConversationInput"),
                "responses": {
                    "201": _json("ConversationWithRuns", "Created"),
                    **body_errors,
                    **_errors(409, 429, 503),
                },
            },
        },
        "/v1/conversations/{conversationId}": {
            "parameters": [_path_param("conversationId")],
            "get": {
                "summary": "Get a conversation",
                "responses": {
                    "200": _json("Conversation", "The conversation"),
                    **_errors(401, 404),
                },
            },
        },
        "/v1/conversations/{conversationId}/end": {
            "parameters": [_path_param("conversationId")],
            "post": {
                "summary": "End a conversation; its webhook.conversation_end actions run",
                "responses": {
                    "200": _json("ConversationWithRuns", "Ended"),
                    **_errors(401, 404, 409, 429, 503),
                },
            },
        },
        "/v1/webhook-secret": {
            "get": {
                "summary": "The org's secret for callback signatures (X-Actioncage-Signature)",
                "responses": {"200": _json("WebhookSecret", "The secret"), **auth},
            }
        },
        "/v1/runs": {
            "get": {
                "summary": "List runs, newest first (filters and keyset paging)",
                "parameters": _RUNS_QUERY,
                "responses": {"200": _json("RunList", "A page of runs"), **_errors(401, 422)},
            },
        },
        "/v1/runs/{runId}": {
            "parameters": [_path_param("runId")],
            "get": {
                "summary": "Get a run's audit record",
                "responses": {"200": _json("Run", "The run"), **_errors(401, 404)},
            },
        },
        "/v1/policy": {
            "get": {
                "summary": "The effective sandbox settings: container options, seccomp hash, "
                "image digest, limits, the org's ceilings and its egress ceiling",
                "responses": {
                    "200": _json("PolicyDescription", "The policy"),
                    **_errors(401, 503),
                },
            },
        },
    }


def _dashboard_paths() -> dict[str, Any]:
    session: list[dict[str, list[str]]] = [{"session": []}]
    signed_out = _redirect("Not signed in: to /login")

    def page_errors(*codes: int) -> dict[str, Any]:
        # A browser (Accept: text/html) gets an HTML error page, other clients the JSON error.
        return {
            str(code): {
                "description": "An error page (browsers) or the JSON error",
                "content": {
                    "application/json": {"schema": ref("Error")},
                    _HTML: {"schema": {"type": "string"}},
                },
            }
            for code in codes
        }

    def page(summary: str, *errors: int, params: list[Any] | None = None) -> dict[str, Any]:
        op: dict[str, Any] = {
            "summary": summary,
            "security": session,
            "responses": {
                "200": _html("The page"),
                "302": signed_out,
                **page_errors(*errors, 500),
            },
        }
        if params:
            op["parameters"] = params
        return op

    def form(summary: str, ok: dict[str, Any], *errors: int) -> dict[str, Any]:
        return {
            "summary": summary,
            "security": session,
            "requestBody": {
                "required": True,
                "content": {
                    "application/x-www-form-urlencoded": {
                        "schema": {"type": "object", "properties": {"csrf": {"type": "string"}}}
                    }
                },
            },
            "responses": {**ok, **page_errors(401, 403, *errors, 500)},
        }

    def query(name: str, schema: dict[str, Any]) -> dict[str, Any]:
        return {"name": name, "in": "query", "required": False, "schema": schema}

    def ui(summary: str, body: str, ok: dict[str, Any], *errors: int) -> dict[str, Any]:
        return {
            "summary": summary,
            "security": session,
            "parameters": [_header("X-CSRF-Token", True, "the page's CSRF token")],
            "requestBody": _body(body),
            "responses": {**ok, **_errors(400, 401, 403, 413, 422, *errors)},
        }

    action_id = _path_param("actionId")
    return {
        "/login": {
            "get": {
                "summary": "The sign-in page",
                "security": [],
                "responses": {"200": _html("The form")},
            },
            "post": {
                "summary": "Sign in with an API key (form: api_key, csrf)",
                "security": [],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/x-www-form-urlencoded": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "api_key": {"type": "string"},
                                    "csrf": {"type": "string"},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "302": _redirect("Signed in: to /"),
                    "401": _html("The form again, with the reason"),
                    **page_errors(403),
                },
            },
        },
        "/logout": {
            "post": {
                "summary": "Sign out",
                "security": session,
                "responses": {"302": _redirect("Signed out: to /login"), **page_errors(403)},
            }
        },
        "/": {"get": page("The org's actions")},
        "/secrets": {
            "get": page("The org's secrets (names, the actions using them) and a form"),
            "post": {
                "summary": "Set a secret (form: name, value, csrf); the value is write-only",
                "security": session,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/x-www-form-urlencoded": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "name": {"type": "string"},
                                    "value": {"type": "string", "writeOnly": True},
                                    "csrf": {"type": "string"},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "303": _redirect("Saved: to /secrets"),
                    "409": _html("The page, saying secrets are off"),
                    "422": _html("The page with the reason"),
                    **_errors(401, 403, 413),
                },
            },
        },
        "/secrets/{name}/delete": {
            "parameters": [_path_param("name")],
            "post": {
                "summary": "Delete a secret (form: csrf)",
                "security": session,
                "responses": {"303": _redirect("Deleted: to /secrets"), **_errors(401, 403, 404)},
            },
        },
        "/actions/new": {
            "get": page(
                "The editor for a new action",
                params=[
                    {
                        "name": "type",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "enum": ["python", "api"]},
                    }
                ],
            )
        },
        "/actions/{actionId}": {
            "parameters": [action_id],
            "get": page("The editor: definition, policy within the org's ceiling, test panel", 404),
        },
        "/actions/{actionId}/runs": {
            "parameters": [action_id],
            "get": {
                "summary": "The action's run history: the runs page filtered to it",
                "security": session,
                "parameters": [
                    query("status", {"type": "string"}),
                    query("since", {"type": "string"}),
                ],
                "responses": {"302": _redirect("To /runs?action=<actionId>")},
            },
        },
        "/runs": {
            "get": page(
                "Runs across the org's actions, newest first",
                404,
                422,
                params=[
                    query("action", {"type": "string", "description": "an action id or name"}),
                    query(
                        "status", {"type": "string", "description": "ok, error or an error type"}
                    ),
                    query("since", {"type": "string", "enum": ["1h", "24h", "7d"]}),
                ],
            )
        },
        "/runs/{runId}": {
            "parameters": [_path_param("runId")],
            "get": page(
                "A run's record: action name and version, policy, effects, egress attempts, "
                "the code with the failing line marked, logs",
                404,
            ),
        },
        "/conversations": {"get": page("The org's conversations, most recently updated first")},
        "/conversations/{conversationId}": {
            "parameters": [_path_param("conversationId")],
            "get": page("A conversation: messages, metadata, tags, events, hand-off, runs", 404),
        },
        "/keys": {
            "get": page("The org's API keys"),
            "post": form("Create a key; the page shows its secret once", {"200": _html("Keys")}),
        },
        "/keys/{keyId}/revoke": {
            "parameters": [_path_param("keyId")],
            "post": form(
                "Revoke one of the org's keys (the session's own: signed out)",
                {
                    "200": _html("Keys, with the key revoked"),
                    "302": _redirect("The session's own key was revoked: to /login"),
                },
                404,
            ),
        },
        "/policy": {"get": page("The org's sandbox defaults, ceilings and egress ceiling")},
        "/ui/conversations": {
            "post": ui(
                "Create a conversation (the test panel's offer)",
                "ConversationInput",
                {"201": _json("ConversationWithRuns", "Created")},
                409,
                429,
                503,
            ),
        },
        "/ui/actions": {
            "post": ui(
                "Create an action (the page's save)",
                "ActionInput",
                {"201": _json("Action", "Created")},
                409,
            ),
        },
        "/ui/actions/{actionId}": {
            "parameters": [action_id],
            "patch": ui(
                "Save a new version", "ActionInput", {"200": _json("Action", "Updated")}, 404, 409
            ),
        },
        "/ui/actions/{actionId}/test": {
            "parameters": [action_id],
            "post": ui(
                "A test run: effects shown, applied only with applyEffects",
                "DashboardTestRequest",
                {"200": _json("Run", "The run, whatever its outcome")},
                404,
                429,
                503,
            ),
        },
        "/dashboard-static/{filename}": {
            "parameters": [_path_param("filename")],
            "get": {
                "summary": "The dashboard's scripts (editor.js: the CodeMirror bundle), style "
                "sheet and icon",
                "security": [],
                "responses": {
                    "200": {
                        "description": "The file",
                        "content": {
                            "text/javascript; charset=utf-8": {"schema": {"type": "string"}},
                            "text/css; charset=utf-8": {"schema": {"type": "string"}},
                            "image/svg+xml": {"schema": {"type": "string"}},
                        },
                    },
                    "304": {"description": "Not modified"},
                    **_errors(404),
                },
            },
        },
    }


def _front_door_paths() -> dict[str, Any]:
    rasa: list[dict[str, list[str]]] = [{"bearer": []}, {"rasaToken": []}]

    def rasa_errors(*codes: int) -> dict[str, Any]:
        return {str(c): _json("RasaError", "Rasa SDK error shape") for c in codes}

    def botpress_errors(*codes: int) -> dict[str, Any]:
        return {str(c): _json("BotpressError", "Botpress error shape") for c in codes}

    return {
        "/webhook": {
            "post": {
                "summary": "Rasa action server: run next_action (404 unknown action, 400 "
                "rejected, 449 the domain is needed)",
                "security": rasa,
                "parameters": [_IDEMPOTENCY_KEY],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                "responses": {
                    "200": _json("RasaWebhookResponse", "Events and responses"),
                    **rasa_errors(400, 401, 404, 409, 422, 429, 449, 503),
                },
            }
        },
        "/actions": {
            "get": {
                "summary": "Rasa action server: the action names",
                "security": rasa,
                "responses": {
                    "200": _json("RasaActionList", "Actions"),
                    **rasa_errors(401),
                },
            }
        },
        "/v1/chat/actions": {
            "post": {
                "summary": "Botpress runtime callAction",
                "parameters": [
                    _header("x-bot-id", True),
                    _header("x-integration-id", False),
                    _header("x-integration-alias", False),
                    _IDEMPOTENCY_KEY,
                ],
                "requestBody": _body("BotpressCallRequest"),
                "responses": {
                    "200": _json("BotpressCallResponse", "The action's output"),
                    **botpress_errors(400, 401, 404, 405, 409, 413, 415, 429, 500, 504),
                },
            }
        },
    }


def _mcp_paths() -> dict[str, Any]:
    def rpc(description: str) -> dict[str, Any]:
        return _json("JsonRpcMessage", description)

    stateless = {
        "summary": "Not offered: the MCP server is stateless (405, Allow: POST)",
        "responses": {"405": rpc("A JSON-RPC error"), "401": rpc("A JSON-RPC error")},
    }
    return {
        "/mcp": {
            "post": {
                "summary": "Model Context Protocol, streamable HTTP (revisions 2026-07-28 and "
                "2025-11-25): the org's actions as tools; tools/call runs one",
                "parameters": [
                    _header("MCP-Protocol-Version", False),
                    _header("Origin", False, "refused (403) unless this server's own or allowed"),
                    _IDEMPOTENCY_KEY,
                ],
                "requestBody": _body("JsonRpcMessage"),
                "responses": {
                    "200": rpc("The JSON-RPC response (a failed run is a result with isError)"),
                    "202": {"description": "A notification, taken"},
                    **{
                        str(code): rpc("A JSON-RPC error")
                        for code in (400, 401, 403, 404, 406, 409, 413, 415, 429, 500, 502, 503)
                    },
                },
            },
            "get": stateless,
            "delete": stateless,
        }
    }


@cache
def _document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "actioncage", "version": actioncage.__version__},
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "rasaToken": {"type": "apiKey", "in": "query", "name": "token"},
                "session": {"type": "apiKey", "in": "cookie", "name": "session"},
            },
            "responses": {"Error": _json("Error", "An error")},
            "schemas": SCHEMAS,
        },
        "security": [{"bearer": []}],
        "paths": {
            **_meta_paths(),
            **_native_paths(),
            **_front_door_paths(),
            **_mcp_paths(),
            **_dashboard_paths(),
        },
    }


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route (a copy the caller may change)."""
    return copy.deepcopy(_document())
