"""actions/: Checks action code (failing line included) and args against the action's JSON
Schema."""

from __future__ import annotations

import ast
import re
from typing import Any

import jsonschema
from jsonschema.exceptions import SchemaError
from jsonschema.validators import validator_for

from actioncage.actions.restricted import check_restricted
from actioncage.errors import InvalidCodeError, ValidationFailedError
from actioncage.models import ActionType, OrgPolicy
from actioncage.sandbox.limits import check_policy
from actioncage.settings import Settings

NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
CONVERSATION_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@+-]{0,127}$")


def check_name(name: Any) -> str:
    """The name, if it is a letter then letters/digits/underscore, at most 64."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ValidationFailedError(
            "name must start with a letter and hold only letters, digits and underscores, "
            "at most 64 characters",
            field="name",
        )
    return name


def check_code(code: Any, max_code_bytes: int) -> str:
    """The code, if it compiles and defines a top-level ``execute_action(context)``.

    Raises InvalidCodeError with the failing line.
    """
    if not isinstance(code, str) or not code.strip():
        raise InvalidCodeError("code must be a non-empty string")
    if len(code.encode()) > max_code_bytes:
        raise InvalidCodeError(f"code is larger than {max_code_bytes} bytes")
    try:
        tree = ast.parse(code, filename="action.py")
        compile(tree, "action.py", "exec")
    except SyntaxError as exc:
        line = exc.lineno or 1
        raise InvalidCodeError(f"line {line}: {exc.msg}", line=line) from exc
    except ValueError as exc:  # null bytes
        raise InvalidCodeError(f"line 1: {exc}", line=1) from exc
    for node in tree.body:
        if isinstance(node, ast.AsyncFunctionDef) and node.name == "execute_action":
            raise InvalidCodeError(
                f"line {node.lineno}: execute_action must be a plain def, not async",
                line=node.lineno,
            )
        if isinstance(node, ast.FunctionDef) and node.name == "execute_action":
            args = node.args
            positional = args.posonlyargs + args.args
            if not positional and args.vararg is None:
                raise InvalidCodeError(
                    f"line {node.lineno}: execute_action must take one argument, context",
                    line=node.lineno,
                )
            return code
    raise InvalidCodeError("line 1: no function execute_action", line=1)


def check_schema(schema: Any, field: str = "parameters") -> dict[str, Any] | None:
    """The ``field`` schema (a JSON Schema object), or None for ``false``/absent."""
    if schema is None or schema is False:
        return None
    if not isinstance(schema, dict):
        raise ValidationFailedError(f"{field} must be a JSON Schema object or false", field=field)
    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as exc:
        raise ValidationFailedError(
            f"{field} is not a valid JSON Schema: {exc.message}", field=field
        ) from exc
    return schema


def args_problems(schema: dict[str, Any] | None, args: dict[str, Any]) -> list[str]:
    """Every way ``args`` breaks ``schema``, each naming where; empty when they fit."""
    if schema is None:
        return []
    validator = validator_for(schema)(schema, format_checker=jsonschema.FormatChecker())
    problems = []
    for error in sorted(validator.iter_errors(args), key=lambda e: [str(p) for p in e.path]):
        where = "/".join(str(p) for p in error.absolute_path) or "args"
        problems.append(f"{where}: {error.message}")
    return problems


def returns_problems(schema: dict[str, Any] | None, output: Any) -> list[str]:
    """Every way an output breaks the action's ``returns`` schema, each naming where."""
    if schema is None:
        return []
    validator = validator_for(schema)(schema, format_checker=jsonschema.FormatChecker())
    problems = []
    for error in sorted(validator.iter_errors(output), key=lambda e: [str(p) for p in e.path]):
        where = "/".join(str(p) for p in error.absolute_path) or "output"
        problems.append(f"{where}: {error.message}")
    return problems


def check_org_rules(fields: dict[str, Any], settings: Settings, org: OrgPolicy | None) -> None:
    """Refuse an action definition that breaks its org's rules: limits beyond the ceiling
    (PolicyError), or, in a restricted org, code RestrictedPython refuses (InvalidCodeError).
    Every path that saves an action calls this."""
    check_policy(fields["policy"], settings, org)
    if org is not None and org.restricted and fields["type"] is ActionType.PYTHON:
        check_restricted(fields["code"])
