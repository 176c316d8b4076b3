"""store/: the engine plus a session() unit-of-work context manager, and upgrade()."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, make_url, text
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool, StaticPool

from actioncage.errors import ConfigError

# The Session.info entry naming what a session's writes changed (a set of names such as
# repo.DEFINITIONS): Store runs the callbacks registered for them once it commits.
CHANGED = "actioncage.changed"
# pg_advisory_xact_lock key held while migrating: any fixed 64-bit number of our own.
_MIGRATION_LOCK = 0x61635F6D6967  # "ac_mig"


class Store:
    """Owns the database engine; ``session()`` commits on success and rolls back on error.

    ``url`` is SQLite (``sqlite:///path``, or ``sqlite:///:memory:`` for one process) or
    PostgreSQL through psycopg 3 (``postgresql+psycopg://``; plain ``postgresql://`` means
    the same). Raises ConfigError for a URL that cannot work.
    """

    def __init__(self, url: str) -> None:
        if not url:
            raise ConfigError(
                "ACTIONCAGE_DATABASE_URL is not set, and actioncage is not running from a source "
                "checkout whose var/ could hold the database: set it, e.g. "
                "sqlite:////srv/actioncage/actioncage.db"
            )
        try:
            parsed = make_url(url)
        except ArgumentError as exc:
            raise ConfigError(f"ACTIONCAGE_DATABASE_URL: {exc}") from exc
        options: dict[str, Any] = {}
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        if parsed.get_backend_name() == "postgresql":
            # A server restart or idle cut leaves dead pooled connections: test before use.
            options["pool_pre_ping"] = True
        elif parsed.get_backend_name() == "sqlite":
            if parsed.database in (None, "", ":memory:"):
                # One connection for every thread: each new one would see an empty database.
                options["poolclass"] = StaticPool
                options["connect_args"] = {"check_same_thread": False}
            else:
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        try:
            self.engine: Engine = _engine(parsed, **options)
        except (SQLAlchemyError, ValueError, ImportError) as exc:
            raise ConfigError(f"ACTIONCAGE_DATABASE_URL: {exc}") from exc
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._on_commit: dict[str, list[Callable[[], None]]] = {}
        event.listen(self._sessions, "after_commit", self._committed)
        event.listen(self._sessions, "after_rollback", _forget_changes)

    def after_commit(self, change: str, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever a session() whose writes made ``change`` (a name the
        repositories give, repo.DEFINITIONS) has committed: this process's caches start
        afresh at once, where other processes see the change at their next epoch read."""
        self._on_commit.setdefault(change, []).append(callback)

    def _committed(self, session: Session) -> None:
        for change in session.info.pop(CHANGED, ()):
            for callback in self._on_commit.get(change, ()):
                callback()

    @property
    def shown_url(self) -> str:
        """The database URL with its password hidden, for logs and the CLI."""
        return self.engine.url.render_as_string(hide_password=True)

    def upgrade(self) -> str:
        """Migrate the schema to the newest revision (adopting a database made by the old
        ``create_all``) and return that revision. Raises ConfigError when it cannot.

        Safe when several processes start at once: on PostgreSQL the upgrade runs holding a
        transaction-level advisory lock, on SQLite inside BEGIN IMMEDIATE (the write lock);
        whoever comes second waits, then finds the schema current and changes nothing.
        """
        from actioncage.store import migrate

        try:
            with self.engine.connect() as conn:
                if conn.dialect.name == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
                elif conn.dialect.name == "sqlite":
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                revision = migrate.upgrade(conn)
                conn.commit()
        except SQLAlchemyError as exc:
            raise ConfigError(f"ACTIONCAGE_DATABASE_URL: cannot upgrade the schema: {exc}") from exc
        return revision

    def create_all(self) -> None:
        """The name callers used before migrations: runs ``upgrade()``."""
        self.upgrade()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One unit of work: everything in it lands together or not at all."""
        with self._sessions() as session, session.begin():
            yield session

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A plain connection for the reads every run makes (its action, its org's policy),
        through Core statements: a third of a session()'s cost for one SELECT. Nothing is
        committed through it."""
        with self.engine.connect() as conn:
            yield conn

    @contextmanager
    def writing(self) -> Iterator[Connection]:
        """A plain connection in one transaction, committed when the block ends and rolled
        back when it raises: for writes that are Core statements only (a run's record when
        it has no effects to apply), at about half a session()'s cost."""
        with self.engine.begin() as conn:
            yield conn

    def dispose(self) -> None:
        """Close the pooled connections. A thread still at work (a background run let go at
        shutdown, past its bound) gets its connection closed when it hands it back, and
        connects and disconnects per use from then on: no connection is left open for the
        garbage collector to find."""
        pool = self.engine.pool
        if isinstance(pool, StaticPool | NullPool):  # :memory: is its one connection
            self.engine.dispose()
            return
        event.listen(pool, "checkin", _close_returned)
        pool.dispose()
        self.engine = _engine(self.engine.url, poolclass=NullPool)
        self._sessions.configure(bind=self.engine)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.dispose()


def _engine(url: URL, **options: Any) -> Engine:
    engine = create_engine(url, **options)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _close_returned(dbapi_conn: Any, _record: object) -> None:
    if dbapi_conn is not None:
        dbapi_conn.close()


def _forget_changes(session: Session) -> None:
    session.info.pop(CHANGED, None)


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
