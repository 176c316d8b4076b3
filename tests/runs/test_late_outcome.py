"""A run a reaper already ended ("executor lost") keeps that record: the late outcome of the
process that was cut off lands nowhere, its effects included."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from actioncage.components import Components, build
from actioncage.errors import RunAlreadyEndedError
from actioncage.models import ErrorType, FrontDoor, Policy, RunError, RunStatus
from actioncage.store import repo
from tests.conftest import make_settings

CODE = (
    "def execute_action(context):\n"
    "    set_conversation_metadata(context, 'late', True)\n"
    "    return 'late'\n"
)


@pytest.fixture
def components(tmp_path: Path) -> Iterator[Components]:
    built = build(make_settings(tmp_path), role="run")
    yield built
    built.close()


def _placeholder_ended_by_a_reaper(components: Components) -> tuple[str, object, object]:
    with components.store.session() as s:
        action = repo.create_action(
            s,
            "default",
            "k",
            {
                "name": "late",
                "type": "python",
                "code": CODE,
                "parameters": None,
                "description": None,
                "policy": Policy(),
            },
        )
        conversation = repo.create_conversation(s, "default", "c-late", [], {}, [])
        run_id = repo.new_id("run")
        repo.add_running_run(s, run_id, action, None, conversation.id)
    with components.store.session() as s:
        stored = repo.get_run(s, "default", run_id)
        lost = replace(
            stored,
            status=RunStatus.ERROR,
            error=RunError(ErrorType.SANDBOX_ERROR, "executor lost"),
        )
        repo.add_run(s, lost, replaces_placeholder=True)
    return run_id, action, conversation


def test_a_placeholder_is_completed_once(components: Components) -> None:
    run_id, _, _ = _placeholder_ended_by_a_reaper(components)
    with components.store.session() as s:
        again = replace(repo.get_run(s, "default", run_id), status=RunStatus.OK, error=None)
    with pytest.raises(RunAlreadyEndedError), components.store.session() as s:
        repo.add_run(s, again, replaces_placeholder=True)
    with components.store.session() as s:
        assert repo.get_run(s, "default", run_id).error.message == "executor lost"  # type: ignore[union-attr]


@pytest.mark.docker
def test_a_late_outcome_keeps_the_reapers_record_and_applies_no_effects(
    components: Components,
) -> None:
    run_id, action, conversation = _placeholder_ended_by_a_reaper(components)
    run = components.executor.run_action(
        action,  # type: ignore[arg-type]
        None,
        {},
        conversation,  # type: ignore[arg-type]
        run_id=run_id,
        front_door=FrontDoor.BACKGROUND,
    )
    assert run.status is RunStatus.ERROR
    assert run.error is not None and run.error.message == "executor lost"
    with components.store.session() as s:
        assert repo.get_conversation(s, "default", "c-late").metadata == {}
        assert repo.get_run(s, "default", run_id).status is RunStatus.ERROR
