"""dispatch/: the broker: the Celery app both sides share (the run queue, reserved one run
per free slot), and the direct messages beside it (each process's inbox, the workers'
heartbeat fanout), over kombu, Celery's messaging library. The only module that touches
the broker's libraries' errors: they become BrokerUnavailableError here."""

from __future__ import annotations

import contextlib
import importlib
import logging
import socket
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from celery import Celery
from kombu.exceptions import OperationalError as KombuOperationalError

from actioncage.errors import SandboxError

log = logging.getLogger(__name__)

# kombu is untyped and exports lazily: its objects are Any here.
kombu: Any = importlib.import_module("kombu")
_kombu_redis: Any = importlib.import_module("kombu.transport.redis")

RUN_TASK = "actioncage.run"
RUN_QUEUE = "actioncage.runs"
HEARTBEATS = "actioncage.workers"
# Outcomes whose dispatching process did not acknowledge them (it died): any control
# plane takes them, and completes the run once that process's lease on it ran out.
HANDOVER_QUEUE = "actioncage.handover"
# A direct message that nobody takes within this long is dropped by the broker (AMQP).
_MESSAGE_TTL_MS = 120_000
# An inbox whose process is gone (nobody consumes it) is deleted after this long (AMQP).
_INBOX_EXPIRES_MS = 600_000
# Publishing gives up after about this long when the broker does not answer.
_CONNECT_TIMEOUT_S = 2.0

Handler = Callable[[dict[str, Any]], None]


class BrokerUnavailableError(SandboxError):
    """The run broker did not answer; no run could be handed to a worker."""


def shown(url: str) -> str:
    """The broker URL without its password (for messages and logs)."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def is_redis(url: str) -> bool:
    return urllib.parse.urlsplit(url).scheme in ("redis", "rediss")


class _RedisChannel(_kombu_redis.Channel):  # type: ignore[misc]
    """kombu's Redis channel, keeping one client. kombu builds a new redis-py client for each
    command it sends (every publish, every delivery's bookkeeping, every ack), and building
    one costs about 70 us: redis-py copies its table of some 170 reply parsers into each.
    A run sends five such commands on its path. A client is safe to share between threads
    (each command takes a connection from the channel's pool), so one serves them all; a
    new one is built when kombu replaces the pool (after a lost connection)."""

    _kept: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:
            return super()._create_client(asynchronous=True)
        kept = self._kept
        if kept is None or kept.connection_pool is not self.pool:
            kept = self._kept = super()._create_client()
        return kept


class RedisTransport(_kombu_redis.Transport):  # type: ignore[misc]
    """kombu's Redis transport with the kept client (_RedisChannel)."""

    Channel = _RedisChannel


def _transport(url: str) -> Any:
    """The kombu transport for ``url``: ours for Redis, else the one its scheme names."""
    return RedisTransport if is_redis(url) else None


def celery_app(broker_url: str) -> Celery:
    """The Celery app of control planes and workers: one durable run queue; a worker
    reserves at most one run per free slot and acknowledges it only after it ran (on
    RabbitMQ a lost worker's run comes back at once: the start claim in dispatch/worker.py
    refuses to run it again), as Celery's "reserve one task at a time" advises.

    Redis: no acknowledgement emulation. kombu's would write each delivered task to a hash
    (a MULTI/EXEC round trip on the worker, before Celery sees the task: about 0.5 ms of a
    run's path here) to deliver it again after a visibility timeout, once its worker is
    lost. Such a second delivery could only be refused: the timeout must outlast any run,
    so the task's start-by time is long past by then (and a worker drops it unclaimed). A
    worker taking only one task per free slot (``worker_disable_prefetch``) holds none it has
    not started; those it holds at a warm shutdown go back to the queue, from memory."""
    app = Celery("actioncage", broker=broker_url, set_as_current=False)
    app.conf.update(
        task_default_queue=RUN_QUEUE,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # Redis only: fetch a run only when a slot is free, so none waits in a busy worker.
        worker_disable_prefetch=is_redis(broker_url),
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
        broker_connection_timeout=_CONNECT_TIMEOUT_S,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        broker_heartbeat=10,
        broker_transport_options={"ack_emulation": False} if is_redis(broker_url) else {},
        broker_transport=_transport(broker_url),
        broker_pool_limit=16,
    )
    return app


def connection(url: str) -> Any:
    return kombu.Connection(
        url,
        transport=_transport(url),
        connect_timeout=_CONNECT_TIMEOUT_S,
        transport_options={"socket_timeout": 5, "socket_connect_timeout": _CONNECT_TIMEOUT_S},
    )


def inbox_queue(name: str, url: str) -> Any:
    """A process's inbox: direct messages by name through the default exchange."""
    args = {} if is_redis(url) else {"x-expires": _INBOX_EXPIRES_MS}
    return kombu.Queue(
        name,
        exchange=kombu.Exchange(""),
        routing_key=name,
        durable=False,
        auto_delete=False,
        queue_arguments=args,
    )


def shared_queue(name: str) -> Any:
    """A queue every control plane consumes (each message goes to one of them)."""
    return kombu.Queue(
        name, exchange=kombu.Exchange(""), routing_key=name, durable=True, auto_delete=False
    )


def heartbeat_exchange() -> Any:
    return kombu.Exchange(HEARTBEATS, type="fanout", durable=False, auto_delete=False)


class Publisher:
    """Sends direct messages and heartbeats over one connection (thread-safe).

    Raises BrokerUnavailableError when the broker cannot be reached within about 3 s."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._lock = threading.Lock()
        self._conn: Any | None = None
        self._producer: Any = None
        # The names of the queues and exchanges declared on the kept connection.
        self._declared: set[str] = set()

    def send(self, queue: str, body: dict[str, Any]) -> None:
        """Send ``body`` to the inbox named ``queue`` (dropped when it does not exist)."""
        self._publish(body, exchange="", routing_key=queue, expiration=_MESSAGE_TTL_MS / 1000)

    def broadcast(self, body: dict[str, Any]) -> None:
        """Send ``body`` to every control plane listening for heartbeats."""
        exchange = heartbeat_exchange()
        self._publish(body, exchange=exchange, routing_key="", entity=exchange)

    def enqueue(
        self, queue: Any, body: Any, headers: dict[str, Any], properties: dict[str, Any]
    ) -> None:
        """Send a task message to the durable ``queue`` by name (declared on first use on
        each connection), persistent."""
        self._publish(
            body,
            exchange="",
            routing_key=queue.name,
            entity=queue,
            headers=headers,
            delivery_mode=2,
            **properties,
        )

    def _publish(self, body: dict[str, Any], entity: Any = None, **kwargs: Any) -> None:
        """Publish on the kept connection; when the broker lost it, once more on a new one
        (what kombu's retry did, without its wrapper around every publish: 0.06 ms a
        message on RabbitMQ, 0.15 ms on Redis, paced; three are on a run's path).

        ``entity``: the queue or exchange published to, declared once per connection here
        (kombu's ``declare=`` checks its cache on every publish by binding a copy of the
        entity: a quarter of a task's publish, in Python calls)."""
        with self._lock, _translated(self._url):
            for attempt in (1, 2):
                conn = self._conn
                if conn is None or self._producer is None:
                    conn = self._conn = connection(self._url)
                    self._producer = conn.Producer(serializer="json")
                lost = conn.connection_errors + conn.channel_errors
                try:
                    if entity is not None and entity.name not in self._declared:
                        self._producer.maybe_declare(entity)
                        self._declared.add(entity.name)
                    self._producer.publish(body, retry=False, declare=[], **kwargs)
                    return
                except lost as exc:
                    self._reset()
                    if attempt == 2:
                        raise BrokerUnavailableError(
                            f"the run broker at {shown(self._url)} does not answer: "
                            f"{type(exc).__name__}"
                        ) from exc
                except BaseException:
                    self._reset()
                    raise

    def _reset(self) -> None:
        conn, self._conn, self._producer = self._conn, None, None
        self._declared.clear()
        if conn is not None:
            try:
                conn.release()
            except Exception:  # a broken connection may fail to close; it is dropped anyway
                log.debug("closing a broken broker connection failed", exc_info=True)

    def close(self) -> None:
        with self._lock:
            self._reset()


class Inbox:
    """This process's inbox (and, with ``heartbeats``, the workers' heartbeat fanout),
    consumed on a daemon thread: ``handler`` gets each message's body, in order. The thread
    reconnects when the broker goes away and comes back. ``on_tick`` runs on that thread at
    least every ``tick_s`` (to expire what a missing heartbeat ends)."""

    def __init__(
        self,
        url: str,
        name: str,
        handler: Handler,
        heartbeats: bool = False,
        on_tick: Callable[[], None] | None = None,
        tick_s: float = 0.5,
        shared: str | None = None,
    ) -> None:
        """``shared``: also consume this queue, which other processes consume too."""
        self.name = name
        self._shared = shared
        self._url = url
        self._handler = handler
        self._heartbeats = heartbeats
        self._on_tick = on_tick
        self._tick_s = tick_s
        self._stop = threading.Event()
        self.connected = threading.Event()
        self._thread: threading.Thread | None = None
        self.listening_since: float | None = None  # monotonic; None while disconnected

    def start(self, wait_s: float = 0.0) -> bool:
        """Start consuming; wait up to ``wait_s`` for the first connection. True once
        connected."""
        self._thread = threading.Thread(target=self._run, name=f"inbox-{self.name}", daemon=True)
        self._thread.start()
        return self.connected.wait(wait_s) if wait_s > 0 else self.connected.is_set()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _queues(self, conn: Any) -> list[Any]:
        queues = [inbox_queue(self.name, self._url)]
        if self._shared is not None:
            queues.append(shared_queue(self._shared))
        if self._heartbeats:
            args = {} if is_redis(self._url) else {"x-message-ttl": 5_000}
            queues.append(
                kombu.Queue(
                    f"{self.name}.heartbeats",
                    exchange=heartbeat_exchange(),
                    exclusive=not is_redis(self._url),
                    auto_delete=True,
                    durable=False,
                    queue_arguments=args,
                )
            )
        return queues

    def _run(self) -> None:
        backoff = 0.2
        while not self._stop.is_set():
            try:
                with connection(self._url) as conn:
                    conn.ensure_connection(max_retries=1)
                    with conn.Consumer(
                        self._queues(conn),
                        callbacks=[self._deliver],
                        accept=["json"],
                        no_ack=True,
                    ):
                        self.listening_since = time.monotonic()
                        self.connected.set()
                        backoff = 0.2
                        self._consume(conn)
            except Exception as exc:  # the broker went away (or never answered)
                if self._stop.is_set():
                    break
                if self.connected.is_set():
                    log.warning("inbox %s: lost the broker (%s); reconnecting", self.name, exc)
                self.connected.clear()
                self.listening_since = None
                self._tick()
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 2.0)
        self.connected.clear()

    def _consume(self, conn: Any) -> None:
        next_tick = time.monotonic() + self._tick_s
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):  # socket.timeout: nothing came
                conn.drain_events(timeout=self._tick_s)
            if time.monotonic() >= next_tick:
                next_tick = time.monotonic() + self._tick_s
                self._tick()

    def _tick(self) -> None:
        if self._on_tick is not None:
            try:
                self._on_tick()
            except Exception:
                log.exception("inbox %s: tick failed", self.name)

    def _deliver(self, body: Any, message: Any) -> None:
        if not isinstance(body, dict):
            log.warning("inbox %s: dropped a message that is not an object", self.name)
            return
        try:
            self._handler(body)
        except Exception:  # one bad message must not stop the inbox
            log.exception("inbox %s: handling a %r message failed", self.name, body.get("type"))


@contextmanager
def _translated(url: str) -> Iterator[None]:
    try:
        yield
    except (KombuOperationalError, OSError, ConnectionError) as exc:
        raise BrokerUnavailableError(
            f"the run broker at {shown(url)} does not answer: {type(exc).__name__}"
        ) from exc


class RunQueue:
    """Puts runs on the run queue (thread-safe): Celery task messages, built by Celery's own
    ``as_task_v2`` (protocol 2, what its workers consume), published to the queue by name
    on one kept connection. Celery's ``send_task`` does the same through its producer pool
    and kombu's retry wrapper, and routes through the queue's exchange (on Redis, a lookup of
    its bindings): about 870 Python calls a send on Redis and 1,150 on RabbitMQ, against 540
    and 810 here (cProfile). A send the broker's dropped connection fails goes once more on
    a new connection (Publisher)."""

    def __init__(self, app: Celery, url: str) -> None:
        self._app = app
        self._queue = app.amqp.queues[RUN_QUEUE]
        self._origin = f"actioncage@{socket.gethostname()}"
        self._publisher = Publisher(url)

    def send(self, body: dict[str, Any]) -> None:
        """Put one run on the queue. Raises BrokerUnavailableError.

        No Celery expiry: the body's ``startBy`` is what a worker drops a late run by
        (dispatch/worker.py), before it claims it. Celery's would cost its date handling on
        both sides of every run (as_task_v2: 14 against 5 us) for the same drop."""
        task_id = str(uuid.uuid4())
        message = self._app.amqp.as_task_v2(
            task_id,
            RUN_TASK,
            args=(body,),
            ignore_result=True,
            origin=self._origin,
            # Celery would otherwise repr() the envelope for its logs on every run.
            argsrepr=f"({body.get('runId')!r},)",
            kwargsrepr="{}",
        )
        self._publisher.enqueue(self._queue, message.body, message.headers, message.properties)

    def close(self) -> None:
        self._publisher.close()
