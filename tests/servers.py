"""A real PostgreSQL 15 for the tests: initdb in a temp dir, loopback only, one per session."""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import psycopg
import pytest

PG_BIN = Path("/usr/lib/postgresql/15/bin")
# Debian's server refuses to run as root; as root we run it as this user.
PG_USER = "postgres"


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
        self._created: list[str] = []
        self._template: str | None = None
        self._lock = threading.Lock()

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
        with open(log, "wb") as out:
            self._proc = subprocess.Popen(
                [PG_BIN / "postgres", "-D", data, *[f"-c{k}={v}" for k, v in settings.items()]],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **self._popen_args(),  # type: ignore[arg-type]
            )
        deadline = time.monotonic() + 60
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"postgres exited: {log.read_text(errors='replace')}")
            try:
                psycopg.connect(self.dsn("postgres"), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def dsn(self, database: str) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={database}"

    def url(self, database: str) -> str:
        """The SQLAlchemy URL of ``database``."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str, template: str | None = None) -> str:
        """Create database ``name`` (once), empty or a copy of ``template``; its URL."""
        with self._lock:
            if name not in self._created:
                like = f' TEMPLATE "{template}"' if template else ""
                with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
                    conn.execute(f'CREATE DATABASE "{name}"{like}')
                self._created.append(name)
        return self.url(name)

    def migrated_template(self) -> str:
        """A database migrated to head once per session, for per-test copies."""
        with self._lock:
            if self._template is None:
                from actioncage.store import Store

                with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
                    conn.execute('CREATE DATABASE "migrated"')
                store = Store(self.url("migrated"))
                store.upgrade()
                store.dispose()
                self._template = "migrated"
            return self._template

    def drop_created(self) -> None:
        """Drop every database made so far (its connections are cut)."""
        with self._lock:
            names, self._created = self._created, []
        if names:
            with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
                for name in names:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        """Fast shutdown (SIGINT), then remove the data directory."""
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


def postgres_url(tmp_path: Path, name: str = "actioncage", migrated: bool = False) -> str:
    """A fresh PostgreSQL database for ``tmp_path``, dropped when the test ends: empty, or
    (``migrated``) already at the newest revision, which saves every test the migration."""
    try:
        server = postgres()
    except FileNotFoundError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI needs PostgreSQL: {exc}")
        pytest.skip(str(exc))
    template = server.migrated_template() if migrated else None
    return server.create_database(database_name(tmp_path, name), template)
