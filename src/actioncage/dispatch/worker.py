"""dispatch/: the executor worker (`actioncage worker`): consumes runs from the broker, at
most one per free slot, and turns each envelope into a raw outcome with this host's
sandboxes (the engine, the warm pool, the egress proxy); it holds no database and no
provider credentials: the start claim, host calls and the outcome go to the control plane
that dispatched the run (an outcome it does not acknowledge goes to the handover queue,
for another control plane: see dispatch/dispatcher.py). It heartbeats its slots, busy
count and warm sandboxes.

A run counts only once the dispatching process granted its start claim (see
dispatch/dispatcher.py). The claim goes out as soon as Celery's consumer receives the task
(its task_received signal), and the run's sandbox starts beside it, on this worker's own
thread, without waiting for the answer: nothing of the run leaves the worker before the
claim is granted. Its egress proxy holds every connection, its host calls wait, and its
outcome is sent only with the grant; a run whose claim is refused, or unanswered, is
discarded with everything it did, as if it never ran. So the claim's round trip (about
1.5 ms) overlaps the sandbox instead of preceding it. A task delivered again (its first
worker died, or the broker gave it back) does not start before its answer: its claim is
refused as a rule, and it would only take a slot meanwhile. Celery's pool thread waits for
the run and then acknowledges the task.
SIGTERM (Celery's warm shutdown): take no more runs, finish those in flight, then leave.

Leftovers: a worker's sandboxes carry its owner id (``wkr_<broker fingerprint>_<hex>``,
fresh per process), and its heartbeats name it. Every worker listens to the heartbeats too
and, once it has heard them for a stale window, removes the sandboxes of its broker's
worker owners none of them named in that window (a SIGKILLed worker's, on this engine):
never a live worker's, which heartbeats every worker_heartbeat_s, never its own, never
another broker's workers', and never an API process's (``ins_`` owners, swept by the
control plane from the database).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from celery import signals

from actioncage.dispatch import broker, messages
from actioncage.dispatch.messages import MessageInvalidError, RunTask
from actioncage.models import WorkerStatus
from actioncage.runs.sandboxes import LocalSandboxes, SandboxRun
from actioncage.sandbox import envelope
from actioncage.sandbox.channel import HostCallHandler
from actioncage.sandbox.pool import WarmPool
from actioncage.sandbox.runner import SandboxRunner
from actioncage.settings import Settings

log = logging.getLogger(__name__)

# The image digest is read from the engine once every this many heartbeats.
_DIGEST_EVERY = 30
WORKER_OWNER_PREFIX = "wkr_"
# An early start claim whose task never reached execute() is forgotten after this long.
_EARLY_KEPT_S = 300.0


def owner_prefix(broker_url: str) -> str:
    """The owner id prefix of the workers on this broker: a worker sweeps only its fellows'
    leftovers, the ones whose heartbeats it would hear (not those of another deployment
    sharing the engine through another broker)."""
    fingerprint = hashlib.sha256(broker.shown(broker_url).encode()).hexdigest()[:8]
    return f"{WORKER_OWNER_PREFIX}{fingerprint}_"


def worker_owner_id(broker_url: str) -> str:
    """A fresh owner id for a worker process's sandboxes."""
    return f"{owner_prefix(broker_url)}{uuid.uuid4().hex[:12]}"


class SilentWorkerOwners(Collection[str]):
    """The owners a sweep may take, as a membership test: worker owner ids that no
    heartbeat named within the stale window. Not enumerable (the dead are whatever the
    engine holds that nobody vouches for): it iterates as empty."""

    def __init__(self, prefix: str, heard: Collection[str]) -> None:
        self._prefix = prefix
        self._heard = frozenset(heard)

    def __contains__(self, owner: object) -> bool:
        return (
            isinstance(owner, str) and owner.startswith(self._prefix) and owner not in self._heard
        )

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


@dataclass(frozen=True)
class _Claim:
    """A start claim sent as its run's task arrived: the run, the claim's correlation id and
    when it was sent (monotonic); ``running``: the run, started then on the worker's own
    thread (None: the pool thread runs it once the claim is answered)."""

    task: RunTask
    corr: str
    sent_at: float
    running: Future[None] | None = None

    def forgotten(self, now: float) -> bool:
        """Whether its task never reached execute(), long since (a run still going is kept)."""
        going = self.running is not None and not self.running.done()
        return not going and now - self.sent_at > _EARLY_KEPT_S


def _delivered_before(request: Any) -> bool:
    """Whether the broker says it delivered this Celery task request before (its first
    worker died, or it was given back)."""
    return bool((getattr(request, "delivery_info", None) or {}).get("redelivered"))


class _Answer:
    """The answer to one start claim, waited for once (up to the claim's deadline) by
    whichever of the run's threads asks first: the run's own, its egress proxy's, its host
    calls'. None: no answer came in time."""

    def __init__(self, fetch: Callable[[], dict[str, Any] | None]) -> None:
        self._fetch = fetch
        self._lock = threading.Lock()
        self._asked = False
        self._answer: dict[str, Any] | None = None

    def get(self) -> dict[str, Any] | None:
        with self._lock:
            if not self._asked:
                self._answer, self._asked = self._fetch(), True
            return self._answer

    def grant(self) -> str | None:
        """The signed proof that this worker won the claim (opaque here), or None when the
        claim was refused or went unanswered."""
        answer = self.get()
        if answer is None or answer.get("ok") is not True:
            return None
        grant = answer.get("grant")
        return grant if isinstance(grant, str) else ""

    def granted(self) -> bool:
        return self.grant() is not None


class ExecutorWorker:
    """One worker process: ``slots`` runs at a time on this host's ``runner``."""

    def __init__(
        self,
        settings: Settings,
        name: str,
        slots: int,
        runner: SandboxRunner,
        pool: WarmPool | None,
        owner_id: str | None = None,
    ) -> None:
        """``owner_id``: the owner label of this worker's sandboxes (None: sweep nothing)."""
        assert settings.broker_url is not None
        self.name = name
        self.owner_id = owner_id
        self.slots = slots
        self.host = socket.gethostname()
        self._settings = settings
        self._url = settings.broker_url
        self._runner = runner
        self._pool = pool
        self._sandboxes = LocalSandboxes(settings, runner, name=name)
        self._app = broker.celery_app(self._url)
        self._app.conf.worker_enable_remote_control = False

        def run_task(task: Any, body: Any) -> None:
            self.execute(body, task.request.id, again=_delivered_before(task.request))

        self._app.task(
            name=broker.RUN_TASK,
            bind=True,
            acks_late=True,
            reject_on_worker_lost=True,
            ignore_result=True,
        )(run_task)
        self._inbox = broker.Inbox(
            self._url,
            f"actioncage.worker.{name}.{uuid.uuid4().hex[:8]}",
            self._on_message,
            heartbeats=owner_id is not None,
        )
        # Worker owner ids heard in heartbeats -> when (monotonic).
        self._owners_heard: dict[str, float] = {}
        self._swept_at = 0.0
        self.swept = 0
        self._publisher = broker.Publisher(self._url)
        self._lock = threading.Lock()
        self._waiting: dict[str, tuple[threading.Event, list[dict[str, Any]]]] = {}
        # Start claims sent as their task was received, by Celery task id (see _received).
        self._early: dict[str, _Claim] = {}
        # Runs started as their task was received: at most one per slot (Celery reserves
        # no more tasks than that).
        self._running = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="actioncage-run")
        self._busy = 0
        self._stop = threading.Event()
        self._beats: threading.Thread | None = None
        self._digest: str | None = None
        self.claim_timeout_s = max(5.0, settings.worker_stale_s)
        self.ack_timeout_s = 5.0
        self.refused = 0

    # --- life -------------------------------------------------------------------------------

    def serve(self) -> int:
        """Consume runs until SIGTERM or SIGINT (finishing those in flight); then stop
        heartbeating. Returns the exit code."""
        self._inbox.start(wait_s=5.0)
        signals.task_received.connect(self._received, weak=False)
        self._beats = threading.Thread(target=self._beat, name="actioncage-beat", daemon=True)
        self._beats.start()
        worker: Any = self._app.Worker(
            hostname=f"{self.name}@{self.host}",
            pool_cls="threads",
            concurrency=self.slots,
            queues=[broker.RUN_QUEUE],
            without_gossip=True,
            without_mingle=True,
            without_heartbeat=True,
            optimization="fair",
            quiet=True,
            loglevel="WARNING",
        )
        log.info("worker %s on %s: %d slots, broker %s", self.name, self.host, self.slots,
                 broker.shown(self._url))  # fmt: skip
        try:
            worker.start()
        finally:
            self.close()
        return int(worker.exitcode or 0)

    def close(self) -> None:
        """Say this worker is leaving, stop listening, remove the warm pool and finish the
        sandboxes' removals."""
        self._stop.set()
        signals.task_received.disconnect(self._received)
        self._running.shutdown(wait=True)  # the runs in flight finish with their sandboxes
        if self._beats is not None:
            self._beats.join(timeout=5)
        with contextlib.suppress(broker.BrokerUnavailableError):
            self._publisher.broadcast(messages.heartbeat_body(self.status(leaving=True)))
        self._inbox.close()
        self._publisher.close()
        self._runner.backend.close()  # the pool, when there is one, closes its backend

    def status(self, leaving: bool = False) -> WorkerStatus:
        warm = {} if self._pool is None else {p.name: p.ready for p in self._pool.stats()}
        with self._lock:
            busy = self._busy
        return WorkerStatus(
            name=self.name,
            host=self.host,
            slots=self.slots,
            busy=busy,
            warm=warm,
            image_digest=self._digest,
            leaving=leaving,
            seen_at=time.monotonic(),
            sent_at=time.time(),
        )

    def _beat(self) -> None:
        beats = 0
        while not self._stop.is_set():
            if beats % _DIGEST_EVERY == 0:
                try:
                    self._digest = self._runner.image_digest()
                except Exception as exc:  # no engine or no image: say so, keep beating
                    log.warning("worker %s: no sandbox image: %s", self.name, exc)
                    self._digest = None
            beats += 1
            body = messages.heartbeat_body(self.status())
            if self.owner_id is not None:
                body["owner"] = self.owner_id
            try:
                self._publisher.broadcast(body)
            except broker.BrokerUnavailableError as exc:
                log.warning("worker %s: heartbeat not sent: %s", self.name, exc)
            self._sweep()
            self._stop.wait(self._settings.worker_heartbeat_s)

    def _sweep(self) -> None:
        """Once a stale window, when this worker has heard the heartbeats for that long,
        remove the sandboxes of worker owners not heard meanwhile (dead workers')."""
        stale_s = self._settings.worker_stale_s
        now = time.monotonic()
        since = self._inbox.listening_since
        if self.owner_id is None or since is None or now - since < stale_s:
            return
        if now - self._swept_at < stale_s:
            return
        self._swept_at = now
        with self._lock:
            heard = {o for o, at in self._owners_heard.items() if now - at < stale_s}
        heard.add(self.owner_id)
        try:
            removed = self._runner.backend.sweep(
                SilentWorkerOwners(owner_prefix(self._url), heard),
                unowned_older_than_s=float("inf"),
            )
        except Exception as exc:  # no engine now: the next window tries again
            log.warning("worker %s: sweep of dead workers' sandboxes failed: %s", self.name, exc)
            return
        if removed:
            self.swept += removed
            log.warning("worker %s: removed %d sandboxes that dead workers left", self.name,
                        removed)  # fmt: skip

    # --- a run ------------------------------------------------------------------------------

    def _received(self, sender: Any = None, request: Any = None, **_: Any) -> None:
        """Celery's task_received signal, on its consumer thread as a run's task arrives,
        before the task goes to a pool thread: send the run's start claim now and start the
        run beside it (a task delivered again: only the claim), so the claim's round trip
        overlaps the hand-over and the sandbox; execute() waits for the run. Never raises
        into Celery."""
        try:
            if request is None or request.name != broker.RUN_TASK:
                return
            task = messages.parse_task(request.args[0] if request.args else None)
            if time.time() > task.start_by:
                return  # execute() drops it
            asked = self._send_ask(task.reply_to, self._claim(task))
            if asked is None:
                return  # not sent: execute() claims again
            now = time.monotonic()
            running = (
                None
                if _delivered_before(request)
                else self._running.submit(self._carry, task, asked, now)
            )
            with self._lock:
                for key in [k for k, c in self._early.items() if c.forgotten(now)]:
                    self._waiting.pop(self._early.pop(key).corr, None)
                self._early[request.id] = _Claim(task, asked, now, running)
        except MessageInvalidError:
            return  # execute() drops it, and says why
        except Exception:
            log.exception("worker %s: sending a start claim early failed", self.name)

    def _claim(self, task: RunTask) -> dict[str, Any]:
        """The start claim of ``task``'s run by this worker."""
        return {"type": "claim", "runId": task.run_id, "worker": self.name}

    def execute(self, body: Any, task_id: str | None = None, again: bool = False) -> None:
        """The run task: wait for the run started as its task arrived, or claim it (or take
        the claim sent then) and run it here, and send the outcome back. ``again``: the task
        was delivered before (its run starts only once its claim is granted)."""
        with self._lock:
            early = self._early.pop(task_id, None) if task_id is not None else None
        if early is not None and early.running is not None:
            early.running.result()
            return
        if early is not None:
            self._carry(early.task, early.corr, early.sent_at, ahead=False)
            return
        try:
            task = messages.parse_task(body)
        except MessageInvalidError as exc:
            log.warning("worker %s: dropped a malformed run: %s", self.name, exc)
            return
        if time.time() > task.start_by:
            log.warning("run %s: nobody waits for it to start any more; not starting it",
                        task.run_id)  # fmt: skip
            return
        corr = self._send_ask(task.reply_to, self._claim(task))
        if corr is None:
            log.warning("run %s: its start claim could not be sent; not starting it",
                        task.run_id)  # fmt: skip
            return
        self._carry(task, corr, time.monotonic(), ahead=not again)

    def _carry(self, task: RunTask, corr: str, sent_at: float, ahead: bool = True) -> None:
        """Run ``task`` whose start claim ``corr`` went out at ``sent_at``, and send its
        outcome once the claim is granted. ``ahead``: start the sandbox before the answer,
        holding back all that would leave the worker (egress, host calls, the outcome) until
        it is a yes; a no discards the run. Else the sandbox starts on a yes only."""
        # In flight from the claim until the outcome is sent: the engine's background work
        # (removals, the warm pool's refills) waits for it, as for an in-process run's answer.
        with self._in_flight():
            claim = self._claim(task)
            answer = _Answer(
                lambda: self._await_answer(
                    corr, self.claim_timeout_s - (time.monotonic() - sent_at)
                )
            )
            ran = None
            if ahead:
                ran = self._run(task, answer)
            if answer.get() is None:
                # The dispatching process (or the broker) is gone: a run never counts
                # unclaimed. Say so, in case it is only slow, so it stops waiting.
                log.warning("run %s: its start claim went unanswered; %s", task.run_id,
                            "discarding the run" if ahead else "not starting it")  # fmt: skip
                self._tell(task.reply_to, {**claim, "type": "declined"})
                return
            grant = answer.grant()
            if grant is None:
                with self._lock:
                    self.refused += 1
                what = "discarding it" if ahead else "not running it again"
                log.warning("run %s: start claim refused (started before, or over); %s",
                            task.run_id, what)  # fmt: skip
                return
            if ran is None:
                ran = self._run(task, answer)
            self._deliver(task, messages.outcome_body(task.run_id, self.name, grant, ran))

    def _run(self, task: RunTask, answer: _Answer) -> SandboxRun:
        """The run's sandbox, its egress and host calls held until the claim's answer."""
        return self._sandboxes.run(
            task.run_id,
            task.envelope,
            task.limits,
            self._relay_for(task, answer),
            admit=answer.granted,
        )

    def _deliver(self, task: RunTask, outcome: dict[str, Any]) -> None:
        """Send the outcome to the dispatching process; when it does not acknowledge it in
        time (it died), to the handover queue, with the run's ticket, where another control
        plane takes it."""
        corr = self._send_ask(task.reply_to, outcome, retry=True)
        if corr is not None and self._await_answer(corr, self.ack_timeout_s) is not None:
            return
        log.warning("run %s: its dispatching process did not acknowledge the outcome; handing "
                    "it over", task.run_id)  # fmt: skip
        handed = {**outcome, "handover": True, "ticket": task.ticket}
        self._tell(broker.HANDOVER_QUEUE, handed, retry=True)

    @contextmanager
    def _in_flight(self) -> Iterator[None]:
        with self._lock:
            self._busy += 1
        try:
            with self._runner.foreground.run():
                yield
        finally:
            with self._lock:
                self._busy -= 1

    def _relay_for(self, task: RunTask, answer: _Answer) -> HostCallHandler:
        timeout_s = self._settings.host_call_timeout_ms / 1000 + 5

        def relay(frame: dict[str, Any]) -> bytes:
            grant = answer.grant()
            if grant is None:
                return envelope.host_reply(
                    frame.get("id"), False, error="the run's start was not granted"
                )
            request = {
                "type": "host_call",
                "runId": task.run_id,
                "worker": self.name,
                "grant": grant,
            }
            reply = self._ask(task.reply_to, {**request, "frame": frame}, timeout_s)
            line = None if reply is None else reply.get("line")
            if not isinstance(line, str):
                return envelope.host_reply(
                    frame.get("id"), False, error="the control plane did not answer in time"
                )
            return line.encode() if line.endswith("\n") else line.encode() + b"\n"

        return relay

    # --- messages -------------------------------------------------------------------------

    def _ask(self, to: str, body: dict[str, Any], timeout_s: float) -> dict[str, Any] | None:
        """Send ``body`` to ``to`` and wait for the answer; None when none came in time."""
        corr = self._send_ask(to, body)
        return None if corr is None else self._await_answer(corr, timeout_s)

    def _send_ask(self, to: str, body: dict[str, Any], retry: bool = False) -> str | None:
        """Send ``body`` to ``to`` as a question (``retry``: as _tell); the correlation id its
        answer will carry (for _await_answer), or None when it could not be sent."""
        corr = uuid.uuid4().hex
        with self._lock:
            self._waiting[corr] = (threading.Event(), [])
        if not self._tell(to, {**body, "corr": corr, "replyTo": self._inbox.name}, retry):
            self._forget(corr)
            return None
        return corr

    def _await_answer(self, corr: str, timeout_s: float) -> dict[str, Any] | None:
        """The answer to the question ``corr``, waiting up to ``timeout_s``; None when none
        came in time."""
        with self._lock:
            waiter = self._waiting.get(corr)
        try:
            if waiter is None:
                return None
            done, box = waiter
            done.wait(max(0.0, timeout_s))
            return box[0] if box else None
        finally:
            self._forget(corr)

    def _forget(self, corr: str) -> None:
        with self._lock:
            self._waiting.pop(corr, None)

    def _tell(self, to: str, body: dict[str, Any], retry: bool = False) -> bool:
        """Send ``body``; with ``retry``, keep trying while the broker is away, for at most
        dispatch_grace_s. False when it could not be sent."""
        give_up = time.monotonic() + (self._settings.dispatch_grace_s if retry else 0)
        while True:
            try:
                self._publisher.send(to, body)
                return True
            except broker.BrokerUnavailableError as exc:
                if time.monotonic() >= give_up:
                    log.warning("worker %s: could not send a %s: %s", self.name, body["type"], exc)
                    return False
            self._stop.wait(0.5)

    def _on_message(self, body: dict[str, Any]) -> None:
        if body.get("type") == "heartbeat":
            owner = body.get("owner")
            if isinstance(owner, str) and owner.startswith(WORKER_OWNER_PREFIX):
                with self._lock:
                    self._owners_heard[owner] = time.monotonic()
            return
        corr = body.get("corr")
        with self._lock:
            waiter = self._waiting.get(corr) if isinstance(corr, str) else None
        if waiter is None:
            return  # an answer nobody waits for any more
        done, box = waiter
        box.append(body)
        done.set()
