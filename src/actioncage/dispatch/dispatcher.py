"""dispatch/: the control plane's side: hands the sandbox part of each run to an executor
worker through the broker and waits for its outcome; answers the start claims and host
calls of its runs; keeps the table of live workers from their heartbeats.

Never executed twice: a worker must win the start claim of a run before anything of the
run leaves it (it may start the sandbox meanwhile, holding its egress, host calls and outcome:
dispatch/worker.py), and only the process that dispatched the run answers it, from the run's
state here (waiting -> started by one worker -> done, lost or abandoned), under one lock. A
second delivery of the same run (Celery redelivers an unacknowledged message when its
worker dies) finds it started, or over, or unknown, and is refused; when the dispatching
process is gone nobody answers and the worker gives up without running it.

Handover: each task carries its run's signed handover ticket (runs/tickets.py), and this
process acknowledges each outcome it receives. A worker whose outcome is not acknowledged
(the dispatching process died while the run was on it) sends it, with the ticket, to the
shared handover queue, which every control plane consumes; the one that takes it records
the run from the ticket (runs/jobs.py Jobs.adopt) once the dead process is known dead. The
outcome is only recorded there, the run is never started again. No database write happens
at dispatch: a run still out after dispatch_record_after_ms gets its durable record then.

Start grants: the yes to a start claim carries a grant signed with the tickets' secret,
naming the run and the worker. That worker sends it with the run's outcome and host calls
(checked here) and with an outcome it hands over (checked by the process that takes it), so
no other worker, though it received the task and knows the winner's name, can answer for
the run (short of reading other processes' queues on the broker: docs/scaling.md).
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from actioncage.dispatch import broker, messages
from actioncage.dispatch.messages import MessageInvalidError, RunTask
from actioncage.models import EffectiveLimits, WorkerStatus
from actioncage.runs.sandboxes import SandboxRun, handover_ticket
from actioncage.runs.tickets import Tickets
from actioncage.sandbox import envelope
from actioncage.sandbox.channel import HostCallHandler
from actioncage.sandbox.foreground import Foreground
from actioncage.settings import Settings

log = logging.getLogger(__name__)

EXECUTOR_LOST = (
    "executor lost: the worker running this run ({worker}) stopped answering before the "
    "run finished; it was not run again"
)
# Records a dead process's run from a worker's outcome and the run's handover ticket
# (RunService.adopt_dispatched).
Adopter = Callable[[str, str, Callable[[EffectiveLimits], SandboxRun]], bool]
# Host calls a worker may relay past the run's limit before they are refused here too.
_HOST_CALL_SLACK = 10


class _State(enum.Enum):
    WAITING = "waiting"  # on the run queue, no worker has claimed it
    STARTED = "started"  # one worker won the claim
    DONE = "done"  # its outcome came
    LOST = "lost"  # its worker went silent or its deadline passed
    ABANDONED = "abandoned"  # nobody claimed it in time: it must never start


@dataclass
class _Run:
    limits: EffectiveLimits
    on_host_call: HostCallHandler
    dispatched_at: float
    state: _State = _State.WAITING
    worker: str | None = None
    started_at: float = 0.0
    host_calls: int = 0
    result: SandboxRun | None = None
    changed: threading.Condition = field(default_factory=threading.Condition)


class Workers:
    """Live workers by name, from their heartbeats (this process's view)."""

    def __init__(self, stale_s: float) -> None:
        self._stale_s = stale_s
        self._lock = threading.Lock()
        self._by_name: dict[str, WorkerStatus] = {}
        self.heard = threading.Event()  # set once a live worker's heartbeat came

    def seen(self, status: WorkerStatus) -> None:
        with self._lock:
            if status.leaving:
                self._by_name.pop(status.name, None)
            else:
                self._by_name[status.name] = status
                self.heard.set()

    def live(self) -> list[WorkerStatus]:
        """The workers heard from within the stale window, by name."""
        now = time.monotonic()
        with self._lock:
            return sorted(
                (w for w in self._by_name.values() if now - w.seen_at < self._stale_s),
                key=lambda w: w.name,
            )

    def expire(self) -> set[str]:
        """Forget the workers silent for the stale window; returns every name not live."""
        now = time.monotonic()
        with self._lock:
            for name in [n for n, w in self._by_name.items() if now - w.seen_at >= self._stale_s]:
                del self._by_name[name]
            return set(self._by_name)


class Dispatcher:
    """The sandbox part of runs, on executor workers (a runs/sandboxes.Sandboxes)."""

    def __init__(
        self, settings: Settings, instance_id: str, foreground: Foreground, tickets: Tickets
    ) -> None:
        assert settings.broker_url is not None
        self._tickets = tickets
        self._settings = settings
        self._url = settings.broker_url
        self.foreground = foreground
        self._app = broker.celery_app(self._url)
        self.workers = Workers(settings.worker_stale_s)
        self._inbox = broker.Inbox(
            self._url,
            f"actioncage.reply.{instance_id}",
            self._on_message,
            heartbeats=True,
            on_tick=self._expire,
            shared=broker.HANDOVER_QUEUE,
        )
        self._publisher = broker.Publisher(self._url)
        self._run_queue = broker.RunQueue(self._app, self._url)
        self._host_calls = ThreadPoolExecutor(
            max_workers=8, thread_name_prefix="actioncage-hostcall"
        )
        self._adoptions = ThreadPoolExecutor(max_workers=4, thread_name_prefix="actioncage-adopt")
        # Acknowledgements are sent from here, off the caller's path.
        self._acks = ThreadPoolExecutor(max_workers=1, thread_name_prefix="actioncage-ack")
        # Set by the composition root once the run service exists.
        self.adopt: Adopter | None = None
        self._lock = threading.Lock()
        self._runs: dict[str, _Run] = {}

    def start(self) -> None:
        """Start listening (heartbeats, claims, outcomes); waits up to 3 s for the broker and
        one heartbeat interval for the workers to be heard, then carries on regardless."""
        if self._inbox.start(wait_s=3.0):
            self.workers.heard.wait(self._settings.worker_heartbeat_s * 1.5)
        else:
            log.warning("the run broker at %s does not answer yet", broker.shown(self._url))

    def close(self) -> None:
        self._inbox.close()
        self._publisher.close()
        self._run_queue.close()
        self._host_calls.shutdown(wait=False, cancel_futures=True)
        self._adoptions.shutdown(wait=False, cancel_futures=True)
        self._acks.shutdown(wait=True)

    # --- a run ------------------------------------------------------------------------------

    def run(
        self,
        run_id: str,
        envelope_line: bytes,
        limits: EffectiveLimits,
        on_host_call: HostCallHandler,
    ) -> SandboxRun:
        """Hand the run to a worker and wait for its outcome: for a worker to start it within
        run_queue_wait_ms, then for its timeout plus dispatch_grace_s. Never raises: a broker
        that does not answer, no live worker, no worker in time and a lost worker are each a
        SandboxRun with an error (the run is then never started, or never started again)."""
        wait_s = self._settings.run_queue_wait_ms / 1000
        run = _Run(limits, on_host_call, time.monotonic())
        return self._run(run_id, envelope_line, limits, run, wait_s)

    def _run(
        self, run_id: str, envelope_line: bytes, limits: EffectiveLimits, run: _Run, wait_s: float
    ) -> SandboxRun:
        refused = self._refusal()
        if refused is not None:
            return SandboxRun(None, refused)
        with self._lock:
            self._runs[run_id] = run
        try:
            task = RunTask(
                run_id,
                envelope_line,
                limits,
                self._inbox.name,
                time.time() + wait_s,
                ticket=handover_ticket.get(),
            )
            try:
                self._run_queue.send(messages.task_body(task))
            except broker.BrokerUnavailableError as exc:
                self._end(run, _State.ABANDONED)
                return SandboxRun(None, str(exc))
            return self._await(run, wait_s)
        finally:
            with self._lock:
                self._runs.pop(run_id, None)

    def _refusal(self) -> str | None:
        """Why no run can be handed out now, or None."""
        if not self._inbox.connected.is_set():
            return f"the run broker at {broker.shown(self._url)} does not answer"
        if not self.workers.live():
            since = self._inbox.listening_since
            heard_long_enough = since is not None and (
                time.monotonic() - since >= self._settings.worker_stale_s
            )
            if heard_long_enough:
                return (
                    "no executor worker is live (none sent a heartbeat in the last "
                    f"{self._settings.worker_stale_s:g} s)"
                )
        return None

    def _await(self, run: _Run, wait_s: float) -> SandboxRun:
        with run.changed:
            run.changed.wait_for(lambda: run.state is not _State.WAITING, timeout=wait_s)
        if self._end(run, _State.ABANDONED, only_from=_State.WAITING):
            return SandboxRun(None, f"no executor worker started the run within {wait_s:g} s")
        deadline = run.started_at + run.limits.timeout_ms / 1000 + self._settings.dispatch_grace_s
        with run.changed:
            run.changed.wait_for(
                lambda: run.state is not _State.STARTED, timeout=deadline - time.monotonic()
            )
        self._end(run, _State.LOST, only_from=_State.STARTED)
        if run.state is _State.DONE and run.result is not None:
            return run.result
        if run.state is _State.ABANDONED:  # its worker gave up before starting it
            return SandboxRun(None, "the executor worker gave up before starting the run")
        return SandboxRun(None, EXECUTOR_LOST.format(worker=run.worker), executor=run.worker)

    def _end(self, run: _Run, state: _State, only_from: _State | None = None) -> bool:
        """Move ``run`` to ``state`` (when it is in ``only_from``); True when it moved."""
        with self._lock, run.changed:
            if only_from is not None and run.state is not only_from:
                return False
            run.state = state
            run.changed.notify_all()
            return True

    # --- the inbox ---------------------------------------------------------------------------

    def _on_message(self, body: dict[str, Any]) -> None:
        kind = body.get("type")
        if kind == "heartbeat":
            try:
                self.workers.seen(messages.parse_heartbeat(body, time.monotonic()))
            except MessageInvalidError as exc:
                log.warning("dropped a malformed heartbeat: %s", exc)
            return
        run_id, worker = body.get("runId"), body.get("worker")
        if not isinstance(run_id, str) or not isinstance(worker, str):
            log.warning("dropped a %r message without a run id and worker", kind)
            return
        with self._lock:
            run = self._runs.get(run_id)
        if kind == "claim":
            self._claim(run_id, run, worker, body)
        elif kind == "declined":
            if run is not None and run.worker == worker:
                self._end(run, _State.ABANDONED, only_from=_State.STARTED)
        elif kind == "host_call":
            self._host_call(run_id, run, worker, body)
        elif kind == "outcome" and run is None and body.get("handover") is True:
            self._adopt(run_id, worker, body)
        elif kind == "outcome" and not self._outcome(run_id, run, worker, body):
            self._acknowledge(body)  # not this run's outcome (any more): nothing waits on it
        else:
            log.warning("dropped a message of unknown type %r", kind)

    def _claim(self, run_id: str, run: _Run | None, worker: str, body: dict[str, Any]) -> None:
        granted = False
        if run is not None:
            with self._lock, run.changed:
                if run.state is _State.WAITING:
                    run.state, run.worker, run.started_at = _State.STARTED, worker, time.monotonic()
                    granted = True
        if not granted:
            log.warning(
                "run %s: refused %s's start claim (%s): it never runs twice",
                run_id,
                worker,
                "unknown here" if run is None else run.state.value,
            )
        answer: dict[str, Any] = {"type": "claimed", "ok": granted}
        if granted:
            answer["grant"] = self._tickets.grant(run_id, worker)
        self._reply(body, answer)
        if granted and run is not None:
            # The caller's thread moves on to the run's deadline only now, once the answer is
            # out: woken before, it would take the interpreter from this thread meanwhile.
            with run.changed:
                run.changed.notify_all()

    def _host_call(self, run_id: str, run: _Run | None, worker: str, body: dict[str, Any]) -> None:
        frame = body.get("frame")
        call_id = frame.get("id") if isinstance(frame, dict) else None
        refusal: str | None = None
        with self._lock:
            if run is None or not self._from_winner(run_id, run, worker, body):
                refusal = "the run is not running on this worker"
            elif run.host_calls >= run.limits.max_host_calls + _HOST_CALL_SLACK:
                refusal = f"at most {run.limits.max_host_calls} host calls per run"
            else:
                run.host_calls += 1
        if refusal is not None or run is None or not isinstance(frame, dict):
            line = envelope.host_reply(call_id, False, error=refusal or "malformed host call")
            self._reply(body, {"type": "host_reply", "line": line.decode()})
            return
        answer = run.on_host_call

        def answer_it() -> None:
            line = answer(frame)
            self._reply(body, {"type": "host_reply", "line": line.decode()})

        self._host_calls.submit(answer_it)

    def _outcome(self, run_id: str, run: _Run | None, worker: str, body: dict[str, Any]) -> bool:
        """Take the outcome as the run's result; False when it is not (the run ended, or
        another worker has it)."""
        if run is None:
            log.warning("run %s: an outcome from %s came after the run ended", run_id, worker)
            return False
        try:
            result = messages.parse_outcome(body, run.limits)
        except MessageInvalidError as exc:
            log.warning("run %s: %s sent a malformed outcome: %s", run_id, worker, exc)
            result = SandboxRun(
                None, f"the executor worker sent a malformed outcome ({exc})", executor=worker
            )
        with self._lock, run.changed:
            if not self._from_winner(run_id, run, worker, body):
                log.warning("run %s: dropped an outcome from %s (%s)", run_id, worker, run.state)
                return False
            # Acknowledged once the caller recorded the run and wrote its response
            # (SandboxRun.settled): until then the worker holds back its engine work, which
            # would take the CPU from the record and the response.
            run.state = _State.DONE
            run.result = dataclasses.replace(result, settled=self._acknowledger(body))
            run.changed.notify_all()
        return True

    def _from_winner(self, run_id: str, run: _Run, worker: str, body: dict[str, Any]) -> bool:
        """Whether ``body`` (an outcome or host call) comes from the worker that won the
        run's start claim and the run is still on it: its name, and the grant of the run to
        it (the same check as a handed-over outcome's). Under the run's lock."""
        return (
            run.state is _State.STARTED
            and run.worker == worker
            and self._tickets.granted(body.get("grant"), run_id, worker)
        )

    def _acknowledger(self, outcome: dict[str, Any]) -> Callable[[], None]:
        """What acknowledges ``outcome``, on the acknowledgements' thread (off the caller's
        path)."""

        def acknowledge() -> None:
            try:
                self._acks.submit(self._acknowledge, outcome)
            except RuntimeError:  # closing: the worker hands it over, harmlessly
                log.info("closing: the outcome of run %s is not acknowledged", outcome.get("runId"))

        return acknowledge

    def _acknowledge(self, outcome: dict[str, Any]) -> None:
        """Tell the worker its outcome was taken: it will not hand it over, and its engine
        work (the sandbox's removal, its warm pool's refill) may go ahead."""
        self._reply(outcome, {"type": "outcome_ack"})

    def _adopt(self, run_id: str, worker: str, body: dict[str, Any]) -> None:
        """An outcome its dispatching process did not acknowledge: record the run here (on
        a thread: it waits until that process is known dead)."""
        adopt, ticket = self.adopt, body.get("ticket")
        if adopt is None or not isinstance(ticket, str):
            log.warning("run %s: dropped a handed-over outcome from %s", run_id, worker)
            return
        if not self._tickets.granted(body.get("grant"), run_id, worker):
            log.warning(
                "run %s: dropped a handed-over outcome from %s: no start grant of the run to "
                "that worker (it never won the run's start claim)",
                run_id,
                worker,
            )
            return

        def parse(limits: EffectiveLimits) -> SandboxRun:
            try:
                return messages.parse_outcome(body, limits)
            except MessageInvalidError as exc:
                log.warning("run %s: %s sent a malformed outcome: %s", run_id, worker, exc)
                return SandboxRun(
                    None, f"the executor worker sent a malformed outcome ({exc})", executor=worker
                )

        def adopt_it() -> None:
            try:
                adopt(run_id, ticket, parse)
            except Exception:
                log.exception("run %s: completing a handed-over outcome failed", run_id)

        self._adoptions.submit(adopt_it)

    def _reply(self, request: dict[str, Any], body: dict[str, Any]) -> None:
        to, corr = request.get("replyTo"), request.get("corr")
        if not isinstance(to, str) or not isinstance(corr, str):
            return
        try:
            self._publisher.send(to, {**body, "corr": corr})
        except broker.BrokerUnavailableError as exc:
            log.warning("could not answer a worker: %s", exc)

    def _expire(self) -> None:
        """End the started runs of workers gone silent, and give up on waiting runs when no
        worker is live at all."""
        live = {w.name for w in self.workers.live()}
        self.workers.expire()
        now = time.monotonic()
        with self._lock:
            runs = list(self._runs.values())
        for run in runs:
            # A claim is a sign of life too: a worker this process has not heard a heartbeat
            # from yet is given the stale window from its claim.
            silent = (
                run.worker not in live and now - run.started_at >= self._settings.worker_stale_s
            )
            if run.state is _State.STARTED and silent:
                if self._end(run, _State.LOST, only_from=_State.STARTED):
                    log.warning(
                        "executor %s went silent; its run ends as executor lost", run.worker
                    )
            elif (
                run.state is _State.WAITING
                and not live
                and now - run.dispatched_at >= self._settings.worker_stale_s
            ):
                self._end(run, _State.ABANDONED, only_from=_State.WAITING)

    # --- what /health and `actioncage workers` show --------------------------------------------

    def live_workers(self) -> list[WorkerStatus]:
        return self.workers.live()

    def image_digest(self) -> str | None:
        """The sandbox image a live worker runs (None: no worker is live)."""
        live = self.workers.live()
        return next((w.image_digest for w in live if w.image_digest), None)

    @property
    def broker_connected(self) -> bool:
        return self._inbox.connected.is_set()


def listen_for_workers(settings: Settings, seconds: float) -> list[WorkerStatus]:
    """The live workers heard on the broker within ``seconds`` (for `actioncage workers`)."""
    assert settings.broker_url is not None
    workers = Workers(settings.worker_stale_s)

    def take(body: dict[str, Any]) -> None:
        if body.get("type") == "heartbeat":
            try:
                workers.seen(messages.parse_heartbeat(body, time.monotonic()))
            except MessageInvalidError as exc:
                log.warning("dropped a malformed heartbeat: %s", exc)

    name = f"actioncage.cli.{socket.gethostname()}.{uuid.uuid4().hex[:8]}"
    inbox = broker.Inbox(settings.broker_url, name, take, heartbeats=True)
    try:
        if not inbox.start(wait_s=5.0):
            raise broker.BrokerUnavailableError(
                f"the run broker at {broker.shown(settings.broker_url)} does not answer"
            )
        done = threading.Event()
        done.wait(seconds)  # heartbeats arrive on the inbox thread meanwhile
    finally:
        inbox.close()
    return workers.live()
