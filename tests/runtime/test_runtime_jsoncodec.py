"""The runtime's JSON codec gives what json.loads and compact json.dumps give, errors included,
and a run that succeeds never imports json (nor re) at all."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from actioncage_runtime import jsoncodec
from tests.runtime.harness import RUNTIME_DIR, envelope_line

VALUES: list[Any] = [
    None,
    True,
    0,
    -17,
    10**40,
    2.5,
    1e-300,
    "",
    "plain",
    'quote " backslash \\ slash / control \x00\x1f\n\t',
    "non-ascii é ✓ 🎉 \ud800",
    [],
    {},
    [1, [2, [3, {"a": None}]]],
    {"k": "v", "n": {"deep": [True, False, None]}, "": 0},
    {1: "int key", 2.5: "float key", False: "bool key", None: "none key"},
    (1, 2),
    float("nan"),
    float("inf"),
    [float("-inf")],
]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_dumps_is_compact_json_dumps(value: Any) -> None:
    assert jsoncodec.dumps(value) == json.dumps(value, separators=(",", ":"))


@pytest.mark.parametrize(
    "value", [float("nan"), [float("inf")], {"x": float("-inf")}, object(), {(1,): 2}, {1, 2}]
)
def test_dumps_refuses_what_json_dumps_refuses_with_its_message(value: Any) -> None:
    with pytest.raises((TypeError, ValueError)) as ours:
        jsoncodec.dumps(value, allow_nan=False)
    with pytest.raises((TypeError, ValueError)) as theirs:
        json.dumps(value, allow_nan=False, separators=(",", ":"))
    assert type(ours.value) is type(theirs.value) and str(ours.value) == str(theirs.value)


def test_dumps_refuses_circular_references() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="Circular reference"):
        jsoncodec.dumps(loop)


@pytest.mark.parametrize(
    "text",
    [
        json.dumps(v, separators=(",", ":"))
        for v in VALUES
        if not isinstance(v, float) or v == v  # NaN never equals itself: below
    ]
    + [' \t\n\r{"a" : [1 , 2]}\r\n ', "-Infinity", '"\\ud83c\\udf89"', "1E400"],
)
def test_loads_is_json_loads(text: str) -> None:
    assert jsoncodec.loads(text) == json.loads(text)


def test_loads_nan_is_nan() -> None:
    value = jsoncodec.loads("[NaN]")[0]
    assert value != value


@pytest.mark.parametrize(
    "text",
    ["", "   ", "{", "[1,]", "[1] x", "{} {}", "tru", '"unterminated', '"\x01"', "{'a': 1}", "0x1"],
)
def test_loads_refuses_what_json_loads_refuses_with_its_message(text: str) -> None:
    with pytest.raises(json.JSONDecodeError) as ours:
        jsoncodec.loads(text)
    with pytest.raises(json.JSONDecodeError) as theirs:
        json.loads(text)
    assert str(ours.value) == str(theirs.value)


def test_loads_refuses_deep_nesting_as_json_loads_does() -> None:
    with pytest.raises(RecursionError):
        jsoncodec.loads("[" * 100_000 + "]" * 100_000)


def test_a_successful_run_imports_neither_json_nor_re() -> None:
    """Checked in a bare interpreter (no site: nothing but the runtime imports anything)."""
    probe = (
        "import io, sys\n"
        f"sys.path.insert(0, {str(RUNTIME_DIR)!r})\n"
        "from actioncage_runtime.__main__ import run\n"
        "out = io.StringIO()\n"
        f"assert run(io.StringIO({envelope_line(_TRIVIAL)!r}), out, io.StringIO()) == 0\n"
        'assert out.getvalue().startswith(\'{"type":"result","status":"ok"\'), out.getvalue()\n'
        "print(sorted({'json', 're', 'enum', 'functools'} & set(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", probe], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


_TRIVIAL = "def execute_action(context):\n    return {'ok': True, 'v': [1, 2.5, None]}\n"
