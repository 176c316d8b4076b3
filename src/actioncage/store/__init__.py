"""Store: the engine plus a session() unit-of-work context manager."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from actioncage.errors import ConfigError
from actioncage.store.schema import Base


class Store:
    """Owns the database engine; ``session()`` commits on success and rolls back on error."""

    def __init__(self, url: str) -> None:
        if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        try:
            self.engine: Engine = create_engine(url)
        except (SQLAlchemyError, ValueError, ImportError) as exc:
            raise ConfigError(f"ACTIONCAGE_DATABASE_URL: {exc}") from exc
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def create_all(self) -> None:
        """Create missing tables."""
        try:
            Base.metadata.create_all(self.engine)
        except SQLAlchemyError as exc:
            raise ConfigError(f"ACTIONCAGE_DATABASE_URL: cannot create tables: {exc}") from exc

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One unit of work: everything in it lands together or not at all."""
        with self._sessions() as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()


def _sqlite_pragmas(dbapi_conn: object, _record: object) -> None:
    cursor = dbapi_conn.cursor()  # type: ignore[attr-defined]
    # WAL lets readers go on while a run's effects are written; busy_timeout waits, not fails.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    # In WAL mode, NORMAL syncs at checkpoints, not on every commit: a run record costs no
    # fsync on the request path, and a process crash still loses nothing committed.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
