"""A real PostgreSQL 15 for the tests: initdb in a temp dir, loopback only, one per session."""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import queue
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from pathlib import Path

import psycopg
import pytest

from tests.polling import wait_for

PG_BIN = Path("/usr/lib/postgresql/15/bin")
# Debian's server refuses to run as root; as root we run it as this user.
PG_USER = "postgres"
# Migrated databases kept ready for the next tests.
SPARES = 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PostgresServer:
    """``postgres`` in a throwaway data directory, listening on 127.0.0.1 on a free port.

    Durability is off (fsync, synchronous_commit, full_page_writes): a crash loses the test
    databases, which nobody needs, and every commit is much faster.
    """

    def __init__(self) -> None:
        if not (PG_BIN / "initdb").is_file():
            raise FileNotFoundError(
                f"{PG_BIN}/initdb is missing: install Debian's postgresql-15 (`make postgres`)"
            )
        self.root = Path(tempfile.mkdtemp(prefix="actioncage-pg-"))
        self.port = _free_port()
        self._as_user = os.geteuid() == 0
        if self._as_user:
            shutil.chown(self.root, PG_USER, PG_USER)
        self._proc: subprocess.Popen[bytes] | None = None
        # What each test calls its database -> the real database behind that name.
        self._made: dict[str, str] = {}
        self._lock = threading.Lock()
        self._spares: queue.Queue[str | Exception] = queue.Queue()
        self._tasks: queue.Queue[tuple[str, str]] = queue.Queue()
        self._worker: threading.Thread | None = None

    def _popen_args(self) -> dict[str, object]:
        return {"user": PG_USER, "group": PG_USER} if self._as_user else {}

    def start(self) -> None:
        """Run initdb, start the server and return once it accepts connections."""
        data, sockets = self.root / "data", self.root / "run"
        log = self.root / "postgres.log"
        subprocess.run(
            [
                PG_BIN / "initdb",
                "-D",
                data,
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "--encoding=UTF8",
                "--locale=C",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            **self._popen_args(),  # type: ignore[arg-type]
        )
        sockets.mkdir()
        if self._as_user:
            shutil.chown(sockets, PG_USER, PG_USER)
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(sockets),
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "300",
            "log_min_messages": "warning",
        }
        # Same process group as pytest: a Ctrl-C reaches the server too (a fast shutdown).
        with open(log, "wb") as out:
            self._proc = subprocess.Popen(
                [PG_BIN / "postgres", "-D", data, *[f"-c{k}={v}" for k, v in settings.items()]],
                stdout=out,
                stderr=subprocess.STDOUT,
                **self._popen_args(),  # type: ignore[arg-type]
            )
        proc = self._proc

        def answering() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"postgres exited: {log.read_text(errors='replace')}")
            try:
                psycopg.connect(self.dsn("postgres"), connect_timeout=2).close()
            except psycopg.OperationalError:
                return False
            return True

        if not wait_for(answering, timeout=60, every_s=0.05):
            raise RuntimeError(
                f"postgres did not answer in 60 s: {log.read_text(errors='replace')}"
            )

    def dsn(self, database: str) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={database}"

    def url(self, database: str) -> str:
        """The SQLAlchemy URL of ``database``."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def _execute(self, sql: str) -> None:
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(sql.encode())

    def create_database(self, name: str, migrated: bool = False) -> str:
        """The URL of the database known as ``name``, made on the first call: empty, or
        (``migrated``) a copy of a database migrated to head once per session."""
        with self._lock:
            actual = self._made.get(name)
            if actual is None:
                if migrated:
                    actual = self._spare()
                else:
                    actual = name
                    self._execute(f'CREATE DATABASE "{name}"')
                self._made[name] = actual
        return self.url(actual)

    def create_kept_database(self, name: str) -> str:
        """The URL of a new, empty database ``name`` that outlives the test asking for it
        (servers a module shares); it goes with the data directory at the session's end."""
        self._execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def _spare(self) -> str:
        # CREATE DATABASE costs a test ~0.2 s; a thread copies the template ahead of need.
        if self._worker is None:
            from actioncage.store import Store

            self._execute('CREATE DATABASE "migrated"')
            with Store(self.url("migrated")) as store:
                store.upgrade()
            self._worker = threading.Thread(target=self._work, daemon=True)
            self._worker.start()
            for _ in range(SPARES):
                self._tasks.put(("spare", ""))
        name = self._spares.get(timeout=120)
        if isinstance(name, Exception):
            raise name
        self._tasks.put(("spare", ""))
        return name

    def _work(self) -> None:
        made = 0
        while True:
            task, name = self._tasks.get()
            if task == "stop":
                return
            if task == "drop":
                # A database left behind goes with the data directory at the end.
                with contextlib.suppress(psycopg.Error):
                    self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                continue
            made += 1
            try:
                self._execute(f'CREATE DATABASE "spare_{made}" TEMPLATE "migrated"')
                self._spares.put(f"spare_{made}")
            except psycopg.Error as exc:  # handed to the test that waits for a spare
                self._spares.put(exc)

    def drop_created(self) -> None:
        """Drop every database made so far (its connections are cut): at once, or in the
        background when the spare-making thread runs."""
        with self._lock:
            names, self._made = list(self._made.values()), {}
            for name in names:
                if self._worker is None:
                    self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                else:
                    self._tasks.put(("drop", name))

    def stop(self) -> None:
        """Fast shutdown (SIGINT), then remove the data directory."""
        if self._worker is not None:
            self._tasks.put(("stop", ""))
            self._worker.join(timeout=60)
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)


_server: PostgresServer | None = None
_server_lock = threading.Lock()


def postgres() -> PostgresServer:
    """This session's server, started on first use (stopped by ``stop_postgres``)."""
    global _server
    with _server_lock:
        if _server is None:
            server = PostgresServer()
            atexit.register(server.stop)  # in case the session ends without its finaliser
            try:
                server.start()
            except BaseException:
                server.stop()
                raise
            _server = server
        return _server


def running_postgres() -> PostgresServer | None:
    return _server


def stop_postgres() -> None:
    global _server
    with _server_lock:
        if _server is not None:
            _server.stop()
            _server = None


def database_name(tmp_path: Path, name: str) -> str:
    """A PostgreSQL database name for ``name`` under ``tmp_path`` (the same one each time)."""
    digest = hashlib.sha256(f"{tmp_path}\0{name}".encode()).hexdigest()[:20]
    return f"t_{digest}"


def _server_or_skip() -> PostgresServer:
    try:
        return postgres()
    except FileNotFoundError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI needs PostgreSQL: {exc}")
        pytest.skip(str(exc))


def kept_postgres_url(tmp_path: Path, name: str) -> str:
    """A fresh, empty PostgreSQL database for ``tmp_path`` (a module's, say) that is not
    dropped when a test ends: for servers that several tests share."""
    return _server_or_skip().create_kept_database(database_name(tmp_path, name))


def postgres_url(tmp_path: Path, name: str = "actioncage", migrated: bool = False) -> str:
    """A fresh PostgreSQL database for ``tmp_path``, dropped when the test ends: empty, or
    (``migrated``) already at the newest revision, which saves every test the migration."""
    return _server_or_skip().create_database(database_name(tmp_path, name), migrated)
