"""store/: Secrets every process of one deployment shares (the dashboard's session key), made
once and kept in the database (table ``server_secrets``), so any process agrees on them."""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from actioncage.store.repo import now
from actioncage.store.schema import ServerSecretRow

SESSION_KEY = "dashboard_session_key"


def shared_secret(session: Session, name: str) -> str:
    """The deployment's secret ``name``, made (64 hex digits) by whichever process asks first.

    Insert-if-absent, then read: two processes starting at once both insert, one insert wins
    and both read the winner's value.
    """
    values: dict[str, Any] = {
        "name": name,
        "value": secrets.token_hex(32),
        "created_at": now(),
    }
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(insert(ServerSecretRow).values(**values).on_conflict_do_nothing())
    value: str = session.execute(
        select(ServerSecretRow.value).where(ServerSecretRow.name == name)
    ).scalar_one()
    return value
