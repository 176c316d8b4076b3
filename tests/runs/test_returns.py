"""An action's ``returns`` schema: an output that breaks it is invalid_return, naming where."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

ORDER = {
    "type": "object",
    "properties": {"id": {"type": "string"}, "total": {"type": "number", "minimum": 0}},
    "required": ["id", "total"],
}


def _code(output: str) -> str:
    return f"def execute_action(context):\n    return {output}\n"


@pytest.mark.docker
def test_an_output_matching_returns_is_ok(run_code: Any) -> None:
    run = run_code(_code("{'id': 'o1', 'total': 12.5}"), returns=ORDER)
    assert run["status"] == "ok" and run["output"] == {"id": "o1", "total": 12.5}


@pytest.mark.docker
def test_an_output_breaking_returns_is_invalid_return_with_the_message(run_code: Any) -> None:
    run = run_code(_code("{'id': 'o1', 'total': -3}"), returns=ORDER)
    assert run["status"] == "error" and run["error"]["type"] == "invalid_return"
    assert run["error"]["message"] == (
        "the output does not match returns: total: -3 is less than the minimum of 0"
    )
    missing = run_code(_code("{'total': 1}"), name="other", returns=ORDER)
    assert "output: 'id' is a required property" in missing["error"]["message"]


@pytest.mark.docker
def test_returns_need_not_be_an_object(run_code: Any) -> None:
    run = run_code(_code("'seven'"), returns={"type": "integer"})
    assert run["error"]["type"] == "invalid_return"
    assert "output: 'seven' is not of type 'integer'" in run["error"]["message"]


def test_returns_must_be_a_json_schema_and_is_kept_on_the_record(
    client: FlaskClient, auth_headers: dict[str, str], make_action: Any
) -> None:
    bad = client.post(
        "/v1/actions",
        json={"name": "a", "code": _code("1"), "returns": {"type": "nonsense"}},
        headers=auth_headers,
    )
    assert bad.status_code == 422 and bad.get_json()["error"]["field"] == "returns"
    action = make_action(_code("1"), returns=ORDER)
    assert action["returns"] == ORDER
    patched = client.patch(
        f"/v1/actions/{action['id']}", json={"returns": None}, headers=auth_headers
    )
    assert patched.status_code == 200 and patched.get_json()["returns"] is None
