"""Waiting for a condition by polling it, for the tests and for the servers they start
(tests/servers.py, tests/redis_server.py; the bench starts those outside pytest too)."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(condition: Callable[[], bool], timeout: float = 60, every_s: float = 0.02) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` passes; its last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(every_s)
    return condition()
