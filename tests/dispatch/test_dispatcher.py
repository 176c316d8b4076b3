"""The dispatcher's start on a real Redis broker: it waits for a worker's heartbeat (or one
and a half heartbeat intervals) sleeping, never spinning."""

from __future__ import annotations

import threading
import time

from actioncage.dispatch import broker, messages
from actioncage.dispatch.dispatcher import Dispatcher
from actioncage.models import WorkerStatus
from actioncage.sandbox.foreground import Foreground
from actioncage.settings import Settings


def _dispatcher(redis_url: str) -> Dispatcher:
    settings = Settings(broker_url=redis_url, worker_heartbeat_s=2.0, worker_stale_s=6.0)
    return Dispatcher(settings, "test-instance", Foreground(settings.engine_work_defer_ms))


def test_with_no_worker_start_waits_the_heartbeat_window_asleep(redis_url: str) -> None:
    dispatcher = _dispatcher(redis_url)
    try:
        wall, cpu = time.monotonic(), time.thread_time()
        dispatcher.start()
        wall, cpu = time.monotonic() - wall, time.thread_time() - cpu
        assert dispatcher.workers.live() == []
        assert 2.9 <= wall < 5.0  # 1.5 heartbeat intervals, after the inbox connected
        # A loop polling an event already set burns the whole window on this thread.
        assert cpu < 0.3, f"start() used {cpu:.2f} s of CPU while waiting {wall:.2f} s"
    finally:
        dispatcher.close()


def test_start_returns_as_soon_as_a_worker_is_heard(redis_url: str) -> None:
    dispatcher = _dispatcher(redis_url)
    publisher = broker.Publisher(redis_url)
    stop = threading.Event()
    status = WorkerStatus("w1", "host1", 2, 0, {}, None, False, 0.0, time.time())

    def beat() -> None:  # a worker's heartbeats, until the test ends
        while not stop.is_set():
            publisher.broadcast(messages.heartbeat_body(status))
            stop.wait(0.2)

    beats = threading.Thread(target=beat, daemon=True)
    try:
        beats.start()
        wall = time.monotonic()
        dispatcher.start()
        wall = time.monotonic() - wall
        assert [w.name for w in dispatcher.workers.live()] == ["w1"]
        assert wall < 2.5, f"start() took {wall:.2f} s with a worker heard"
    finally:
        stop.set()
        beats.join()
        publisher.close()
        dispatcher.close()
