"""actions/: Restricted mode: the import allowlist and the save-time check with
RestrictedPython.

The sandbox compiles the script with RestrictedPython again when it runs (runtime/), with the
allowlist the envelope carries; checking on save gives the author every reason at once.
"""

from __future__ import annotations

import ast

from RestrictedPython import compile_restricted_exec  # type: ignore[attr-defined]

from actioncage.errors import InvalidCodeError

# Modules (and their submodules) a restricted script may import.
IMPORT_ALLOWLIST: tuple[str, ...] = (
    "base64",
    "collections",
    "dataclasses",
    "datetime",
    "decimal",
    "enum",
    "fractions",
    "functools",
    "hashlib",
    "holidays",
    "itertools",
    "json",
    "math",
    "random",
    "re",
    "statistics",
    "string",
    "time",
    "typing",
    "urllib.parse",
    "uuid",
    "zoneinfo",
)


def _allowed(name: str) -> bool:
    return any(name == a or name.startswith(a + ".") for a in IMPORT_ALLOWLIST)


def restricted_problems(code: str) -> list[tuple[int, str]]:
    """Every construct restricted mode forbids, as (line, reason), in line order."""
    problems: list[tuple[int, str]] = []
    result = compile_restricted_exec(code, filename="action.py")
    for error in result.errors:
        # RestrictedPython says "Line 3: ..."; keep its reason, normalise the line.
        head, _, reason = error.partition(": ")
        line = int(head.split()[-1]) if head.startswith("Line ") and head[5:].isdigit() else 0
        problems.append((line, reason if line else error))
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return sorted(problems)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = ["." * node.level + (node.module or "")]
        else:
            continue
        for name in names:
            if not _allowed(name):
                problems.append((node.lineno, f"import of {name!r} is not allowed"))
    return sorted(problems)


def check_restricted(code: str) -> str:
    """The code, if restricted mode allows it.

    Raises InvalidCodeError listing every problem as ``line N: reason`` (first line in
    ``line``).
    """
    problems = restricted_problems(code)
    if problems:
        message = "restricted mode: " + "; ".join(f"line {n}: {r}" for n, r in problems)
        raise InvalidCodeError(message, line=problems[0][0] or None)
    return code
