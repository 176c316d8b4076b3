"""runs/: the executor: validate args, run the script in a sandbox (or the API call),
classify the outcome, apply effects on success and record the run."""

from __future__ import annotations

import json
import logging
import signal
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from actioncage.actions.http import HttpActionRunner
from actioncage.actions.restricted import IMPORT_ALLOWLIST
from actioncage.actions.validation import args_problems, returns_problems
from actioncage.egress.proxy import SOCKET_NAME
from actioncage.errors import RunAlreadyEndedError, ValidationFailedError
from actioncage.hostcalls.registry import HostCalls
from actioncage.metrics import Metrics
from actioncage.models import (
    Action,
    ActionType,
    Conversation,
    Effect,
    EffectiveLimits,
    ErrorType,
    FrontDoor,
    Isolation,
    RawOutcome,
    RunError,
    RunResult,
    RunStatus,
)
from actioncage.runs.admission import Admission
from actioncage.runs.effects import EffectsInvalid, apply_effects, parse_effects
from actioncage.runs.hints import explain_network
from actioncage.runs.masking import Masker
from actioncage.runs.sandboxes import LocalSandboxes, Sandboxes, SandboxRun
from actioncage.runs.slots import RunSlots
from actioncage.runs.tickets import Ticket
from actioncage.sandbox.backend import TierStatus
from actioncage.sandbox.envelope import RUNTIME_ERROR_TYPES, build_envelope
from actioncage.sandbox.limits import EGRESS_MOUNT, PolicyHashes, effective_limits
from actioncage.sandbox.runner import SandboxRunner
from actioncage.settings import Settings
from actioncage.store import Store, repo
from actioncage.vault import Vault

log = logging.getLogger(__name__)

_MAX_MESSAGE = 4096
_MAX_TRACEBACK = 16 * 1024


@dataclass(frozen=True)
class Outcome:
    status: RunStatus
    output: Any = None
    error: RunError | None = None
    effects: tuple[Effect, ...] = ()


def _error(type_: ErrorType, message: str, traceback: str | None = None) -> Outcome:
    return Outcome(status=RunStatus.ERROR, error=RunError(type_, message[:_MAX_MESSAGE], traceback))


def conversation_context(conversation: Conversation | None) -> dict[str, Any] | None:
    """``context["conversation"]`` as a script sees it."""
    if conversation is None:
        return None
    return {
        "id": conversation.id,
        "messages": list(conversation.messages),
        "metadata": dict(conversation.metadata),
        "tags": list(conversation.tags),
    }


class Executor:
    """Runs actions for every front door; HTTP-free."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        runner: SandboxRunner,
        host_calls: HostCalls,
        slots: RunSlots | None = None,
        metrics: Metrics | None = None,
        vault: Vault | None = None,
        sandboxes: Sandboxes | None = None,
    ) -> None:
        """``sandboxes``: where the sandbox part of runs goes (default: ``runner`` on this
        host; dispatch/ hands it to executor workers)."""
        self._settings = settings
        self._vault = vault
        self._store = store
        self._runner = runner
        self._sandboxes: Sandboxes = sandboxes or LocalSandboxes(settings, runner)
        self._host_calls = host_calls
        self._http = HttpActionRunner(settings)
        self._slots = slots or RunSlots(settings)
        self._metrics = metrics
        self._policy_hash = PolicyHashes(settings)

    def in_flight(self) -> AbstractContextManager[None]:
        """Counts a run in flight for the block: the engine's background work (removals,
        pool refills) waits for a gap, so it does not take the CPU from a waiting caller."""
        return self._sandboxes.foreground.run()

    def run_action(
        self,
        action: Action,
        key_id: str | None,
        args: dict[str, Any],
        conversation: Conversation | None,
        dry_run: bool = False,
        run_id: str | None = None,
        admission: Admission | None = None,
        front_door: FrontDoor | None = None,
    ) -> RunResult:
        """Run a loaded action against a loaded conversation and record the run.

        ``dry_run`` (the dashboard's test panel): effects are validated and returned, not
        applied. ``run_id`` names a "running" placeholder record to complete (a background
        run). ``admission`` is what the gate yielded (the org's policy as of admission).
        Returns the RunResult (a failing script is an outcome). Raises OverloadedError when
        no run slot can be had (nothing is recorded then). A run whose isolation tier cannot
        run here is recorded as a sandbox_error naming the tier: it never falls back to a
        weaker one.
        """
        with self._sandboxes.foreground.run():
            return self._run_action(
                action, key_id, args, conversation, dry_run, run_id, admission, front_door
            )

    def _run_action(
        self,
        action: Action,
        key_id: str | None,
        args: dict[str, Any],
        conversation: Conversation | None,
        dry_run: bool,
        run_id: str | None,
        admission: Admission | None,
        front_door: FrontDoor | None,
    ) -> RunResult:
        placeholder = run_id is not None
        run_id = run_id or repo.new_id("run")
        started_at = repo.now()
        digest: str | None = None
        hashed: str | None = None
        egress: tuple[dict[str, Any], ...] = ()
        raw: RawOutcome | None = None
        executor: str | None = None
        api_logs: str | None = None
        tier: TierStatus | None = None
        settled: Callable[[], None] | None = None
        if admission is None:
            with self._store.session() as s:
                admission = Admission(repo.find_org_policy(s, action.org_id))
        secrets = self._secret_values(action)
        problems = args_problems(action.parameters, args)
        if problems:
            outcome = _error(ErrorType.INVALID_ARGS, "; ".join(problems))
        elif action.type is ActionType.API and action.endpoint is not None:
            call = self._http.call(action.endpoint, args, action.policy, admission.org, secrets)
            api_logs = call.logs
            outcome = (
                Outcome(status=RunStatus.OK, output=call.output)
                if call.error is None
                else _error(call.error.type, call.error.message)
            )
        elif action.type is not ActionType.PYTHON:
            raise ValidationFailedError(f"actions of type {action.type} cannot run yet", "type")
        else:
            org = admission.org
            limits = effective_limits(action.policy, self._settings, org)
            tier = self._sandbox_tier(limits.isolation)
            if not tier.available:  # 503 on the audit trail; never a weaker tier
                outcome = _error(
                    ErrorType.SANDBOX_ERROR,
                    f"isolation tier {tier.isolation} is unavailable here: {tier.reason}",
                )
            else:
                hashed = self._policy_hash(limits)
                restricted = IMPORT_ALLOWLIST if org is not None and org.restricted else None
                line = build_envelope(
                    action.code,
                    args,
                    conversation_context(conversation),
                    limits,
                    restricted,
                    f"{EGRESS_MOUNT}/{SOCKET_NAME}" if limits.egress else None,
                    secrets if action.secrets else None,
                )
                # OverloadedError (no slot) passes through: no run is produced or recorded.
                with self._slots.hold():
                    ran = self._sandboxes.run(run_id, line, limits, self._host_calls.answer)
                raw, digest, egress, executor = ran.raw, ran.image_digest, ran.egress, ran.executor
                settled = ran.settled
                outcome = _sandbox_outcome(ran, limits, conversation is not None)
        try:
            outcome = _check_returns(action, outcome)
            logs = raw_logs(raw, self._settings.max_output_bytes) if api_logs is None else api_logs
            if secrets:  # nothing the run leaves shows a secret's value, however encoded
                masker = Masker(v for v in secrets.values() if v is not None)
                outcome, logs = _masked(outcome, masker), masker.text(logs)
            return self._record(
                run_id,
                action,
                key_id,
                conversation,
                outcome,
                logs,
                started_at,
                digest,
                dry_run,
                hashed,
                egress,
                placeholder,
                front_door,
                executor=executor,
                args=args,
                secrets=tuple(name for name, value in secrets.items() if value is not None),
                tier=tier,
            )
        finally:
            if settled is not None:
                # Once the caller has its answer: acknowledging the outcome to its worker
                # would take the CPU from the response still being written.
                self._sandboxes.foreground.after_this_run(settled)

    def complete_dispatched(
        self,
        ticket: Ticket,
        action: Action,
        conversation: Conversation | None,
        parse: Callable[[EffectiveLimits], SandboxRun],
    ) -> RunResult:
        """Record a run that another process handed to an executor worker and could not
        finish (it died), as its handover ``ticket`` describes it: ``parse`` turns the
        worker's outcome into a SandboxRun under the run's limits, which are derived again
        here from the action's policy and the org's; then the run is classified and recorded
        (completing its "running" record when it has one), with its effects applied, as its
        own process would have. Returns the recorded run."""
        with self._store.session() as s:
            org = repo.find_org_policy(s, action.org_id)
        limits = effective_limits(action.policy, self._settings, org)
        ran = parse(limits)
        outcome = _check_returns(action, _sandbox_outcome(ran, limits, conversation is not None))
        logs = raw_logs(ran.raw, self._settings.max_output_bytes)
        secrets = self._secret_values(action)
        if secrets:
            masker = Masker(v for v in secrets.values() if v is not None)
            outcome, logs = _masked(outcome, masker), masker.text(logs)
        return self._record(
            ticket.run_id,
            action,
            ticket.key_id,
            conversation,
            outcome,
            logs,
            ticket.started_at,
            ran.image_digest,
            hashed=self._policy_hash(limits),
            egress=ran.egress,
            placeholder=True,
            front_door=None if ticket.front_door is None else FrontDoor(ticket.front_door),
            executor=ran.executor,
            args=ticket.args,
            secrets=tuple(name for name, value in secrets.items() if value is not None),
            tier=TierStatus(limits.isolation, available=True),
        )

    def _sandbox_tier(self, isolation: Isolation) -> TierStatus:
        """The status of the tier a run asks for. With executor workers, the worker runs it:
        the tier as asked, its runtime as the worker has it."""
        if isinstance(self._sandboxes, LocalSandboxes):
            return self._runner.tier(isolation)
        return TierStatus(isolation, available=True)

    def _secret_values(self, action: Action) -> dict[str, str | None]:
        """The values of the secrets the action declares (None: not available: not set in
        the org, or no ACTIONCAGE_SECRETS_KEY)."""
        if not action.secrets:
            return {}
        if self._vault is None or not self._vault.enabled:
            return dict.fromkeys(action.secrets)
        return self._vault.values(action.org_id, action.secrets)

    def record_refused(
        self,
        run_id: str,
        action: Action,
        key_id: str | None,
        conversation: Conversation | None,
        message: str,
        front_door: FrontDoor | None = None,
        placeholder: bool = True,
        args: dict[str, Any] | None = None,
    ) -> RunResult:
        """Record a run that could not start (no slot free in time, a triggered run over
        the limits) as a sandbox_error; with ``placeholder`` it completes the "running"
        record, so that record never stays "running"."""
        outcome = _error(ErrorType.SANDBOX_ERROR, message)
        return self._record(
            run_id,
            action,
            key_id,
            conversation,
            outcome,
            "",
            repo.now(),
            None,
            placeholder=placeholder,
            front_door=front_door,
            args=args,
        )

    def _record(
        self,
        run_id: str,
        action: Action,
        key_id: str | None,
        conversation: Conversation | None,
        outcome: Outcome,
        logs: str,
        started_at: datetime,
        digest: str | None,
        dry_run: bool = False,
        hashed: str | None = None,
        egress: tuple[dict[str, Any], ...] = (),
        placeholder: bool = False,
        front_door: FrontDoor | None = None,
        args: dict[str, Any] | None = None,
        secrets: tuple[str, ...] = (),
        executor: str | None = None,
        tier: TierStatus | None = None,
    ) -> RunResult:
        finished_at = repo.now()
        applied = (
            not dry_run
            and outcome.status is RunStatus.OK
            and bool(outcome.effects)
            and conversation is not None
        )
        result = RunResult(
            run_id=run_id,
            org_id=action.org_id,
            action_id=action.id,
            action_version=action.version,
            status=outcome.status,
            output=outcome.output,
            error=outcome.error,
            effects=outcome.effects,
            effects_applied=applied,
            logs=logs,
            duration_ms=int((finished_at - started_at).total_seconds() * 1000),
            started_at=started_at,
            finished_at=finished_at,
            conversation_id=None if conversation is None else conversation.id,
            caller_key_id=key_id,
            image_digest=digest,
            policy_hash=hashed,
            egress=egress,
            front_door=front_door,
            args=args,
            secrets=secrets,
            executor=executor,
            isolation=None if tier is None else tier.isolation,
            runtime_version=None if tier is None else tier.runtime_version,
        )
        # Effects and the audit record land together or not at all.
        try:
            if applied and conversation is not None:
                with self._store.session() as s:
                    repo.add_run(s, result, replaces_placeholder=placeholder)
                    current = repo.get_conversation(s, action.org_id, conversation.id, lock=True)
                    repo.apply_to_conversation(
                        s, action.org_id, conversation.id, apply_effects(current, outcome.effects)
                    )
            else:  # the record alone: one statement, no session needed
                with self._store.writing() as conn:
                    repo.add_run(conn, result, replaces_placeholder=placeholder)
        except RunAlreadyEndedError:
            # A reaper ended this run ("executor lost") while this process was cut off from
            # the store: that record stands, and this outcome's effects are not applied.
            log.warning("run %s: already ended elsewhere; its late outcome is dropped", run_id)
            with self._store.session() as s:
                return repo.get_run(s, action.org_id, run_id)
        if self._metrics is not None:
            self._metrics.observe_run(result)
        return result


def raw_logs(raw: RawOutcome | None, cap_bytes: int | None = None) -> str:
    """The run's logs as text; logs cut at the output cap (``cap_bytes``) end in a marker
    saying so, so nobody mistakes the cut for the script's last words."""
    if raw is None:
        return ""
    text = raw.logs.decode("utf-8", errors="replace")
    if cap_bytes is not None and raw.output_exceeded and len(raw.logs) >= cap_bytes:
        text += f"\n{LOGS_CUT_MARKER} at the run's {cap_bytes}-byte output limit]\n"
    return text


# Starts the line added where the logs were cut at the output cap.
LOGS_CUT_MARKER = "[actioncage: logs cut here"


def _sandbox_outcome(ran: SandboxRun, limits: EffectiveLimits, has_conversation: bool) -> Outcome:
    """The outcome of the sandbox part of a run: classified, or a sandbox_error."""
    if ran.raw is None:
        outcome = _error(ErrorType.SANDBOX_ERROR, ran.error or "no run could be produced")
    else:
        outcome = classify(ran.raw, limits, has_conversation=has_conversation)
    return replace(outcome, error=explain_network(outcome.error, limits.egress, ran.egress))


def _check_returns(action: Action, outcome: Outcome) -> Outcome:
    """A successful outcome whose output breaks the action's ``returns`` is invalid_return
    (its effects are not applied)."""
    if outcome.status is not RunStatus.OK or action.returns is None:
        return outcome
    problems = returns_problems(action.returns, outcome.output)
    if not problems:
        return outcome
    return _error(
        ErrorType.INVALID_RETURN, "the output does not match returns: " + "; ".join(problems)
    )


def _masked(outcome: Outcome, masker: Masker) -> Outcome:
    error = outcome.error
    if error is not None:
        error = RunError(
            error.type,
            masker.text(error.message),
            None if error.traceback is None else masker.text(error.traceback),
        )
    return Outcome(
        outcome.status,
        masker.value(outcome.output),
        error,
        tuple(Effect(e.kind, masker.value(e.data)) for e in outcome.effects),
    )


def classify(raw: RawOutcome, limits: EffectiveLimits, has_conversation: bool) -> Outcome:
    """Turn what came out of a container (untrusted) into a validated outcome."""
    if raw.timed_out:
        return _error(ErrorType.TIMEOUT, f"the run passed its {limits.timeout_ms} ms deadline")
    if raw.output_exceeded:
        return _error(
            ErrorType.OUTPUT_LIMIT,
            f"result and logs passed the {limits.max_output_bytes}-byte output limit",
        )
    if raw.oom_killed:
        return _error(
            ErrorType.MEMORY_LIMIT, f"the run passed its {limits.memory_mb} MiB memory limit"
        )
    if raw.protocol_error is not None:
        return _error(ErrorType.INVALID_RETURN, raw.protocol_error)
    frame = raw.result_frame
    if frame is None:
        return _error(ErrorType.EXCEPTION, _ended_without_result(raw.exit_code))
    if frame.get("status") == "ok" and "output" in frame:
        try:
            effects = parse_effects(frame.get("effects", []))
        except EffectsInvalid as exc:
            return _error(ErrorType.INVALID_RETURN, f"effects rejected: {exc}")
        if effects and not has_conversation:
            return _error(ErrorType.INVALID_RETURN, "effects rejected: the run has no conversation")
        size = len(json.dumps(frame["output"], separators=(",", ":")).encode())
        if size > limits.max_output_bytes:
            return _error(ErrorType.OUTPUT_LIMIT, f"the result is {size} bytes, over the limit")
        return Outcome(status=RunStatus.OK, output=frame["output"], effects=effects)
    error = frame.get("error")
    if frame.get("status") == "error" and isinstance(error, dict):
        type_, message, tb = error.get("type"), error.get("message"), error.get("traceback")
        if type_ in RUNTIME_ERROR_TYPES and isinstance(message, str) and isinstance(tb, str | None):
            return _error(ErrorType(type_), message, None if tb is None else tb[:_MAX_TRACEBACK])
    return _error(ErrorType.INVALID_RETURN, "the sandbox sent a malformed result frame")


def _ended_without_result(exit_code: int | None) -> str:
    if exit_code is not None and exit_code > 128:
        try:
            name = signal.Signals(exit_code - 128).name
        except ValueError:
            name = f"signal {exit_code - 128}"
        return f"the script's process died ({name}) before returning a result"
    return f"the script ended the process (exit code {exit_code}) before returning a result"
