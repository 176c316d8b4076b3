"""store/: repositories for the callback outbox (signed POSTs owed to callbackUrls)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from actioncage.store.schema import CallbackRow

PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"


@dataclass(frozen=True)
class Callback:
    """One callback of the outbox."""

    id: str
    org_id: str
    run_id: str
    url: str
    body: bytes
    state: str
    attempts: int
    next_attempt_at: datetime
    owner: str | None
    lease_until: datetime | None
    last_error: str | None
    delivered_at: datetime | None


def _aware(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything we store is UTC.
    return value if value is None or value.tzinfo else value.replace(tzinfo=UTC)


def _callback(row: CallbackRow) -> Callback:
    next_attempt = _aware(row.next_attempt_at)
    assert next_attempt is not None
    return Callback(
        id=row.id,
        org_id=row.org_id,
        run_id=row.run_id,
        url=row.url,
        body=row.body.encode(),
        state=row.state,
        attempts=row.attempts,
        next_attempt_at=next_attempt,
        owner=row.owner,
        lease_until=_aware(row.lease_until),
        last_error=row.last_error,
        delivered_at=_aware(row.delivered_at),
    )


def add_callback(
    session: Session, org_id: str, run_id: str, url: str, body: bytes, now: datetime
) -> str:
    """Owe a callback of ``body`` (a JSON document) to ``url``, due now. Returns its id."""
    callback_id = f"cb_{uuid.uuid4().hex}"
    session.add(
        CallbackRow(
            id=callback_id,
            org_id=org_id,
            run_id=run_id,
            url=url,
            body=body.decode(),
            state=PENDING,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
    )
    session.flush()
    return callback_id


def _claimable(now: datetime) -> list[object]:
    return [
        CallbackRow.state == PENDING,
        CallbackRow.next_attempt_at <= now,
        or_(CallbackRow.lease_until.is_(None), CallbackRow.lease_until < now),
    ]


def due_callbacks(session: Session, now: datetime, limit: int = 20) -> list[str]:
    """Ids of pending callbacks due by ``now`` that nobody holds (or whose holder's lease
    ran out), oldest due first."""
    return list(
        session.scalars(
            select(CallbackRow.id)
            .where(*_claimable(now))  # type: ignore[arg-type]
            .order_by(CallbackRow.next_attempt_at)
            .limit(limit)
        ).all()
    )


def next_due(session: Session) -> datetime | None:
    """When the earliest pending callback is due, or None when none is pending."""
    return _aware(
        session.scalar(
            select(func.min(CallbackRow.next_attempt_at)).where(CallbackRow.state == PENDING)
        )
    )


def claim_callback(
    session: Session, callback_id: str, owner: str, now: datetime, lease_until: datetime
) -> Callback | None:
    """Take the callback for one delivery attempt, leased to ``owner`` until
    ``lease_until``. One conditional UPDATE: of two processes claiming it, one gets it.
    Returns it, or None when it is not claimable (any more)."""
    taken = session.execute(
        update(CallbackRow)
        .where(CallbackRow.id == callback_id, *_claimable(now))  # type: ignore[arg-type]
        .values(owner=owner, lease_until=lease_until)
    )
    if not taken.rowcount:  # type: ignore[attr-defined]
        return None
    row = session.get(CallbackRow, callback_id, populate_existing=True)
    assert row is not None
    return _callback(row)


def record_attempt(
    session: Session,
    callback_id: str,
    owner: str,
    now: datetime,
    state: str,
    error: str | None,
    next_attempt_at: datetime | None = None,
) -> bool:
    """Record one attempt by ``owner``: ``state`` delivered, failed, or pending again at
    ``next_attempt_at``; the claim is released. Returns False when ``owner`` no longer
    held the claim (its lease ran out and another process took it)."""
    values: dict[str, object] = {
        "state": state,
        "attempts": CallbackRow.attempts + 1,
        "owner": None,
        "lease_until": None,
        "last_error": error,
    }
    if state == DELIVERED:
        values["delivered_at"] = now
    if next_attempt_at is not None:
        values["next_attempt_at"] = next_attempt_at
    done = session.execute(
        update(CallbackRow)
        .where(
            CallbackRow.id == callback_id,
            CallbackRow.owner == owner,
            CallbackRow.state == PENDING,
        )
        .values(**values)
    )
    return bool(done.rowcount)  # type: ignore[attr-defined]


def release_callbacks(session: Session, owner: str) -> int:
    """Hand back every pending callback ``owner`` holds, for any process. Returns how many."""
    done = session.execute(
        update(CallbackRow)
        .where(CallbackRow.owner == owner, CallbackRow.state == PENDING)
        .values(owner=None, lease_until=None)
    )
    return int(done.rowcount)  # type: ignore[attr-defined]


def callbacks_for_run(session: Session, run_id: str) -> list[Callback]:
    """Every callback owed for ``run_id``, oldest first."""
    rows = session.scalars(
        select(CallbackRow).where(CallbackRow.run_id == run_id).order_by(CallbackRow.created_at)
    ).all()
    return [_callback(row) for row in rows]
