"""runs/: the run service every front door calls (native, Rasa, Botpress, the dashboard,
triggers, background runs, the CLI); it owns admission, conversation loading and creation,
idempotency, triggers, background runs and callbacks. HTTP-free: front doors only
translate wire formats and map its errors to their protocol."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from actioncage.errors import OverloadedError, RateLimitedError, TierUnavailableError
from actioncage.models import (
    Action,
    ActionType,
    Conversation,
    EffectiveLimits,
    FrontDoor,
    InvocationTrigger,
    RunResult,
)
from actioncage.runs.admission import Admission, Gate
from actioncage.runs.callbacks import CallbackSender
from actioncage.runs.definitions import Definitions
from actioncage.runs.executor import Executor
from actioncage.runs.idempotency import Answer, Idempotency
from actioncage.runs.jobs import Jobs
from actioncage.runs.sandboxes import SandboxRun
from actioncage.runs.tickets import Ticket
from actioncage.store import Store, repo

log = logging.getLogger(__name__)

ArgsFor = Callable[[Action], dict[str, Any]]


@dataclass(frozen=True)
class Caller:
    """Who asks for a run, and through which door."""

    org_id: str
    key_id: str | None
    front_door: FrontDoor


@dataclass(frozen=True)
class ConversationRef:
    """The conversation a run belongs to.

    ``create``: make it (and run its start triggers) when missing, as platforms that own the
    conversation expect; otherwise a missing one is ConversationNotFoundError.
    ``messages``: the platform's own transcript: it seeds a new conversation and is what the
    script sees (None: the stored messages).
    """

    id: str
    create: bool = False
    messages: tuple[dict[str, Any], ...] | None = None


@dataclass(frozen=True)
class RunRequest:
    """One call of one action. ``args`` may be computed from the loaded action (Rasa maps
    tracker slots onto the action's schema). ``wait_ms`` or ``callback_url`` send the run to
    the background: the caller waits at most ``wait_ms`` (None: until it ends)."""

    caller: Caller
    action: str | Action
    args: dict[str, Any] | ArgsFor
    conversation: ConversationRef | None = None
    dry_run: bool = False
    wait_ms: int | None = None
    callback_url: str | None = None

    @property
    def in_background(self) -> bool:
        return self.wait_ms is not None or self.callback_url is not None


@dataclass(frozen=True)
class Pending:
    """A background run still going; its "running" record is at its run id."""

    run_id: str
    action: Action


class RunService:
    """Runs actions for every front door."""

    def __init__(
        self,
        store: Store,
        definitions: Definitions,
        executor: Executor,
        gate: Gate,
        idempotency: Idempotency,
        jobs: Jobs,
        callbacks: CallbackSender,
        hand_over: bool = False,
    ) -> None:
        """``hand_over``: runs go to executor workers (dispatch/); each gets a durable
        record and job while it is away, so another process can complete it if this one
        dies (Jobs.handed_over)."""
        self._store = store
        self._definitions = definitions
        self._hand_over = hand_over
        self._executor = executor
        self._gate = gate
        self._idempotency = idempotency
        self._jobs = jobs
        self._callbacks = callbacks

    # --- runs ------------------------------------------------------------------------------

    def action(self, caller: Caller, ref: str) -> Action:
        """The caller's org's action by id or name. Raises ActionNotFoundError."""
        return self._definitions.action(caller.org_id, ref)

    def run(self, request: RunRequest) -> RunResult | Pending:
        """Run the action and record the run; a failing script is an outcome, not an error.

        Returns the RunResult, or Pending for a background run that outlasted ``wait_ms``.
        Raises ActionNotFoundError, ConversationNotFoundError, ValidationFailedError (a
        refused callbackUrl), RateLimitedError or OverloadedError before anything runs,
        TierUnavailableError when the run's isolation tier cannot run here, and BusyError
        when the background is full.
        """
        with self._executor.in_flight():
            caller = request.caller
            read: Admission | None = None
            if isinstance(request.action, Action):
                action = request.action
            else:
                action, org = self._definitions.action_and_policy(caller.org_id, request.action)
                read = Admission(org)
            conversation = self._conversation(caller, request.conversation)
            args = request.args(action) if callable(request.args) else request.args
            if request.in_background:
                return self._in_background(
                    caller, action, args, conversation, request.wait_ms, request.callback_url
                )
            with (
                self._gate.admit(caller.org_id, caller.key_id, read) as admission,
                ExitStack() as stack,
            ):
                run_id = None
                if self._hand_over and not request.dry_run and action.type is ActionType.PYTHON:
                    run_id = repo.new_id("run")
                    stack.enter_context(
                        self._jobs.handed_over(
                            run_id,
                            action,
                            caller.key_id,
                            None if conversation is None else conversation.id,
                            caller.front_door,
                            args,
                        )
                    )
                return self._executor.run_action(
                    action,
                    caller.key_id,
                    args,
                    conversation,
                    dry_run=request.dry_run,
                    run_id=run_id,
                    admission=admission,
                    front_door=caller.front_door,
                )

    def once(
        self,
        caller: Caller,
        idempotency_key: str | None,
        scope: str,
        body: Any,
        answer: Callable[[], Answer],
    ) -> tuple[Any, int, bool]:
        """``answer()``, or the stored answer of an earlier call with this Idempotency-Key
        (see Idempotency.once). ``scope`` names the front door and action."""
        return self._idempotency.once(caller.org_id, idempotency_key, scope, body, answer)

    def _conversation(self, caller: Caller, ref: ConversationRef | None) -> Conversation | None:
        if ref is None:
            return None
        with self._store.session() as s:
            conversation = (
                repo.find_conversation(s, caller.org_id, ref.id)
                if ref.create
                else repo.get_conversation(s, caller.org_id, ref.id)
            )
        if conversation is None:
            conversation = self._create_or_find(caller, ref)
        if ref.messages is not None:
            conversation = dataclasses.replace(conversation, messages=ref.messages)
        return conversation

    def _create_or_find(self, caller: Caller, ref: ConversationRef) -> Conversation:
        messages = list(ref.messages or ())
        conversation, runs = self.create_conversation(caller, ref.id, messages, {}, [])
        if runs:
            with self._store.session() as s:
                conversation = repo.get_conversation(s, caller.org_id, ref.id)
        return conversation

    # --- conversations and their triggers -------------------------------------------------

    def create_conversation(
        self,
        caller: Caller,
        conversation_id: str | None,
        messages: list[dict[str, Any]],
        metadata: dict[str, Any],
        tags: list[str],
    ) -> tuple[Conversation, list[RunResult]]:
        """Make a conversation and run its start-triggered actions. Returns it as the
        triggers left it, with their runs. Raises ConflictError when the id is taken."""
        with self._store.session() as s:
            conversation = repo.create_conversation(
                s, caller.org_id, conversation_id, messages, metadata, tags
            )
        runs = self._triggered(caller, InvocationTrigger.CONVERSATION_START, conversation.id)
        if runs:
            with self._store.session() as s:
                conversation = repo.get_conversation(s, caller.org_id, conversation.id)
        return conversation, runs

    def end_conversation(
        self, caller: Caller, conversation_id: str
    ) -> tuple[Conversation, list[RunResult]]:
        """End a conversation and run its end-triggered actions. Raises
        ConversationNotFoundError."""
        with self._store.session() as s:
            conversation = repo.end_conversation(s, caller.org_id, conversation_id)
        runs = self._triggered(caller, InvocationTrigger.CONVERSATION_END, conversation.id)
        with self._store.session() as s:
            conversation = repo.get_conversation(s, caller.org_id, conversation_id)
        return conversation, runs

    def _triggered(
        self, caller: Caller, trigger: InvocationTrigger, conversation_id: str
    ) -> list[RunResult]:
        """Run every live action of the org with ``trigger``, in name order, each seeing the
        effects of the ones before, each admitted like any other run. A run refused by the
        limits is recorded as a sandbox_error naming the limit, so it is never silent."""
        with self._store.session() as s:
            actions = repo.list_triggered_actions(s, caller.org_id, trigger)
        runs = []
        for action in actions:
            with self._store.session() as s:
                conversation = repo.get_conversation(s, caller.org_id, conversation_id)
            # A trigger passes no args: an action whose schema requires some records invalid_args.
            try:
                with self._gate.admit(caller.org_id, caller.key_id) as admission:
                    run = self._executor.run_action(
                        action,
                        caller.key_id,
                        {},
                        conversation,
                        admission=admission,
                        front_door=FrontDoor.TRIGGER,
                    )
            except (RateLimitedError, OverloadedError, TierUnavailableError) as exc:
                run = self._executor.record_refused(
                    repo.new_id("run"),
                    action,
                    caller.key_id,
                    conversation,
                    f"{trigger} run refused: {exc}",
                    front_door=FrontDoor.TRIGGER,
                    placeholder=False,
                    args={},
                )
            runs.append(run)
        return runs

    # --- background runs -------------------------------------------------------------------

    def _in_background(
        self,
        caller: Caller,
        action: Action,
        args: dict[str, Any],
        conversation: Conversation | None,
        wait_ms: int | None,
        callback_url: str | None,
    ) -> RunResult | Pending:
        if callback_url is not None:
            self._callbacks.check_url(callback_url)
        # The slot is taken now, so a caller over its limits hears 429; freed when the job ends.
        slot = ExitStack()
        admission = slot.enter_context(self._gate.admit(caller.org_id, caller.key_id))
        run_id = repo.new_id("run")
        conversation_id = None if conversation is None else conversation.id
        executor = self._executor

        def job() -> RunResult:
            with slot:
                try:
                    run: RunResult = executor.run_action(
                        action,
                        caller.key_id,
                        args,
                        conversation,
                        run_id=run_id,
                        admission=admission,
                        front_door=caller.front_door,
                    )
                # Nobody is left to hear a 429 or a 503: the record says why.
                except (OverloadedError, TierUnavailableError) as exc:
                    run = executor.record_refused(
                        run_id,
                        action,
                        caller.key_id,
                        conversation,
                        str(exc),
                        front_door=caller.front_door,
                        args=args,
                    )
            return run

        # The run record, its job and, once it ends, its callback are durable (runs/jobs.py):
        # a process that dies mid-run leaves them to another process's reaper and outbox.
        try:
            future = self._jobs.submit(
                run_id,
                action,
                caller.key_id,
                conversation_id,
                caller.front_door,
                callback_url,
                job,
                slot.close,
                args=args,
            )
        except BaseException:
            slot.close()
            raise
        try:
            run: RunResult = future.result(timeout=None if wait_ms is None else wait_ms / 1000)
        except TimeoutError:
            return Pending(run_id, action)
        return run

    def adopt_dispatched(
        self, run_id: str, ticket: str, parse: Callable[[EffectiveLimits], SandboxRun]
    ) -> bool:
        """Record a run whose dispatching process died while it was on an executor worker,
        from the worker's outcome (``parse``) and the run's signed handover ``ticket``, once
        that process is dead. Returns whether this process recorded it."""

        def complete(t: Ticket) -> RunResult:
            with self._store.session() as s:
                action = repo.get_action(s, t.org_id, t.action_id)
                conversation = (
                    None
                    if t.conversation_id is None
                    else repo.get_conversation(s, t.org_id, t.conversation_id)
                )
            return self._executor.complete_dispatched(t, action, conversation, parse)

        return self._jobs.adopt(run_id, ticket, complete)

    def close(self) -> None:
        """Take no new background runs; finish (or hand to the reaper) those in flight."""
        self._jobs.close()
        self._callbacks.close()
