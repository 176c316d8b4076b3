"""A real RabbitMQ (Debian's rabbitmq-server) for the tests: its own node name, ports,
epmd port, data and log dirs in a temp dir, loopback only; one per session, which a test
may stop and start again (its durable queues survive, as in a broker restart)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import kombu
import pytest

from tests.conftest import wait_for
from tests.served import free_port

SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
RUN_QUEUE = "actioncage.runs"


class RabbitServer:
    """``rabbitmq-server`` in ``root``; start() returns once it takes AMQP connections."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.node = f"actioncage-test-{uuid.uuid4().hex[:8]}@localhost"
        self._epmd_port = free_port()
        self._dist_port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        (root / "home").mkdir(parents=True, exist_ok=True)
        (root / "plugins").write_text("[].\n")

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update(
            {
                # The Erlang cookie lives in $HOME: ours, so no other node's is read.
                "HOME": str(self.root / "home"),
                "RABBITMQ_NODENAME": self.node,
                "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
                "RABBITMQ_NODE_PORT": str(self.port),
                "RABBITMQ_DIST_PORT": str(self._dist_port),
                # Its own epmd, so a system RabbitMQ or another session is never involved.
                "ERL_EPMD_PORT": str(self._epmd_port),
                "RABBITMQ_MNESIA_BASE": str(self.root / "mnesia"),
                "RABBITMQ_LOG_BASE": str(self.root / "log"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.root / "plugins"),
                "RABBITMQ_CONFIG_FILE": str(self.root / "rabbitmq"),
                "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.root / "advanced.config"),
                "RABBITMQ_PID_FILE": str(self.root / "rabbitmq.pid"),
            }
        )
        return env

    def answers(self) -> bool:
        conn = kombu.Connection(self.url, connect_timeout=1)
        try:
            conn.ensure_connection(max_retries=0)
            return True
        except Exception:
            return False
        finally:
            conn.release()

    def start(self, timeout: float = 90) -> None:
        """Start the node; fail the test if it does not take connections within ``timeout``."""
        log = open(self.root / "server.out", "ab")  # noqa: SIM115 - kept by the process
        self._proc = subprocess.Popen(
            [str(SERVER)], env=self._env(), stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        ok = wait_for(
            lambda: self._proc is not None and self._proc.poll() is None and self.answers(),
            timeout,
        )
        if not ok:
            tail = (self.root / "server.out").read_text(errors="replace")[-2000:]
            self.stop()
            pytest.fail(f"rabbitmq-server did not take connections on {self.port}:\n{tail}")

    def stop(self) -> None:
        """Stop the node (it flushes its durable queues), and wait for it to be gone."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
        self._proc = None

    def kill_epmd(self) -> None:
        epmd = shutil.which("epmd") or "/usr/lib/erlang/bin/epmd"
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(
                [epmd, "-kill"], env=self._env(), capture_output=True, timeout=10, check=False
            )

    def ctl(self, *args: str) -> str:
        """``rabbitmqctl ARGS`` against this node; its output (fails the test on an error)."""
        # The tool itself, beside the server: /usr/sbin's wrapper switches to the rabbitmq
        # user, whose $HOME holds another Erlang cookie than this node's.
        ctl = str(SERVER.parent / "rabbitmqctl")
        done = subprocess.run(
            [ctl, "-n", self.node, *args], env=self._env(), capture_output=True, timeout=60
        )
        if done.returncode != 0:
            pytest.fail(f"rabbitmqctl {' '.join(args)}: {done.stderr.decode(errors='replace')}")
        return done.stdout.decode(errors="replace")

    def ready_messages(self) -> int:
        """How many runs wait on the run queue, not yet delivered to a worker."""
        with kombu.Connection(self.url, connect_timeout=5) as conn:
            declared = kombu.Queue(RUN_QUEUE, durable=True)(conn.channel()).queue_declare(
                passive=True
            )
            return int(declared.message_count)

    def purge(self) -> None:
        """Empty the run queue (what earlier tests left)."""
        with kombu.Connection(self.url, connect_timeout=5) as conn:
            channel = conn.channel()
            with contextlib.suppress(Exception):
                kombu.Queue(RUN_QUEUE, durable=True)(channel).purge()


@pytest.fixture(scope="session")
def rabbitmq_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitServer]:
    """A RabbitMQ node for this session. Skips locally without the package (`make packages`
    installs it); fails when CI is set."""
    if not SERVER.is_file():
        problem = "rabbitmq-server is not installed (run `make packages`)"
        if os.environ.get("CI"):
            pytest.fail(problem)
        pytest.skip(problem)
    server = RabbitServer(tmp_path_factory.mktemp("rabbitmq"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
        server.kill_epmd()


@pytest.fixture
def amqp_url(rabbitmq_server: RabbitServer) -> str:
    """The session's RabbitMQ (started again if a test stopped it), its run queue empty."""
    if not rabbitmq_server.answers():
        rabbitmq_server.start()
    rabbitmq_server.purge()
    return rabbitmq_server.url
