"""runs/: the executor: validate args, run the script in a sandbox (or the API call),
classify the outcome, apply effects on success and record the run."""

from __future__ import annotations

import json
import logging
import signal
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from actioncage.actions.http import HttpActionRunner
from actioncage.actions.restricted import IMPORT_ALLOWLIST
from actioncage.actions.validation import args_problems
from actioncage.egress.guard import guard_from_settings, parse_patterns
from actioncage.egress.proxy import SOCKET_NAME, EgressProxy
from actioncage.errors import SandboxError, ValidationFailedError
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
    RawOutcome,
    RunError,
    RunResult,
    RunStatus,
)
from actioncage.runs.admission import Admission
from actioncage.runs.effects import EffectsInvalid, apply_effects, parse_effects
from actioncage.runs.slots import RunSlots
from actioncage.sandbox.backend import TierStatus
from actioncage.sandbox.envelope import RUNTIME_ERROR_TYPES, build_envelope
from actioncage.sandbox.limits import EGRESS_MOUNT, effective_limits, policy_hash
from actioncage.sandbox.runner import SandboxRunner
from actioncage.settings import Settings
from actioncage.store import Store, repo

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
    ) -> None:
        self._settings = settings
        self._store = store
        self._runner = runner
        self._host_calls = host_calls
        self._http = HttpActionRunner(settings)
        self._slots = slots or RunSlots(settings)
        self._metrics = metrics

    def in_flight(self) -> AbstractContextManager[None]:
        """Counts a run in flight for the block: the engine's background work (removals,
        pool refills) waits for a gap, so it does not take the CPU from a waiting caller."""
        return self._runner.foreground.run()

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
        no run slot can be had, and TierUnavailableError when the run's isolation tier cannot
        run on this machine (nothing is recorded then; a run never falls back to a weaker
        tier).
        """
        with self._runner.foreground.run():
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
        api_logs: str | None = None
        tier: TierStatus | None = None
        if admission is None:
            with self._store.session() as s:
                admission = Admission(repo.find_org_policy(s, action.org_id))
        problems = args_problems(action.parameters, args)
        if problems:
            outcome = _error(ErrorType.INVALID_ARGS, "; ".join(problems))
        elif action.type is ActionType.API and action.endpoint is not None:
            call = self._http.call(action.endpoint, args, action.policy, admission.org)
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
            tier = self._runner.require_tier(limits.isolation)
            hashed = policy_hash(limits, self._settings)
            proxy = self._egress_proxy(limits)
            try:
                if proxy is not None:
                    limits = replace(limits, egress_dir=proxy.start())
                digest = self._runner.image_digest()
                restricted = IMPORT_ALLOWLIST if org is not None and org.restricted else None
                line = build_envelope(
                    action.code,
                    args,
                    conversation_context(conversation),
                    limits,
                    restricted,
                    None if proxy is None else f"{EGRESS_MOUNT}/{SOCKET_NAME}",
                )
                # OverloadedError (no slot) passes through: no run is produced or recorded.
                with self._slots.hold():
                    raw = self._runner.run(run_id, line, limits, self._host_calls.answer)
                outcome = classify(raw, limits, has_conversation=conversation is not None)
            except SandboxError as exc:
                log.warning("run %s: %s", run_id, exc)
                outcome = _error(ErrorType.SANDBOX_ERROR, str(exc))
            except OSError as exc:  # the egress proxy could not listen
                log.warning("run %s: egress proxy: %s", run_id, exc)
                outcome = _error(ErrorType.SANDBOX_ERROR, f"egress proxy failed: {exc}")
            finally:
                if proxy is not None:
                    egress = proxy.close()
        return self._record(
            run_id,
            action,
            key_id,
            conversation,
            outcome,
            raw_logs(raw) if api_logs is None else api_logs,
            started_at,
            digest,
            dry_run,
            hashed,
            egress,
            placeholder,
            front_door,
            tier,
        )

    def _egress_proxy(self, limits: EffectiveLimits) -> EgressProxy | None:
        if not limits.egress:
            return None
        return EgressProxy(
            parse_patterns(limits.egress),
            guard_from_settings(self._settings),
            self._settings.egress_dir,
            refuse_ports_on_self=[self._settings.port],
        )

    def record_refused(
        self,
        run_id: str,
        action: Action,
        key_id: str | None,
        conversation: Conversation | None,
        message: str,
        front_door: FrontDoor | None = None,
        placeholder: bool = True,
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
            isolation=None if tier is None else tier.isolation,
            runtime_version=None if tier is None else tier.runtime_version,
        )
        # Effects and the audit record land together or not at all.
        with self._store.session() as s:
            if applied and conversation is not None:
                current = repo.get_conversation(s, action.org_id, conversation.id, lock=True)
                repo.apply_to_conversation(
                    s, action.org_id, conversation.id, apply_effects(current, outcome.effects)
                )
            repo.add_run(s, result, replaces_placeholder=placeholder)
        if self._metrics is not None:
            self._metrics.observe_run(result)
        return result


def raw_logs(raw: RawOutcome | None) -> str:
    return "" if raw is None else raw.logs.decode("utf-8", errors="replace")


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
