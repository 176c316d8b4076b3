"""Checks the output size and that values are JSON-safe: no sets, objects, NaN or deep nesting."""

from __future__ import annotations

import math

from actioncage_runtime import jsoncodec

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs every sandbox an import; annotations need it only here
    from typing import Any

MAX_JSON_DEPTH = 100

# A path is built as linked (parent, key) pairs so each node costs O(1) to record.
_Path = tuple["_Path", str | int] | None


class NotJSONError(TypeError):
    """A value holds a type JSON has no form for (a set, an object): the message says where."""


class JSONValueError(ValueError):
    """A value has JSON types but no valid JSON form (NaN, a cycle, deep nesting)."""


class SizeLimitError(ValueError):
    """A value serialises to more bytes than allowed."""


def _format_path(path: _Path) -> str:
    keys: list[str | int] = []
    while path is not None:
        path, key = path
        keys.append(key)
    return "$" + "".join(f"[{jsoncodec.dumps(key)}]" for key in reversed(keys))


def check_json_value(value: Any, what: str, max_nodes: int) -> None:
    """Check that ``value`` is plain JSON without serialising it.

    Walks iteratively, so neither deep nesting nor a low recursion limit set by the script can
    break the check. ``max_nodes`` bounds the walk: every node costs at least one output byte,
    so a value with more nodes than the byte limit is too large anyway.

    Raises NotJSONError or JSONValueError naming the first offending node (``what`` prefixes the
    message), and SizeLimitError when the value has more than ``max_nodes`` nodes.
    """
    ancestors: set[int] = set()
    # (leaving, item, path, depth): a "leaving" entry pops a container off the ancestor set.
    stack: list[tuple[bool, Any, _Path, int]] = [(False, value, None, 0)]
    nodes = 0
    while stack:
        leaving, item, path, depth = stack.pop()
        if leaving:
            ancestors.discard(id(item))
            continue
        nodes += 1
        if nodes > max_nodes:
            raise SizeLimitError(f"{what} has more than {max_nodes} elements")
        if item is None or isinstance(item, str | bool | int):
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                raise JSONValueError(
                    f"{what} is not valid JSON: {item!r} at {_format_path(path)} "
                    "(NaN and infinity are not allowed)"
                )
            continue
        if isinstance(item, dict | list | tuple):
            if id(item) in ancestors:
                raise JSONValueError(
                    f"{what} is not valid JSON: circular reference at {_format_path(path)}"
                )
            if depth >= MAX_JSON_DEPTH:
                raise JSONValueError(
                    f"{what} is not valid JSON: nested deeper than {MAX_JSON_DEPTH} levels "
                    f"at {_format_path(path)}"
                )
            ancestors.add(id(item))
            stack.append((True, item, path, depth))
            if isinstance(item, dict):
                children: list[tuple[str | int, Any]] = []
                for key, child in item.items():
                    # json.dumps turns these keys into strings; anything else it rejects.
                    if not (key is None or isinstance(key, str | int | float)):
                        raise NotJSONError(
                            f"{what} is not valid JSON: key {key!r} at {_format_path(path)} "
                            f"is a {type(key).__name__}; keys must be str, int, float, bool or None"
                        )
                    children.append((key if isinstance(key, str) else str(key), child))
            else:
                children = list(enumerate(item))
            for key, child in reversed(children):
                stack.append((False, child, (path, key), depth + 1))
            continue
        raise NotJSONError(
            f"{what} is not JSON-serialisable: {type(item).__name__} at {_format_path(path)}"
        )


def dump_json(value: Any, what: str, max_bytes: int) -> str:
    """Serialise a checked-safe ``value`` as compact ASCII JSON of at most ``max_bytes`` bytes.

    Returns the JSON text. Raises NotJSONError or JSONValueError if the value is not JSON-safe
    and SizeLimitError if it is too large.
    """
    check_json_value(value, what, max_nodes=max_bytes)
    try:
        text = jsoncodec.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:  # e.g. an int past the 4300-digit conversion limit
        raise JSONValueError(f"{what} is not valid JSON: {exc}") from None
    # ensure_ascii (the default) makes the character count equal the byte count.
    if len(text) > max_bytes:
        raise SizeLimitError(
            f"{what} is {len(text)} bytes serialised; the limit is {max_bytes} bytes"
        )
    return text
