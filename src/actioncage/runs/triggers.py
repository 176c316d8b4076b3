"""Runs the actions whose invocation trigger is a conversation starting or ending."""

from __future__ import annotations

import logging

from actioncage.models import InvocationTrigger, RunResult
from actioncage.runs.executor import Executor
from actioncage.store import Store, repo

log = logging.getLogger(__name__)


def run_triggered(
    executor: Executor,
    store: Store,
    org_id: str,
    key_id: str | None,
    trigger: InvocationTrigger,
    conversation_id: str,
) -> list[RunResult]:
    """Run every live action of the org with ``trigger`` against the conversation, in name
    order, each seeing the effects of the ones before. Returns their recorded runs."""
    with store.session() as s:
        actions = repo.list_triggered_actions(s, org_id, trigger)
    runs = []
    for action in actions:
        # A trigger passes no args: an action whose schema requires some records invalid_args.
        with store.session() as s:
            conversation = repo.get_conversation(s, org_id, conversation_id)
        runs.append(executor.run_action(action, key_id, {}, conversation))
    return runs
