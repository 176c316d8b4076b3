"""Text that PostgreSQL cannot hold (NUL characters) is stored the same way on both."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from actioncage.models import ErrorType, RunError, RunResult, RunStatus
from actioncage.store import Store, repo
from tests.conftest import API_KEY


def test_a_run_whose_logs_and_error_carry_nul_characters_is_recorded(store: Store) -> None:
    now = repo.now()
    run = RunResult(
        run_id="run_nul",
        org_id="acme",
        action_id="act_1",
        action_version=1,
        status=RunStatus.ERROR,
        output={"echo": "a\x00b"},
        error=RunError(type=ErrorType.EXCEPTION, message="bad \x00 byte", traceback="tb\x00"),
        effects=(),
        effects_applied=False,
        logs="before\x00after\n",
        duration_ms=1,
        started_at=now,
        finished_at=now,
        conversation_id=None,
        caller_key_id=None,
        image_digest=None,
    )
    with store.session() as s:
        repo.add_run(s, run)
    with store.session() as s:
        stored = repo.get_run(s, "acme", "run_nul")
    # PostgreSQL refuses NUL in text: it becomes U+FFFD, as undecodable output already does.
    assert stored.logs == "before\ufffdafter\n"
    assert stored.error is not None
    assert stored.error.message == "bad \ufffd byte" and stored.error.traceback == "tb\ufffd"
    # JSON keeps it: its text escapes it as \\u0000.
    assert stored.output == {"echo": "a\x00b"}


@pytest.mark.parametrize("path", ["/v1/actions/a%00b", "/v1/conversations/a%00b", "/v1/runs/a%00b"])
def test_an_id_with_a_nul_character_is_not_found(store_client: FlaskClient, path: str) -> None:
    resp = store_client.get(path, headers={"Authorization": f"Bearer {API_KEY}"})
    assert resp.status_code == 404, resp.get_json()
