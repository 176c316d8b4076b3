"""store/: store/instances.py: the live processes (serve, worker) and their heartbeats, in the
database."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from actioncage.store.schema import InstanceRow


def register(
    session: Session, instance_id: str, role: str, host: str, pid: int, at: datetime
) -> None:
    """Record a process that has just started, its heartbeat at ``at``."""
    session.add(
        InstanceRow(id=instance_id, role=role, host=host, pid=pid, started_at=at, heartbeat_at=at)
    )


def heartbeat(session: Session, instance_id: str, at: datetime) -> bool:
    """Move the instance's heartbeat to ``at``; False when it has no row (it was removed)."""
    result = session.execute(
        update(InstanceRow).where(InstanceRow.id == instance_id).values(heartbeat_at=at)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def live_ids(session: Session, since: datetime) -> set[str]:
    """The instances whose heartbeat is newer than ``since``."""
    return set(session.scalars(select(InstanceRow.id).where(InstanceRow.heartbeat_at > since)))


def dead_ids(session: Session, before: datetime) -> set[str]:
    """The instances whose last heartbeat is ``before`` or older: their processes are gone."""
    return set(session.scalars(select(InstanceRow.id).where(InstanceRow.heartbeat_at <= before)))


def remove(session: Session, instance_id: str) -> None:
    """Forget an instance (at its clean shutdown, once it has removed its sandboxes)."""
    session.execute(delete(InstanceRow).where(InstanceRow.id == instance_id))


def is_live(session: Session, instance_id: str, since: datetime) -> bool:
    """Whether the instance's heartbeat is newer than ``since`` (False: dead or removed)."""
    found = session.scalar(
        select(InstanceRow.id).where(
            InstanceRow.id == instance_id, InstanceRow.heartbeat_at > since
        )
    )
    return found is not None
