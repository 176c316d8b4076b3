"""The broker module on a real Redis: direct messages and the run queue go through kombu's
Redis transport with one kept redis-py client per channel, not one per command; and on a
real RabbitMQ, a send after the broker dropped the connection goes out on a new one."""

from __future__ import annotations

import base64
import json
import threading
from typing import Any

import redis

from actioncage.dispatch import broker
from tests.conftest import wait_for
from tests.dispatch.conftest import distributed
from tests.rabbitmq_server import RabbitServer


def _clients_built(monkeypatch: Any) -> list[object]:
    """Every redis-py client built from now on (kombu's channels build theirs this way)."""
    built: list[object] = []
    original = redis.Redis.__init__

    def counting(self: redis.Redis, *args: Any, **kwargs: Any) -> None:
        built.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(redis.Redis, "__init__", counting)
    return built


def test_direct_messages_reuse_one_client_and_arrive_in_order(
    redis_url: str, monkeypatch: Any
) -> None:
    got: list[dict[str, Any]] = []
    all_in = threading.Event()

    def take(body: dict[str, Any]) -> None:
        got.append(body)
        if len(got) == 51:
            all_in.set()

    inbox = broker.Inbox(redis_url, "test.inbox", take)
    publisher = broker.Publisher(redis_url)
    try:
        assert inbox.start(wait_s=5.0)
        publisher.send("test.inbox", {"n": -1})  # the channel and its client exist now
        built = _clients_built(monkeypatch)
        for n in range(50):
            publisher.send("test.inbox", {"n": n})
        assert all_in.wait(10)
        assert [body["n"] for body in got] == list(range(-1, 50))
        # kombu alone builds a client per LPUSH (50 here); the kept one is reused.
        assert len(built) == 0
    finally:
        publisher.close()
        inbox.close()


def test_runs_queued_as_celery_tasks_reuse_one_client(redis_url: str, monkeypatch: Any) -> None:
    app = broker.celery_app(redis_url)
    runs = broker.RunQueue(app, redis_url)
    body = {"runId": "run_0", "v": 1}
    try:
        runs.send(body)
        built = _clients_built(monkeypatch)
        for _ in range(20):
            runs.send(body)
        assert len(built) == 0
    finally:
        runs.close()
    queued = redis.Redis.from_url(redis_url)
    try:
        assert queued.llen(broker.RUN_QUEUE) == 21
        # Celery's task message (protocol 2): what its worker takes as the run task.
        message = json.loads(queued.lindex(broker.RUN_QUEUE, 0))
        headers = message["headers"]
        assert headers["task"] == broker.RUN_TASK
        assert headers["argsrepr"] == "('run_0',)"
        assert message["properties"]["correlation_id"] == headers["id"]
        assert json.loads(base64.b64decode(message["body"])) == [
            [body],
            {},
            {"callbacks": None, "errbacks": None, "chain": None, "chord": None},
        ]
    finally:
        queued.close()


def test_a_run_task_taken_from_redis_costs_no_bookkeeping_round_trip(redis_url: str) -> None:
    """Taken as Celery's worker takes it (the app's connection and transport options), a
    run's task reaches the consumer with no acknowledgement emulation: kombu writes nothing
    to its hash and index of unacknowledged messages (HSET and ZADD in a MULTI/EXEC round
    trip before the task would reach Celery), and once acknowledged the task is gone."""
    app = broker.celery_app(redis_url)
    runs = broker.RunQueue(app, redis_url)
    server = redis.Redis.from_url(redis_url)
    got: list[Any] = []

    def take(body: Any, message: Any) -> None:
        got.append(body)
        message.ack()

    try:
        runs.send({"runId": "run_taken"})
        before = server.info("commandstats")
        with (
            app.connection_for_read() as conn,
            conn.Consumer(app.amqp.queues[broker.RUN_QUEUE], callbacks=[take], accept=["json"]),
        ):
            conn.drain_events(timeout=10)
        after = server.info("commandstats")
        assert got and got[0][0] == [{"runId": "run_taken"}]
        written = {
            name: after.get(name, {}).get("calls", 0) - before.get(name, {}).get("calls", 0)
            for name in ("cmdstat_hset", "cmdstat_zadd")
        }
        assert written == {"cmdstat_hset": 0, "cmdstat_zadd": 0}
        assert server.llen(broker.RUN_QUEUE) == 0
    finally:
        runs.close()
        server.close()


def test_a_new_pool_gets_a_new_client(redis_url: str) -> None:
    with broker.connection(redis_url) as conn:
        channel = conn.default_channel
        first = channel._create_client()
        assert channel._create_client() is first
        assert first.connection_pool is channel.pool
        channel._pool = None  # what kombu does when it drops a broken pool
        second = channel._create_client()
        assert second is not first
        assert second.connection_pool is channel.pool
        assert second.ping()


_CONNECTION_STATES = ("list_connections", "-q", "--no-table-headers", "state")


@distributed
def test_a_message_sent_after_the_broker_dropped_the_connection_goes_out_on_a_new_one(
    rabbitmq_server: RabbitServer, amqp_url: str
) -> None:
    """The publisher sends without kombu's retry wrapper; when the broker closed its
    connection, the send fails on it and goes out once more on a new connection."""
    name = "test.reconnect"
    with broker.connection(amqp_url) as conn:
        queue = broker.inbox_queue(name, amqp_url)(conn.channel())
        queue.declare()
        queue.purge()
    publisher = broker.Publisher(amqp_url)
    try:
        publisher.send(name, {"n": 1})
        first = publisher._conn
        rabbitmq_server.ctl("close_all_connections", "test: the broker drops its clients")
        assert wait_for(lambda: "running" not in rabbitmq_server.ctl(*_CONNECTION_STATES), 10)
        publisher.send(name, {"n": 2})
        publisher.send(name, {"n": 3})
        assert publisher._conn is not first
    finally:
        publisher.close()
    got = []
    with broker.connection(amqp_url) as conn:
        queue = broker.inbox_queue(name, amqp_url)(conn.channel())
        while (message := queue.get(no_ack=True)) is not None:
            got.append(message.payload["n"])
    assert got == [1, 2, 3]
