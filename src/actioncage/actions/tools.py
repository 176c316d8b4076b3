"""actions/: an org's actions as tool definitions (MCP, OpenAI Responses function tools,
Anthropic tools), each with that provider's strict-mode verdict and its reasons.

The strict-mode rules are the providers' documented subsets of JSON Schema (late 2026):

OpenAI (Structured Outputs, ``strict: true`` on a function tool): the root is an object and
not ``anyOf``; every object sets ``additionalProperties: false`` and lists every property in
``required`` (optional means a ``null`` type); supported keywords are the types, ``enum``,
``const``, ``anyOf``, ``$ref``/``$defs``, string ``pattern``/``format``, number bounds and
``multipleOf``, array ``minItems``/``maxItems``; ``allOf``, ``not``, ``oneOf``, ``if``/
``then``/``else``, ``dependent*`` and the other object/array keywords are not; at most 5000
properties, 10 levels of nesting and 1000 enum values.

Anthropic (``strict: true`` on a tool): every object sets ``additionalProperties: false``;
no numeric bounds (``minimum``, ``maximum``, ``exclusive*``, ``multipleOf``), no string
lengths, ``minItems`` only 0 or 1 and no ``maxItems``; ``format`` only date-time, time, date,
duration, email, hostname, uri, ipv4, ipv6, uuid; ``allOf`` without ``$ref``; no ``oneOf``,
``not`` or conditionals; at most 24 optional properties and 16 union-typed properties (per
request, so one tool past them can never be strict).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from actioncage.models import Action


class ToolFormat:
    MCP = "mcp"
    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    ALL = (MCP, OPENAI, ANTHROPIC)


def input_schema(action: Action) -> dict[str, Any]:
    """The action's ``parameters`` with an object at the root (none: the empty object
    schema, since an action without parameters checks no arguments)."""
    if action.parameters is None:
        return {"type": "object"}
    return {"type": "object", **action.parameters}


def wraps_output(action: Action) -> bool:
    """Whether structured results hold the output under ``result``: tools' output schemas
    are objects, so a ``returns`` that is not one is wrapped."""
    return action.returns is not None and action.returns.get("type") != "object"


def output_schema(action: Action) -> dict[str, Any] | None:
    """The tool's output schema: the action's ``returns`` (wrapped when not an object)."""
    if action.returns is None:
        return None
    if wraps_output(action):
        return {"type": "object", "properties": {"result": action.returns}, "required": ["result"]}
    return action.returns


def structured_output(action: Action, output: Any) -> Any:
    """An output as a tool's structured result (an object; see wraps_output)."""
    if isinstance(output, dict) and not wraps_output(action):
        return output
    return {"result": output}


@dataclass(frozen=True)
class Verdict:
    """Whether a schema meets a provider's strict mode, and why not."""

    strict: bool
    reasons: tuple[str, ...]


def export(actions: list[Action], format_: str) -> dict[str, Any]:
    """The actions as ``format_``'s tool definitions: ``{format, tools}``, plus for openai and
    anthropic ``strictness`` (per tool: name, strict, reasons); each tool's own ``strict``
    is true only when its schema meets that provider's rules."""
    if format_ == ToolFormat.MCP:
        tools = []
        for action in actions:
            tool: dict[str, Any] = {"name": action.name, "inputSchema": input_schema(action)}
            if action.description is not None:
                tool["description"] = action.description
            schema = output_schema(action)
            if schema is not None:
                tool["outputSchema"] = schema
            tools.append(tool)
        return {"format": format_, "tools": tools}
    check = openai_strict if format_ == ToolFormat.OPENAI else anthropic_strict
    tools, strictness = [], []
    for action in actions:
        schema = _provider_schema(action)
        verdict = check(schema)
        if format_ == ToolFormat.OPENAI:
            tools.append(
                {
                    "type": "function",
                    "name": action.name,
                    "description": action.description or "",
                    "parameters": schema,
                    "strict": verdict.strict,
                }
            )
        else:
            tools.append(
                {
                    "name": action.name,
                    "description": action.description or "",
                    "input_schema": schema,
                    "strict": verdict.strict,
                }
            )
        strictness.append(
            {"name": action.name, "strict": verdict.strict, "reasons": list(verdict.reasons)}
        )
    return {"format": format_, "tools": tools, "strictness": strictness}


def _provider_schema(action: Action) -> dict[str, Any]:
    """An action without parameters takes none: the closed empty object, which both
    providers accept in strict mode."""
    if action.parameters is None:
        return {"type": "object", "properties": {}, "required": [], "additionalProperties": False}
    return input_schema(action)


# --- strict-mode checks ------------------------------------------------------------------

_ANNOTATIONS = {"description", "title", "$schema", "$id", "$comment", "examples", "default"}
_OPENAI_KEYWORDS = _ANNOTATIONS | {
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "enum",
    "const",
    "anyOf",
    "$ref",
    "$defs",
    "definitions",
    "pattern",
    "format",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minItems",
    "maxItems",
}
_ANTHROPIC_KEYWORDS = _ANNOTATIONS | {
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "enum",
    "const",
    "anyOf",
    "allOf",
    "$ref",
    "$defs",
    "definitions",
    "pattern",
    "format",
    "minItems",
}
_ANTHROPIC_FORMATS = {
    "date-time",
    "time",
    "date",
    "duration",
    "email",
    "hostname",
    "uri",
    "ipv4",
    "ipv6",
    "uuid",
}
_SUBSCHEMA_MAPS = ("properties", "$defs", "definitions")
_SUBSCHEMA_LISTS = ("anyOf", "allOf", "oneOf", "prefixItems")
_SUBSCHEMAS = ("items", "additionalProperties", "not", "if", "then", "else", "contains")


def _walk(schema: Any, path: str = "", depth: int = 0) -> Iterator[tuple[str, dict[str, Any], int]]:
    """Every schema object inside ``schema`` with its path and object nesting depth."""
    if not isinstance(schema, dict):
        return
    yield path or "(root)", schema, depth
    inner = depth + (1 if "properties" in schema else 0)
    for key in _SUBSCHEMA_MAPS:
        for name, sub in (schema.get(key) or {}).items():
            yield from _walk(sub, f"{path}/{key}/{name}", inner)
    for key in _SUBSCHEMA_LISTS:
        for i, sub in enumerate(schema.get(key) or []):
            yield from _walk(sub, f"{path}/{key}/{i}", inner)
    for key in _SUBSCHEMAS:
        if isinstance(schema.get(key), dict):
            yield from _walk(schema[key], f"{path}/{key}", inner)


def _is_object(schema: dict[str, Any]) -> bool:
    type_ = schema.get("type")
    return (
        type_ == "object"
        or (isinstance(type_, list) and "object" in type_)
        or ("properties" in schema)
    )


def _common(
    schema: dict[str, Any], allowed: set[str], extra: Callable[[str, dict[str, Any]], list[str]]
) -> list[str]:
    reasons = []
    for where, node, _ in _walk(schema):
        unsupported = sorted(set(node) - allowed)
        for keyword in unsupported:
            reasons.append(f"{where}: {keyword} is not supported")
        if _is_object(node) and node.get("additionalProperties") is not False:
            reasons.append(f"{where}: objects must set additionalProperties to false")
        reasons.extend(extra(where, node))
    return reasons


def openai_strict(schema: dict[str, Any]) -> Verdict:
    """Whether ``schema`` (a function's parameters) meets OpenAI's strict mode."""
    reasons = []
    if "anyOf" in schema:
        reasons.append("(root): the root must not be anyOf")
    properties = 0
    enum_values = 0

    def extra(where: str, node: dict[str, Any]) -> list[str]:
        nonlocal properties, enum_values
        problems = []
        props = node.get("properties") or {}
        properties += len(props)
        enum_values += len(node.get("enum") or [])
        missing = [name for name in props if name not in (node.get("required") or [])]
        if missing:
            problems.append(
                f"{where}: every property must be required (optional ones take a null "
                f"type): {', '.join(missing)}"
            )
        return problems

    reasons.extend(_common(schema, _OPENAI_KEYWORDS, extra))
    deepest = max(depth for _, _, depth in _walk(schema))
    if properties > 5000:
        reasons.append(f"{properties} properties, over the 5000 allowed")
    if deepest > 10:
        reasons.append(f"{deepest} levels of nested objects, over the 10 allowed")
    if enum_values > 1000:
        reasons.append(f"{enum_values} enum values, over the 1000 allowed")
    return Verdict(not reasons, tuple(reasons))


def anthropic_strict(schema: dict[str, Any]) -> Verdict:
    """Whether ``schema`` (a tool's input_schema) meets Anthropic's strict mode."""
    optional = 0
    unions = 0

    def extra(where: str, node: dict[str, Any]) -> list[str]:
        nonlocal optional, unions
        problems = []
        props = node.get("properties") or {}
        optional += sum(1 for name in props if name not in (node.get("required") or []))
        unions += sum(
            1
            for sub in props.values()
            if isinstance(sub, dict) and ("anyOf" in sub or isinstance(sub.get("type"), list))
        )
        if node.get("minItems", 0) not in (0, 1):
            problems.append(f"{where}: minItems may only be 0 or 1")
        fmt = node.get("format")
        if fmt is not None and fmt not in _ANTHROPIC_FORMATS:
            problems.append(f"{where}: format {fmt!r} is not supported")
        if any(isinstance(s, dict) and "$ref" in s for s in node.get("allOf") or []):
            problems.append(f"{where}: allOf with $ref is not supported")
        return problems

    reasons = _common(schema, _ANTHROPIC_KEYWORDS, extra)
    if optional > 24:
        reasons.append(f"{optional} optional properties, over the 24 allowed per request")
    if unions > 16:
        reasons.append(f"{unions} union-typed properties, over the 16 allowed per request")
    return Verdict(not reasons, tuple(reasons))
