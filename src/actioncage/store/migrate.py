"""store/: the Alembic migrations, run programmatically (no alembic.ini) to head."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from actioncage.store.schema import Base

log = logging.getLogger(__name__)

SCRIPTS = Path(__file__).parent / "migrations"


def config(connection: Connection | None = None) -> Config:
    """Alembic's configuration, pointing at our scripts and, when given, ``connection``."""
    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPTS))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    """The newest revision."""
    revision = ScriptDirectory.from_config(config()).get_current_head()
    assert revision is not None
    return revision


def current(connection: Connection) -> str | None:
    """The revision the database on ``connection`` is at, or None (never migrated)."""
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(connection: Connection) -> str:
    """Bring the schema on ``connection`` to head and return the revision.

    The caller holds the lock that keeps other processes out and commits. A database made
    by ``create_all`` before migrations existed (our tables, no version) is adopted:
    revision 0001 creates only what it lacks.
    """
    before = current(connection)
    if before is None:
        ours = set(Base.metadata.tables) & set(inspect(connection).get_table_names())
        if ours:
            log.info("adopting a database made before migrations (%d tables)", len(ours))
    command.upgrade(config(connection), "head")
    revision = current(connection)
    assert revision is not None
    if revision != before:
        log.info("database schema upgraded from %s to %s", before or "nothing", revision)
    return revision
