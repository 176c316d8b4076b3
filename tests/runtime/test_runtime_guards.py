"""The JSON-safety and size checks on their own."""

from __future__ import annotations

from typing import Any

import pytest

from actioncage_runtime.guards import (
    MAX_JSON_DEPTH,
    JSONValueError,
    NotJSONError,
    SizeLimitError,
    check_json_value,
    dump_json,
)


def nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


def test_plain_json_passes_and_dumps_compactly() -> None:
    value = {"a": [1, 2.5, "x", None, True, {"b": ()}], "c": {}}
    assert dump_json(value, "v", 1000) == '{"a":[1,2.5,"x",null,true,{"b":[]}],"c":{}}'


def test_depth_limit_is_exact() -> None:
    check_json_value(nested(MAX_JSON_DEPTH), "v", max_nodes=1000)
    with pytest.raises(JSONValueError, match="nested deeper than 100 levels"):
        check_json_value(nested(MAX_JSON_DEPTH + 1), "v", max_nodes=1000)


def test_very_deep_nesting_is_rejected_without_recursion() -> None:
    with pytest.raises(JSONValueError, match="nested deeper"):
        check_json_value(nested(100_000), "v", max_nodes=10**6)


def test_shared_references_are_not_cycles() -> None:
    shared = [1]
    check_json_value({"x": shared, "y": shared}, "v", max_nodes=100)


def test_cycles_are_named_with_their_path() -> None:
    value: dict[str, Any] = {"a": {"b": []}}
    value["a"]["b"].append(value)
    with pytest.raises(JSONValueError, match=r'circular reference at \$\["a"\]\["b"\]\[0\]'):
        check_json_value(value, "v", max_nodes=100)


def test_problems_name_the_offending_path() -> None:
    with pytest.raises(NotJSONError, match=r'v is not JSON-serialisable: set at \$\["k"\]\[1\]'):
        check_json_value({"k": [1, {2}]}, "v", max_nodes=100)
    with pytest.raises(JSONValueError, match=r"-inf at \$\[0\]"):
        check_json_value([float("-inf")], "v", max_nodes=100)


def test_exponential_shared_structure_stops_at_the_node_budget() -> None:
    value: list[Any] = []
    for _ in range(60):
        value = [value, value]
    with pytest.raises(SizeLimitError, match="more than 1000 elements"):
        check_json_value(value, "v", max_nodes=1000)


def test_size_limit_is_exact() -> None:
    assert dump_json("x" * 8, "v", 10) == '"xxxxxxxx"'
    with pytest.raises(SizeLimitError, match="v is 11 bytes serialised; the limit is 10 bytes"):
        dump_json("x" * 9, "v", 10)


def test_size_counts_escaped_bytes() -> None:
    with pytest.raises(SizeLimitError, match="v is 14 bytes serialised"):
        dump_json("\u00e9\u00e9", "v", 13)


def test_ints_too_long_to_print_are_not_json() -> None:
    with pytest.raises(JSONValueError, match="v is not valid JSON"):
        dump_json(10**5000, "v", 10**6)
