"""Runs writing one conversation at the same moment: every run's effects land."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.store.test_races import race

CODE = """
def execute_action(context):
    add_conversation_tag(context, context['args']['tag'])
    set_conversation_metadata(context, context['args']['tag'], True)
    return {}
"""


@pytest.mark.docker
def test_concurrent_runs_on_one_conversation_all_apply_their_effects(
    client: FlaskClient, auth_headers: dict[str, str], make_action: Any, execute: Any
) -> None:
    action = make_action(CODE, name="tagger")
    assert (
        client.post("/v1/conversations", json={"id": "shared"}, headers=auth_headers).status_code
        == 201
    )
    tags = [f"run{i}" for i in range(3)]
    outcomes = race(len(tags), lambda i: execute(action["id"], {"tag": tags[i]}, "shared"))
    assert all(status == 200 and body["status"] == "ok" for status, body in outcomes), outcomes
    after = client.get("/v1/conversations/shared", headers=auth_headers).get_json()
    assert sorted(after["tags"]) == tags
    assert after["metadata"] == {tag: True for tag in tags}
