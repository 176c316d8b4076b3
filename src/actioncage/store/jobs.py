"""store/: repositories for durable background runs (the jobs table and its leases)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from actioncage.models import ErrorType, RunStatus
from actioncage.store.schema import JobRow, RunRow

QUEUED = "queued"
RUNNING = "running"
DONE = "done"
_LIVE = (QUEUED, RUNNING)


@dataclass(frozen=True)
class Job:
    """One background run's job row."""

    run_id: str
    org_id: str
    state: str
    payload: dict[str, Any]
    owner: str | None
    lease_until: datetime | None
    deadline_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True)
class EndedJob:
    """A job ended by someone other than the code running it (the reaper, a failed run)."""

    run_id: str
    org_id: str
    payload: dict[str, Any]
    # Whether this call completed the run record (False: the run had recorded its outcome
    # before its process died, so that outcome stands).
    completed_run: bool


def _aware(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything we store is UTC.
    return value if value is None or value.tzinfo else value.replace(tzinfo=UTC)


def _job(row: JobRow) -> Job:
    deadline = _aware(row.deadline_at)
    assert deadline is not None
    return Job(
        run_id=row.run_id,
        org_id=row.org_id,
        state=row.state,
        payload=dict(row.payload),
        owner=row.owner,
        lease_until=_aware(row.lease_until),
        deadline_at=deadline,
        finished_at=_aware(row.finished_at),
    )


def add_queued_job(
    session: Session,
    run_id: str,
    org_id: str,
    payload: dict[str, Any],
    owner: str,
    now: datetime,
    lease_until: datetime,
    deadline_at: datetime,
) -> None:
    """Store the job of a run ``owner`` accepted and will start, leased until
    ``lease_until``. Write it in the transaction that writes the run's "running"
    placeholder."""
    session.add(
        JobRow(
            run_id=run_id,
            org_id=org_id,
            state=QUEUED,
            payload=payload,
            owner=owner,
            lease_until=lease_until,
            deadline_at=deadline_at,
            created_at=now,
        )
    )
    session.flush()


def start_job(
    session: Session, run_id: str, owner: str, now: datetime, deadline_at: datetime
) -> bool:
    """Move ``owner``'s queued job to running, due by ``deadline_at``. Returns whether it
    did: False means the job was ended meanwhile (its lease lapsed and a reaper took it), so
    the run must not start."""
    result = session.execute(
        update(JobRow)
        .where(JobRow.run_id == run_id, JobRow.state == QUEUED, JobRow.owner == owner)
        .values(state=RUNNING, started_at=now, deadline_at=deadline_at)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def discard_job(session: Session, run_id: str) -> None:
    """Remove the job of a run that never started."""
    session.execute(delete(JobRow).where(JobRow.run_id == run_id))


def find_job(session: Session, run_id: str) -> Job | None:
    """The job of ``run_id``, or None."""
    row = session.get(JobRow, run_id)
    return None if row is None else _job(row)


def finish_job(session: Session, run_id: str, owner: str, now: datetime) -> bool:
    """Mark the job done if ``owner`` still holds it running. Returns whether it did (False:
    the reaper ended it already, after the lease ran out)."""
    result = session.execute(
        update(JobRow)
        .where(JobRow.run_id == run_id, JobRow.state == RUNNING, JobRow.owner == owner)
        .values(state=DONE, finished_at=now, lease_until=None)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def take_over_job(
    session: Session, run_id: str, owner: str, now: datetime, lease_until: datetime
) -> bool:
    """Make ``owner`` the holder of a running job whose lease ran out before ``now`` (its
    process died), leased until ``lease_until``: a run handed to an executor worker whose
    outcome came back after its dispatching process was gone. One conditional UPDATE, so of
    two processes taking the same job over exactly one gets it. Returns whether it did."""
    result = session.execute(
        update(JobRow)
        .where(JobRow.run_id == run_id, JobRow.state == RUNNING, JobRow.lease_until < now)
        .values(owner=owner, lease_until=lease_until)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def renew_leases(session: Session, owner: str, now: datetime, lease_until: datetime) -> int:
    """Extend ``owner``'s leases on its queued jobs and on its running jobs still within
    their deadline. A running job past its deadline (a hung run) is left to lapse, so the
    reaper ends it. Returns how many were renewed."""
    result = session.execute(
        update(JobRow)
        .where(
            JobRow.owner == owner,
            (JobRow.state == QUEUED) | ((JobRow.state == RUNNING) & (JobRow.deadline_at > now)),
        )
        .values(lease_until=lease_until)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def release_leases(session: Session, owner: str, now: datetime) -> int:
    """Let ``owner``'s queued and running jobs lapse now (a clean shutdown that could not
    finish them), so the next reaper ends them. Returns how many."""
    result = session.execute(
        update(JobRow).where(JobRow.owner == owner, JobRow.state.in_(_LIVE)).values(lease_until=now)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def latest_deadline(session: Session, owner: str) -> datetime | None:
    """The latest deadline among ``owner``'s queued and running jobs, or None."""
    rows = session.scalars(
        select(JobRow.deadline_at).where(JobRow.owner == owner, JobRow.state.in_(_LIVE))
    ).all()
    return _aware(max(rows)) if rows else None


def expired_jobs(session: Session, now: datetime, limit: int = 100) -> list[str]:
    """Run ids of queued or running jobs whose lease ran out before ``now`` (their owner
    is gone, or it let a hung run lapse)."""
    return list(
        session.scalars(
            select(JobRow.run_id)
            .where(JobRow.state.in_(_LIVE), JobRow.lease_until < now)
            .order_by(JobRow.lease_until)
            .limit(limit)
        ).all()
    )


def end_job(
    session: Session,
    run_id: str,
    now: datetime,
    message: str,
    *,
    expired_before: datetime | None = None,
    owner: str | None = None,
) -> EndedJob | None:
    """End a queued or running job without running anything: mark it done and, if its run record is
    still "running", complete it as sandbox_error with ``message``.

    Only a job whose lease ran out before ``expired_before`` (the reaper), or that ``owner``
    holds (a run that failed in its own process), is ended. The job is taken by one
    conditional UPDATE, so of two processes ending the same job exactly one gets it.
    Returns what was ended, or None when the job was not there to take.
    """
    query = update(JobRow).where(JobRow.run_id == run_id, JobRow.state.in_(_LIVE))
    if expired_before is not None:
        query = query.where(JobRow.lease_until < expired_before)
    if owner is not None:
        query = query.where(JobRow.owner == owner)
    taken = session.execute(query.values(state=DONE, finished_at=now, lease_until=None))
    if not taken.rowcount:  # type: ignore[attr-defined]
        return None
    row = session.get(JobRow, run_id)
    assert row is not None
    run = session.get(RunRow, run_id)
    started = None if run is None else _aware(run.started_at)
    duration_ms = 0 if started is None else int((now - started).total_seconds() * 1000)
    completed = session.execute(
        update(RunRow)
        .where(RunRow.id == run_id, RunRow.status == str(RunStatus.RUNNING))
        .values(
            status=str(RunStatus.ERROR),
            error_type=str(ErrorType.SANDBOX_ERROR),
            error_message=message,
            finished_at=now,
            duration_ms=max(duration_ms, 0),
        )
    )
    return EndedJob(
        run_id=run_id,
        org_id=row.org_id,
        payload=dict(row.payload),
        completed_run=bool(completed.rowcount),  # type: ignore[attr-defined]
    )
