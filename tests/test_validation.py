from __future__ import annotations

import pytest

from actioncage.actions.validation import args_problems, check_code, check_name, check_schema
from actioncage.errors import InvalidCodeError, ValidationFailedError


def test_syntax_error_names_its_line() -> None:
    with pytest.raises(InvalidCodeError) as info:
        check_code("def execute_action(context):\n    return 1\n\nx = (\n", 10_000)
    assert info.value.line == 4
    assert str(info.value).startswith("line 4:")


def test_code_without_execute_action_is_refused() -> None:
    with pytest.raises(InvalidCodeError, match="no function execute_action"):
        check_code("def run(context):\n    return 1\n", 10_000)


def test_execute_action_without_argument_is_refused() -> None:
    with pytest.raises(InvalidCodeError, match="line 2: execute_action must take one argument"):
        check_code("import os\ndef execute_action():\n    return 1\n", 10_000)


def test_null_byte_and_oversize_code_are_refused() -> None:
    with pytest.raises(InvalidCodeError):
        check_code("def execute_action(c):\n    return '\0'\x00", 10_000)
    with pytest.raises(InvalidCodeError, match="larger than"):
        check_code("def execute_action(c):\n    return 1\n" + "#" * 200, 50)


@pytest.mark.parametrize("name", ["getOrder", "a", "a_1", "A" * 64])
def test_good_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "1abc", "_x", "a-b", "a b", "A" * 65, 5, None])
def test_bad_names(name: object) -> None:
    with pytest.raises(ValidationFailedError):
        check_name(name)


def test_schema_checks_and_arg_problems_name_the_field() -> None:
    schema = check_schema(
        {
            "type": "object",
            "properties": {"orderId": {"type": "string"}, "n": {"type": "integer"}},
            "required": ["orderId"],
            "additionalProperties": False,
        }
    )
    assert args_problems(schema, {"orderId": "1", "n": 2}) == []
    problems = args_problems(schema, {"n": "two", "extra": 1})
    assert any("orderId" in p for p in problems)
    assert any(p.startswith("n:") for p in problems)
    assert any("extra" in p for p in problems)
    assert check_schema(False) is None
    with pytest.raises(ValidationFailedError):
        check_schema({"type": "nonsense"})
