"""A worker host on RabbitMQ with a broker user of its own, confined to its own queues (the
permissions docs/scaling.md gives): its runs work as before, and it cannot read another
process's queue (another worker's inbox, where start grants arrive; an API process's inbox;
the handover queue), so it cannot take a grant meant for another worker."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import kombu
import pytest
from amqp.exceptions import AccessRefused

from tests.dispatch.conftest import cluster, distributed, execute, make_action
from tests.rabbitmq_server import RabbitServer

TRIVIAL = "def execute_action(context):\n    return {'ok': True}\n"


def worker_permissions(name: str) -> tuple[str, str, str]:
    """RabbitMQ's configure, write and read patterns for worker ``name``'s broker user, as
    docs/scaling.md gives them: its own queues (inbox, heartbeat queue, Celery's control
    queue), the run queue and the exchanges it uses; writing to the default exchange sends
    to any queue by name (claims, outcomes and handovers reach the control planes that way),
    reading never reaches another process's."""
    assert re.fullmatch(r"[A-Za-z0-9_.-]+", name), name
    worker = name.replace(".", r"\.")
    # Exact (actioncage.worker.NAME.<8 hex>[.heartbeats], NAME@HOST.celery.pidbox), so no
    # other worker's name matches.
    own = [
        rf"actioncage\.worker\.{worker}\.[0-9a-f]{{8}}(\.heartbeats)?",
        rf"{worker}@[^@]*\.celery\.pidbox",
    ]
    shared = [
        r"actioncage\.runs",
        r"actioncage\.workers",
        r"celery\.pidbox",
        r"reply\.celery\.pidbox",
    ]
    entities = "|".join(own + shared)
    return f"^({entities})$", f"^(amq\\.default|{entities})$", f"^({entities})$"


def test_the_documented_commands_give_these_patterns() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "scaling.md").read_text()
    block = doc.split("**A broker user per worker host (RabbitMQ).**")[1].split("```bash\n")[1]
    lines = [line for line in block.split("```")[0].splitlines() if line.startswith("E=")]
    script = "\n".join(
        ["W=worker-7.a", *lines, 'printf "%s\\n" "^($E)\\$" "^(amq\\\\.default|$E)\\$"']
    )
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    configure, write, read = worker_permissions("worker-7.a")
    assert configure == read
    assert done.stdout.splitlines() == [configure, write]


@pytest.mark.docker
@distributed
def test_a_worker_confined_to_its_own_queues_runs_and_cannot_read_another_process_s(
    tmp_path: Path, rabbitmq_server: RabbitServer, amqp_url: str
) -> None:
    rabbitmq_server.ctl("add_user", "w1", "w1-secret")
    rabbitmq_server.ctl("set_permissions", "-p", "/", "w1", *worker_permissions("w1"))
    confined = amqp_url.replace("guest:guest@", "w1:w1-secret@")
    with cluster(tmp_path, amqp_url) as c:
        base = c.start_api()
        c.start_worker("w1", ACTIONCAGE_BROKER_URL=confined)
        c.start_worker("w2")
        c.wait_live("w1", "w2")
        make_action(base, "trivial", TRIVIAL)
        ran = {execute(base, "trivial", {})["executor"] for _ in range(8)}
        assert "w1" in ran, (ran, c.log_of("worker-w1"))
        assert "ACCESS_REFUSED" not in c.log_of("worker-w1")
        queues = rabbitmq_server.ctl("list_queues", "-q", "--no-table-headers", "name").split()
        others = [
            q for q in queues
            if q.startswith(("actioncage.worker.w2.", "actioncage.reply."))
            and not q.endswith(".heartbeats")
        ] + ["actioncage.handover"]  # fmt: skip
        assert len(others) == 3, queues
        for queue in others:
            # A read (basic.get, nothing declared): the operator's account may, w1's may not.
            with kombu.Connection(amqp_url, connect_timeout=5) as conn:
                assert conn.channel().basic_get(queue, no_ack=True) is None
            with (
                kombu.Connection(confined, connect_timeout=5) as conn,
                pytest.raises(AccessRefused, match="Basic.get.*refused for user .w1."),
            ):
                conn.channel().basic_get(queue, no_ack=True)
