"""web/: The JSON Schemas of every request and response body, defined once: wire.py validates
requests with them, and openapi.py builds /openapi.json from them.

JSON Schema 2020-12, as OpenAPI 3.1 takes it. A property's ``x-message`` is the message a
caller reads when that property is wrong; ``check`` names the field by its dotted path.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from actioncage.actions.validation import CONVERSATION_ID_RE, NAME_RE
from actioncage.errors import ValidationFailedError
from actioncage.models import EffectKind, ErrorType, InvocationTrigger, Isolation

_BASE = "urn:actioncage:schemas"
MAX_USER_TEXT = 2048
MAX_MESSAGES = 1000
MAX_WAIT_MS = 600_000
MAX_EGRESS_PATTERNS = 100


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` or null."""
    return {"anyOf": [schema, {"type": "null"}]}


def _closed(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    """An object with exactly these properties (the ``required`` ones always present)."""
    schema: dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
    }
    if required:
        schema["required"] = list(required)
    return schema


def _all_required(properties: dict[str, Any]) -> dict[str, Any]:
    """A response object: every property always present, nothing else."""
    return _closed(properties, tuple(properties))


_STRING = {"type": "string"}
_INTEGER = {"type": "integer"}
_NUMBER = {"type": "number"}
_BOOLEAN = {"type": "boolean"}
_ANY_OBJECT = {"type": "object"}
_DATE_TIME = {"type": "string", "format": "date-time"}
_CONVERSATION_ID = {
    "type": "string",
    "pattern": CONVERSATION_ID_RE.pattern,
    "x-message": "must be 1-128 letters, digits or _.:@+- starting with a letter or digit",
}
_USER_TEXT = {
    "type": ["string", "null"],
    "maxLength": MAX_USER_TEXT,
    "x-message": f"must be a string of at most {MAX_USER_TEXT} characters",
}
_STRING_MAP = {
    "type": "object",
    "maxProperties": 50,
    "additionalProperties": {"type": "string", "x-message": "must be a string"},
    "x-message": "must be an object of at most 50 string values",
}
_TRIGGER = {
    "type": "string",
    "enum": [str(t) for t in InvocationTrigger],
    "x-message": "must be one of " + ", ".join(str(t) for t in InvocationTrigger),
}

_ISOLATION = {
    "type": "string",
    "enum": [str(i) for i in Isolation],
    "description": "the isolation tier, from weakest: " + ", ".join(Isolation),
    "x-message": "must be one of " + ", ".join(Isolation),
}

# --- requests (and the parts of responses they share) -----------------------------------------

_POLICY = _closed(
    {
        "timeoutMs": {"type": ["integer", "null"], "minimum": 1, "x-message": "must be a number"},
        "memoryMb": {"type": ["integer", "null"], "minimum": 16, "x-message": "must be a number"},
        "cpus": {"type": ["number", "null"], "minimum": 0.01, "x-message": "must be a number"},
        "egress": {
            "type": ["array", "null"],
            "maxItems": MAX_EGRESS_PATTERNS,
            "items": {"type": "string"},
            "description": "host patterns (api.example.com, *.example.com, optional :port) "
            "the run may reach, within the org's egress ceiling",
            "x-message": f"must be a list of at most {MAX_EGRESS_PATTERNS} host patterns",
        },
        "isolation": {
            "anyOf": [_ISOLATION, {"type": "null"}],
            "description": "the run's isolation tier (null: the operator's default); at least "
            "the org's minimum",
            "x-message": "must be one of " + ", ".join(Isolation),
        },
    }
)

_ENDPOINT = {
    **_closed(
        {
            "url": {
                "type": "string",
                "minLength": 1,
                "maxLength": 2048,
                "x-message": "must be a URL of at most 2048 characters",
            },
            "method": {
                "type": "string",
                "enum": ["GET", "POST", "PUT", "DELETE", "get", "post", "put", "delete"],
                "x-message": "must be GET, POST, PUT or DELETE",
            },
            "headers": {
                **_STRING_MAP,
                "description": "secret values read back as ***; sending *** keeps them",
            },
            "query": _STRING_MAP,
            "payload": {},
            "timeoutMs": {
                "type": ["integer", "null"],
                "minimum": 1,
                "x-message": "must be a positive integer",
            },
        },
        ("url",),
    ),
    "description": "type api only; every $variable becomes a required argument",
}

_PARAMETERS = {
    "description": "the arguments' JSON Schema, or false for none",
    "anyOf": [{"type": "object"}, {"const": False}, {"type": "null"}],
    "x-message": "must be a JSON Schema object or false",
}

_ACTION_INPUT = _closed(
    {
        "name": {
            "type": "string",
            "pattern": NAME_RE.pattern,
            "x-message": "must start with a letter and hold only letters, digits and "
            "underscores, at most 64 characters",
        },
        "type": {
            "type": "string",
            "enum": ["python", "api"],
            "x-message": "must be 'python' or 'api'",
        },
        "code": {"type": "string", "x-message": "must be a string"},
        "parameters": _PARAMETERS,
        "description": {
            "type": ["string", "null"],
            "minLength": 1,
            "maxLength": 512,
            "x-message": "must be 1-512 characters",
        },
        "policy": {"anyOf": [ref("Policy"), {"type": "null"}], "x-message": "must be an object"},
        "endpoint": {"anyOf": [ref("Endpoint"), {"type": "null"}]},
        "userWaitingText": _USER_TEXT,
        "userSuccessText": _USER_TEXT,
        "userErrorText": _USER_TEXT,
        "invocationTrigger": {
            **_TRIGGER,
            "type": ["string", "null"],
            "enum": [*_TRIGGER["enum"], None],
            "description": "null: user_query",
        },
        "returns": {
            "description": "the output's JSON Schema (a mismatch is invalid_return), or null",
            "anyOf": [{"type": "object"}, {"const": False}, {"type": "null"}],
            "x-message": "must be a JSON Schema object or null",
        },
        "secrets": {
            "description": "names of the org's secrets the action reads (get_secret, $secret.name)",
            "type": ["array", "null"],
            "maxItems": 32,
            "items": {"type": "string", "pattern": NAME_RE.pattern},
            "x-message": "must be a list of secret names (letters, digits, underscores)",
        },
    }
)

_EXECUTE_PROPERTIES: dict[str, Any] = {
    "args": {"type": ["object", "null"], "x-message": "must be an object"},
    "conversationId": {**_CONVERSATION_ID, "type": ["string", "null"]},
    "waitMs": {
        "type": ["integer", "null"],
        "minimum": 0,
        "maximum": MAX_WAIT_MS,
        "x-message": f"must be an integer of 0-{MAX_WAIT_MS}",
        "description": "answer 202 with the run's id when it is still going after this long",
    },
    "callbackUrl": {
        "type": ["string", "null"],
        "format": "uri",
        "x-message": "must be a URL string",
        "description": "the finished run is POSTed here, signed (X-Actioncage-Signature)",
    },
}

_CONVERSATION_INPUT = _closed(
    {
        "id": {**_CONVERSATION_ID, "type": ["string", "null"]},
        "messages": {
            "type": "array",
            "maxItems": MAX_MESSAGES,
            "items": {
                "type": "object",
                "required": ["role", "text"],
                "properties": {"role": _STRING, "text": _STRING},
                "x-message": "must be an object with string role and text",
            },
            "x-message": f"must be a list of at most {MAX_MESSAGES}",
        },
        "metadata": {"type": "object", "x-message": "must be an object"},
        "tags": {
            "type": "array",
            "items": {"type": "string", "minLength": 1, "maxLength": 128},
            "x-message": "must be a list of strings of 1-128 characters",
        },
    }
)

# --- responses ---------------------------------------------------------------------------------

_ERROR = _closed(
    {
        "error": _closed(
            {
                "type": _STRING,
                "message": _STRING,
                "field": _STRING,
                "line": _INTEGER,
            },
            ("type", "message"),
        )
    },
    ("error",),
)

_ACTION = _all_required(
    {
        "id": _STRING,
        "orgId": _STRING,
        "name": _STRING,
        "type": {"type": "string", "enum": ["python", "api"]},
        "version": _INTEGER,
        "code": _STRING,
        "parameters": {"anyOf": [{"type": "object"}, {"const": False}]},
        "description": nullable(_STRING),
        "endpoint": nullable(ref("Endpoint")),
        "policy": ref("Policy"),
        "createdBy": nullable(_STRING),
        "createdAt": _DATE_TIME,
        "updatedBy": nullable(_STRING),
        "updatedAt": _DATE_TIME,
        "userWaitingText": nullable(_STRING),
        "userSuccessText": nullable(_STRING),
        "userErrorText": nullable(_STRING),
        "invocationTrigger": {"type": "string", "enum": [str(t) for t in InvocationTrigger]},
        "returns": nullable(_ANY_OBJECT),
        "secrets": {"type": "array", "items": _STRING},
    }
)

_RUN_ERROR = _closed(
    {
        "type": {"type": "string", "enum": [str(t) for t in ErrorType]},
        "message": _STRING,
        "traceback": _STRING,
    },
    ("type", "message"),
)

_EGRESS_ATTEMPT = _all_required(
    {
        "host": _STRING,
        "port": _INTEGER,
        "allowed": _BOOLEAN,
        "reason": nullable(_STRING),
        "address": nullable(_STRING),
        "bytesOut": _INTEGER,
        "bytesIn": _INTEGER,
    }
)

_RUN = _all_required(
    {
        "runId": _STRING,
        "actionId": _STRING,
        "actionVersion": _INTEGER,
        "conversationId": nullable(_STRING),
        "status": {"type": "string", "enum": ["ok", "error", "running"]},
        "output": {},
        "error": nullable(ref("RunError")),
        "effects": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["kind"],
                "properties": {"kind": {"type": "string", "enum": [str(k) for k in EffectKind]}},
            },
        },
        "effectsApplied": _BOOLEAN,
        "durationMs": _INTEGER,
        "logs": _STRING,
        "startedAt": _DATE_TIME,
        "finishedAt": nullable(_DATE_TIME),
        "imageDigest": nullable(_STRING),
        "policyHash": nullable(_STRING),
        "egress": {"type": "array", "items": ref("EgressAttempt")},
        "callerKeyId": nullable(_STRING),
        "args": nullable(_ANY_OBJECT),
        "secrets": {
            "type": "array",
            "items": _STRING,
            "description": "the names of the secrets the run was given",
        },
        "executor": nullable(_STRING),
        "isolation": nullable(_ISOLATION),
        "runtimeVersion": nullable(_STRING),
    }
)

_RUN_REF = _all_required(
    {"runId": _STRING, "actionId": _STRING, "status": {"type": "string", "enum": ["ok", "error"]}}
)

_CONVERSATION_PROPERTIES: dict[str, Any] = {
    "id": _STRING,
    "messages": {"type": "array", "items": _ANY_OBJECT},
    "metadata": _ANY_OBJECT,
    "tags": {"type": "array", "items": _STRING},
    "events": {"type": "array", "items": {}},
    "handedOff": _BOOLEAN,
    "handOffReason": nullable(_STRING),
    "createdAt": _DATE_TIME,
    "updatedAt": _DATE_TIME,
    "endedAt": nullable(_DATE_TIME),
}

_ORG_POLICY = _all_required(
    {
        "maxTimeoutMs": nullable(_INTEGER),
        "maxMemoryMb": nullable(_INTEGER),
        "maxCpus": nullable(_NUMBER),
        "restricted": _BOOLEAN,
        "runsPerMinute": nullable(_INTEGER),
        "concurrentRuns": nullable(_INTEGER),
        "egress": {
            "anyOf": [{"type": "array", "items": _STRING}, {"type": "null"}],
            "description": "null: the org has no egress ceiling of its own (the operator's "
            "default applies)",
        },
        "minIsolation": nullable(_ISOLATION),
    }
)

_TIER = _all_required(
    {
        "isolation": _ISOLATION,
        "available": _BOOLEAN,
        "runtimeVersion": nullable(_STRING),
        "flags": {"type": "array", "items": _STRING},
        "reason": nullable(_STRING),
    }
)

_POLICY_DESCRIPTION = _all_required(
    {
        "limits": _all_required(
            {
                "timeoutMs": _INTEGER,
                "memoryMb": _INTEGER,
                "cpus": _NUMBER,
                "pids": _INTEGER,
                "tmpfsMb": _INTEGER,
                "maxOutputBytes": _INTEGER,
                "maxHostCalls": _INTEGER,
            }
        ),
        "maxima": _all_required({"timeoutMs": _INTEGER, "memoryMb": _INTEGER, "cpus": _NUMBER}),
        "container": {
            "type": "object",
            "description": "the engine's create options, snake_case as docker's client takes them",
        },
        "seccompSha256": _STRING,
        "policyHash": _STRING,
        "imageDigest": _STRING,
        "orgPolicy": nullable(ref("OrgPolicy")),
        "egressCeiling": {
            "type": "array",
            "items": _STRING,
            "description": "the hosts the org's scripts and API actions may reach at most",
        },
        "isolation": {**_ISOLATION, "description": "the tier of an action that names none"},
        "tiers": {
            "type": "array",
            "items": ref("Tier"),
            "description": "every isolation tier, weakest first: whether it runs here, its "
            "runtime's version and the flags its sandboxes run with",
        },
    }
)

_WORKER = _all_required(
    {
        "name": _STRING,
        "host": _STRING,
        "slots": _INTEGER,
        "busy": _INTEGER,
        "warm": {"type": "object", "additionalProperties": _INTEGER},
        "lastHeartbeatAgoS": _NUMBER,
    }
)

# With executor workers (ACTIONCAGE_BROKER_URL), also the broker and the live workers.
_HEALTH = _closed(
    {
        "status": {"type": "string", "enum": ["ok", "degraded"]},
        "engine": _BOOLEAN,
        "version": _STRING,
        "broker": _BOOLEAN,
        "workers": {"type": "array", "items": ref("Worker")},
    },
    ("status", "engine", "version"),
)

# The Rasa action server's and Botpress's shapes (their protocols, not ours).
_RASA_ERROR = _closed(
    {"error": _STRING, "action_name": nullable(_STRING)}, ("error", "action_name")
)
_RASA_WEBHOOK_RESPONSE = _all_required(
    {
        "events": {"type": "array", "items": _ANY_OBJECT},
        "responses": {"type": "array", "items": _ANY_OBJECT},
    }
)
_BOTPRESS_CALL = _closed(
    {
        "type": {
            "type": "string",
            "minLength": 1,
            "maxLength": 200,
            "x-message": "must be a string of 1-200 characters",
            "description": "the action's name, optionally after 'alias:'",
        },
        "input": {"type": "object", "x-message": "must be an object"},
    },
    ("type", "input"),
)
_BOTPRESS_ERROR = _all_required(
    {"id": _STRING, "code": _INTEGER, "type": _STRING, "message": _STRING}
)

SCHEMAS: dict[str, dict[str, Any]] = {
    "Error": _ERROR,
    "Policy": _POLICY,
    "Endpoint": _ENDPOINT,
    "ActionInput": _ACTION_INPUT,
    "Action": _ACTION,
    "ActionList": _all_required({"actions": {"type": "array", "items": ref("Action")}}),
    "ExecuteRequest": _closed(_EXECUTE_PROPERTIES),
    "DashboardTestRequest": _closed(
        {
            "args": _EXECUTE_PROPERTIES["args"],
            "conversationId": _EXECUTE_PROPERTIES["conversationId"],
            "applyEffects": {
                "type": "boolean",
                "x-message": "must be true or false",
                "description": "apply the run's effects (default: a dry run)",
            },
        }
    ),
    "RunError": _RUN_ERROR,
    "EgressAttempt": _EGRESS_ATTEMPT,
    "Run": _RUN,
    "RunList": _all_required(
        {"runs": {"type": "array", "items": ref("Run")}, "nextCursor": nullable(_STRING)}
    ),
    "RunRef": _RUN_REF,
    "Waiting": _all_required(
        {
            "runId": _STRING,
            "status": {"const": "running"},
            "userWaitingText": nullable(_STRING),
        }
    ),
    "ConversationInput": _CONVERSATION_INPUT,
    "Conversation": _all_required(_CONVERSATION_PROPERTIES),
    "ConversationWithRuns": _all_required(
        {
            **_CONVERSATION_PROPERTIES,
            "triggeredRuns": {
                "type": "array",
                "items": ref("RunRef"),
                "description": "the runs its start or end set off",
            },
        }
    ),
    "WebhookSecret": _all_required({"webhookSecret": _STRING, "signatureHeader": _STRING}),
    "OrgPolicy": _ORG_POLICY,
    "PolicyDescription": _POLICY_DESCRIPTION,
    "Tier": _TIER,
    "Health": _HEALTH,
    "Worker": _WORKER,
    "RasaError": _RASA_ERROR,
    "RasaWebhookResponse": _RASA_WEBHOOK_RESPONSE,
    "RasaActionList": {"type": "array", "items": _all_required({"name": _STRING})},
    "BotpressCallRequest": _BOTPRESS_CALL,
    "BotpressCallResponse": _all_required(
        {"output": _ANY_OBJECT, "meta": _all_required({"cached": _BOOLEAN})}
    ),
    "BotpressError": _BOTPRESS_ERROR,
    "SecretInput": _closed(
        {
            "name": {
                "type": "string",
                "pattern": NAME_RE.pattern,
                "x-message": "must start with a letter and hold only letters, digits and "
                "underscores, at most 64 characters",
            },
            "value": {
                "type": "string",
                "minLength": 8,
                "maxLength": 16384,
                "writeOnly": True,
                "x-message": "must be a string of 8-16384 characters",
            },
        },
        ("name", "value"),
    ),
    "Secret": _all_required(
        {
            "name": _STRING,
            "createdAt": _DATE_TIME,
            "updatedAt": _DATE_TIME,
            "usedBy": {
                "type": "array",
                "items": _STRING,
                "description": "the names of the org's actions that declare it",
            },
        }
    ),
    "SecretList": _all_required({"secrets": {"type": "array", "items": ref("Secret")}}),
    "ToolExport": _closed(
        {
            "format": {"type": "string", "enum": ["mcp", "openai", "anthropic"]},
            "tools": {
                "type": "array",
                "items": _ANY_OBJECT,
                "description": "the provider's own tool definitions, to pass as they are",
            },
            "strictness": {
                "type": "array",
                "description": "openai and anthropic: whether each tool meets the provider's "
                "strict mode (its own strict flag) and why not",
                "items": _all_required(
                    {
                        "name": _STRING,
                        "strict": _BOOLEAN,
                        "reasons": {"type": "array", "items": _STRING},
                    }
                ),
            },
        },
        ("format", "tools"),
    ),
    "JsonRpcMessage": {
        "description": "a JSON-RPC 2.0 message (MCP; see modelcontextprotocol.io)",
        "type": "object",
        "required": ["jsonrpc"],
        "properties": {
            "jsonrpc": {"const": "2.0"},
            "id": {"type": ["string", "integer", "null"]},
            "method": _STRING,
            "params": _ANY_OBJECT,
            "result": _ANY_OBJECT,
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": _INTEGER, "message": _STRING, "data": {}},
            },
        },
    },
}


@cache
def _registry() -> Registry[Any]:
    document = {"components": {"schemas": SCHEMAS}}
    resource = Resource.from_contents(document, default_specification=DRAFT202012)
    registry: Registry[Any] = Registry().with_resource(_BASE, resource)
    return registry


@cache
def _validator(name: str) -> Draft202012Validator:
    if name not in SCHEMAS:
        raise KeyError(name)
    schema = {"$ref": f"{_BASE}#/components/schemas/{name}"}
    return Draft202012Validator(schema, registry=_registry())


def _path(parts: Any) -> str:
    field = ""
    for part in parts:
        field += f"[{part}]" if isinstance(part, int) else f".{part}" if field else str(part)
    return field


def _problem(error: ValidationError) -> ValidationFailedError:
    """The caller's message for one schema violation, naming the field."""
    where = _path(error.absolute_path)
    instance = error.instance
    if error.validator == "additionalProperties" and isinstance(instance, dict):
        known = set(error.schema.get("properties", {}))
        extra = sorted(set(instance) - known)[0]
        field = f"{where}.{extra}" if where else extra
        return ValidationFailedError(f"unknown field {field!r}", field)
    if error.validator == "required" and isinstance(instance, dict):
        missing = next(n for n in error.validator_value if n not in instance)
        field = f"{where}.{missing}" if where else missing
        return ValidationFailedError(f"{field} is required", field)
    message = error.schema.get("x-message") if isinstance(error.schema, dict) else None
    if message is None and error.parent is not None and isinstance(error.parent.schema, dict):
        message = error.parent.schema.get("x-message")  # a branch of anyOf
    if message is None:
        message = f"is not valid ({error.validator}: {error.validator_value!r})"
    if not where:
        return ValidationFailedError(f"the body {message}", None)
    return ValidationFailedError(f"{where} {message}", where)


def check(name: str, body: Any) -> None:
    """Validate ``body`` against the schema ``name``.

    Raises ValidationFailedError naming the first wrong field (dotted path) and what it must be.
    """
    error = best_match(_validator(name).iter_errors(body))
    if error is not None:
        raise _problem(error)


def is_valid(name: str, body: Any) -> bool:
    """True when ``body`` fits the schema ``name``."""
    return bool(_validator(name).is_valid(body))
