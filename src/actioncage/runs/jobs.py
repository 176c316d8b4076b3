"""runs/: durable background runs: each run that outlasts its caller's waitMs has a job row
in the database (shared by every process) leased by the process running it; a renewal loop
keeps this process's leases fresh and a reaper in every serve process ends the jobs of dead
processes as sandbox_error ("executor lost"). Nothing is ever run twice.

A job is written with its run's "running" placeholder in one transaction (state queued),
moves to running by a conditional UPDATE when a worker thread starts it, and to done when
its run is recorded. The reaper takes a job by one conditional UPDATE (lease expired), so
two reapers never both end it, and it completes the run record only while it still says
"running": a run recorded just before its process died keeps its outcome. Callbacks go to
the outbox (runs/outbox.py) in the transaction that ends the job.

Leases use each process's clock: keep the hosts' clocks within a few seconds of each other
(well under job_lease_s).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from actioncage.errors import BusyError
from actioncage.models import Action, FrontDoor, RunResult
from actioncage.runs.background import BackgroundRuns
from actioncage.runs.delayed import DelayedWrites
from actioncage.runs.outbox import Outbox
from actioncage.runs.sandboxes import handover_ticket
from actioncage.runs.tickets import Ticket, TicketInvalidError, Tickets
from actioncage.settings import Settings
from actioncage.store import Store, repo
from actioncage.store import callbacks as outbox_repo
from actioncage.store import instances as instance_rows
from actioncage.store import jobs as jobs_repo

log = logging.getLogger(__name__)

EXECUTOR_LOST = (
    "executor lost: the process running this run stopped (it died, was killed, or the run "
    "hung past its deadline) before the run finished; it was not run again"
)


class Jobs:
    """Background runs of this process (``owner``, its instance id), and the reaper of every
    process's lost ones."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        owner: str,
        runs: BackgroundRuns,
        outbox: Outbox,
        callback_body: Callable[[RunResult], bytes],
        tickets: Tickets | None = None,
    ) -> None:
        """``tickets``: the deployment's handover tickets (needed for runs on executor
        workers: handed_over, adopt)."""
        self._settings = settings
        self._tickets = tickets
        self._store = store
        self._owner = owner
        self._runs = runs
        self._outbox = outbox
        # The body a callback carries: the front doors' Run, rendered by the web layer.
        self._callback_body = callback_body
        self._lock = threading.Lock()
        self._closing = False
        self._in_flight: set[Future[RunResult]] = set()
        # Jobs of runs on executor workers whose leases this process renews.
        self._handed_over = 0
        self._finishing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="actioncage-jobs")
        self._late = DelayedWrites(settings.dispatch_record_after_ms / 1000)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def owner(self) -> str:
        return self._owner

    def start(self) -> None:
        """Start the lease renewal and reaper loops."""
        loops = [
            ("actioncage-leases", self.renew, self._settings.job_renew_s),
            ("actioncage-reaper", self.reap, self._settings.job_reap_s),
        ]
        for name, step, every_s in loops:
            thread = threading.Thread(
                target=self._loop, args=(step, every_s), name=name, daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def _loop(self, step: Callable[[], int], every_s: float) -> None:
        while not self._stop.is_set():
            try:
                step()
            except Exception:  # the loop must outlive a database hiccup
                log.exception("background job loop %s failed", step.__name__)
            self._stop.wait(every_s)

    # --- this process's runs -----------------------------------------------------------

    def submit(
        self,
        run_id: str,
        action: Action,
        key_id: str | None,
        conversation_id: str | None,
        front_door: FrontDoor | None,
        callback_url: str | None,
        run: Callable[[], RunResult],
        abandon: Callable[[], None],
        args: dict[str, Any] | None = None,
    ) -> Future[RunResult]:
        """Record the run as "running" with its job, then ``run()`` it on a worker thread.
        ``run()`` records the run; ``abandon()`` frees what it would have freed when the run
        never starts (its job was ended first). Returns the future of the recorded run.

        Raises BusyError when the background is full or this process is shutting down
        (nothing is recorded then).
        """
        now = repo.now()
        payload: dict[str, Any] = {
            "action_id": action.id,
            "front_door": None if front_door is None else str(front_door),
            "callback_url": callback_url,
        }
        with self._lock:
            if self._closing:
                raise BusyError("the server is shutting down; try another one")
            with self._store.session() as s:
                repo.add_running_run(s, run_id, action, key_id, conversation_id, args)
                jobs_repo.add_queued_job(
                    s,
                    run_id,
                    action.org_id,
                    payload,
                    self._owner,
                    now,
                    self._lease_from(now),
                    self._deadline_from(now, action),
                )

            def work() -> RunResult:
                return self._work(run_id, action, callback_url, run, abandon)

            try:
                future = self._runs.submit(work)
            except BusyError:
                with self._store.session() as s:
                    jobs_repo.discard_job(s, run_id)
                    repo.discard_running_run(s, action.org_id, run_id)
                raise
            self._in_flight.add(future)
        future.add_done_callback(self._forget)
        return future

    def _forget(self, future: Future[RunResult]) -> None:
        with self._lock:
            self._in_flight.discard(future)

    def _lease_from(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self._settings.job_lease_s)

    def _deadline_from(
        self, now: datetime, action: Action, margin_s: float | None = None
    ) -> datetime:
        """When a run started ``now`` is over at the latest: it may first wait
        run_queue_wait_ms (for a run slot, or for a worker to start it), then gets its
        timeout, then ``margin_s`` (default job_deadline_margin_s) to be recorded."""
        timeout_ms = min(
            action.policy.timeout_ms or self._settings.default_timeout_ms,
            self._settings.max_timeout_ms,
        )
        margin = self._settings.job_deadline_margin_s if margin_s is None else margin_s
        return now + timedelta(
            milliseconds=timeout_ms + self._settings.run_queue_wait_ms, seconds=margin
        )

    def _work(
        self,
        run_id: str,
        action: Action,
        callback_url: str | None,
        run: Callable[[], RunResult],
        abandon: Callable[[], None],
    ) -> RunResult:
        now = repo.now()
        with self._store.session() as s:
            started = jobs_repo.start_job(
                s, run_id, self._owner, now, self._deadline_from(now, action)
            )
        if not started:  # reaped while it waited for a worker: never start it
            abandon()
            log.warning("run %s was ended before it started; not running it", run_id)
            with self._store.session() as s:
                return repo.get_run(s, action.org_id, run_id)
        try:
            result = run()
        except BaseException as exc:
            # Whatever went wrong, the record must not stay "running".
            self._end(run_id, f"the background run failed: {exc}", owner=self._owner)
            raise
        self._finish(result, callback_url)
        return result

    def _finish(self, run: RunResult, callback_url: str | None) -> None:
        now = repo.now()
        with self._store.session() as s:
            mine = jobs_repo.finish_job(s, run.run_id, self._owner, now)
            if mine and callback_url is not None:
                outbox_repo.add_callback(
                    s, run.org_id, run.run_id, callback_url, self._callback_body(run), now
                )
        if not mine:
            # Its lease lapsed (this process could not renew it for job_lease_s) and a reaper
            # ended it, and owed its callback.
            log.warning("run %s finished after its job was ended as executor lost", run.run_id)
        elif callback_url is not None:
            self._outbox.wake()

    # --- foreground runs on executor workers (dispatch/) -------------------------------------

    @contextmanager
    def handed_over(
        self,
        run_id: str,
        action: Action,
        key_id: str | None,
        conversation_id: str | None,
        front_door: FrontDoor | None,
        args: dict[str, Any],
    ) -> Iterator[None]:
        """For the block, a foreground run is on an executor worker: its task carries a
        signed handover ticket (handover_ticket), so that if this process dies another one
        completes the run from the worker's outcome (``adopt``). Once it has been out for
        dispatch_record_after_ms it also gets a durable "running" record and a running job
        leased by this process, so that even when its worker dies too a reaper ends it by its
        deadline. The block records the run (completing that record when there is one); when
        it raises without recording it, the record and job are removed."""
        if self._tickets is None:
            raise RuntimeError("handed_over needs the deployment's handover tickets")
        now = repo.now()
        # Until then a worker may still send the outcome: dispatch_grace_s covers its way
        # back, twice.
        deadline = self._deadline_from(now, action, 2 * self._settings.dispatch_grace_s)
        ticket = Ticket(
            run_id=run_id,
            org_id=action.org_id,
            action_id=action.id,
            key_id=key_id,
            conversation_id=conversation_id,
            front_door=None if front_door is None else str(front_door),
            args=args,
            started_at=now,
            dispatcher=self._owner,
            deadline_at=deadline,
        )
        payload: dict[str, Any] = {
            "action_id": action.id,
            "front_door": ticket.front_door,
            "callback_url": None,
            "handover": True,
        }

        def write() -> None:
            at = repo.now()
            with self._store.session() as s:
                repo.add_running_run(s, run_id, action, key_id, conversation_id, args)
                jobs_repo.add_queued_job(
                    s, run_id, action.org_id, payload, self._owner, at, self._lease_from(at),
                    deadline,
                )  # fmt: skip
                jobs_repo.start_job(s, run_id, self._owner, at, deadline)
            self._hold_handover_job()  # a job whose lease this process now renews

        token = handover_ticket.set(self._tickets.issue(ticket))
        # Only a run still out after the delay pays for a durable record (off the caller's
        # path); a run that comes back sooner is recorded once, when it ends.
        record = self._late.schedule(write, f"run {run_id}")
        try:
            yield
        except BaseException:
            if record.settle():
                try:
                    with self._store.session() as s:
                        jobs_repo.discard_job(s, run_id)
                        repo.discard_running_run(s, action.org_id, run_id)
                finally:
                    self._release_handover_job()
            raise
        finally:
            handover_ticket.reset(token)
        # The run is recorded. A record written after that fails (the run's id is taken),
        # harmlessly; one written before it has a job to mark done, off the caller's path (if
        # this process dies first, the reaper marks it done at its deadline, changing nothing).
        if record.settle():
            self._finishing.submit(self._finish_handover, run_id)

    def _finish_handover(self, run_id: str) -> None:
        try:
            with self._store.session() as s:
                jobs_repo.finish_job(s, run_id, self._owner, repo.now())
        except Exception:  # the reaper marks it done at its deadline
            log.exception("run %s: marking its job done failed", run_id)
        finally:
            self._release_handover_job()

    def _hold_handover_job(self) -> None:
        with self._lock:
            self._handed_over += 1

    def _release_handover_job(self) -> None:
        with self._lock:
            self._handed_over -= 1

    def adopt(self, run_id: str, token: str, complete: Callable[[Ticket], RunResult]) -> bool:
        """Complete the record of a run handed to a worker by a process that is gone, from
        the run's handover ticket ``token`` (signed here; a forged or altered one is refused):
        wait until that process is dead (its instance heartbeat went stale; with a durable
        job, until its lease runs out, then take the job over), then ``complete(ticket)``
        records the outcome. Returns whether this process completed it (False: the ticket is
        invalid, the owner is alive and recorded it, or it ended meanwhile)."""
        if self._tickets is None:
            return False
        try:
            ticket = self._tickets.read(token, run_id)
        except TicketInvalidError as exc:
            log.warning("run %s: dropped a handed-over outcome: %s", run_id, exc)
            return False
        job: jobs_repo.Job | None = None
        while not self._stop.is_set():
            now = repo.now()
            if ticket.deadline_at <= now:
                return False
            with self._store.session() as s:
                job = jobs_repo.find_job(s, run_id)
                if job is not None:
                    if (
                        not job.payload.get("handover")  # a background run: the reaper's
                        or job.state != jobs_repo.RUNNING
                        or job.deadline_at <= now
                    ):
                        return False
                    if job.lease_until is not None and job.lease_until < now:
                        if not jobs_repo.take_over_job(
                            s, run_id, self._owner, now, self._lease_from(now)
                        ):
                            return False
                        break
                elif repo.run_is_recorded(s, ticket.org_id, run_id):
                    return False  # its process recorded it after all
                elif not instance_rows.is_live(
                    s, ticket.dispatcher, now - timedelta(seconds=self._settings.owner_stale_s)
                ):
                    break
            self._stop.wait(self._settings.job_renew_s)
        else:
            return False
        if job is None:
            complete(ticket)
        else:
            self._hold_handover_job()  # the job taken over: its lease is renewed here
            try:
                complete(ticket)
                with self._store.session() as s:
                    jobs_repo.finish_job(s, run_id, self._owner, repo.now())
            finally:
                self._release_handover_job()
        log.warning("run %s: its process was gone; completed its record here", run_id)
        return True

    # --- every process's lost runs -------------------------------------------------------

    def renew(self) -> int:
        """Extend this process's leases. Returns how many jobs it holds."""
        with self._lock:
            if not self._in_flight and not self._handed_over:
                return 0  # no write every few seconds from an idle process
        now = repo.now()
        with self._store.session() as s:
            return jobs_repo.renew_leases(s, self._owner, now, self._lease_from(now))

    def reap(self) -> int:
        """End every job whose lease ran out as sandbox_error (executor lost), never running
        it again, and owe its callback. Returns how many this call ended."""
        now = repo.now()
        with self._store.session() as s:
            expired = [r for r in jobs_repo.expired_jobs(s, now) if not _awaits_outcome(s, r, now)]
        ended = sum(self._end(run_id, EXECUTOR_LOST, expired_before=now) for run_id in expired)
        if ended:
            log.warning("ended %d background runs whose process was lost", ended)
        return ended

    def _end(
        self,
        run_id: str,
        message: str,
        *,
        expired_before: datetime | None = None,
        owner: str | None = None,
    ) -> bool:
        now = repo.now()
        with self._store.session() as s:
            ended = jobs_repo.end_job(
                s, run_id, now, message, expired_before=expired_before, owner=owner
            )
            if ended is None:
                return False
            callback_url = ended.payload.get("callback_url")
            if isinstance(callback_url, str):
                run = repo.get_run(s, ended.org_id, run_id)
                outbox_repo.add_callback(
                    s, ended.org_id, run_id, callback_url, self._callback_body(run), now
                )
        if isinstance(callback_url, str):
            self._outbox.wake()
        return True

    # --- shutdown ------------------------------------------------------------------------

    def close(self) -> None:
        """Take no new runs; wait for the ones in flight until the latest of their deadlines;
        then let the leases of any still going lapse now, so a live process's reaper ends
        them (they are never re-run)."""
        with self._lock:
            self._closing = True
            in_flight = set(self._in_flight)
        if in_flight:
            with self._store.session() as s:
                deadline = jobs_repo.latest_deadline(s, self._owner)
            bound_s = 0.0 if deadline is None else (deadline - repo.now()).total_seconds()
            log.info("waiting up to %.0f s for %d background runs", bound_s, len(in_flight))
            wait_futures(in_flight, timeout=max(bound_s, 0.0))
        self._stop.set()
        self._finishing.shutdown(wait=True)
        self._late.close()
        for thread in self._threads:
            thread.join(timeout=30)
        with self._store.session() as s:
            released = jobs_repo.release_leases(s, self._owner, repo.now())
        if released:
            log.warning("handed %d unfinished background runs to the reaper", released)
        self._runs.close(wait=False)


def _awaits_outcome(s: Any, run_id: str, now: datetime) -> bool:
    """Whether the expired job is a run on an executor worker whose outcome may still come
    (another process adopts it then); the reaper leaves it until its deadline."""
    job = jobs_repo.find_job(s, run_id)
    return job is not None and bool(job.payload.get("handover")) and job.deadline_at > now
