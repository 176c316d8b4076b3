"""sandbox/refresh.py: the first value is waited for, later ones come from memory while one
background thread refreshes a stale one; failures keep the last value."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from actioncage.errors import ActioncageError, SandboxError
from actioncage.sandbox.refresh import Refreshed, Retry
from tests.polling import wait_for

_NAME = "actioncage-test-refresh"


class _Clock:
    """A clock the test moves by hand, so "stale" never depends on how fast the machine is."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class _Source:
    """Computes 1, 2, 3, ... (or raises what ``fail_with`` holds), recording the thread of
    each call; while ``gate`` is clear a computation waits for it."""

    def __init__(self) -> None:
        self.calls = 0
        self.threads: list[str] = []
        self.running = 0
        self.most_running = 0
        self.fail_with: Exception | None = None
        self.gate = threading.Event()
        self.gate.set()
        self._lock = threading.Lock()

    def __call__(self) -> int:
        with self._lock:
            self.calls += 1
            n = self.calls
            self.threads.append(threading.current_thread().name)
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        try:
            assert self.gate.wait(60), "the test never opened the gate"
            if self.fail_with is not None:
                raise self.fail_with
            return n
        finally:
            with self._lock:
                self.running -= 1


@pytest.fixture
def source() -> Iterator[_Source]:
    made = _Source()
    yield made
    made.gate.set()  # a test that failed half-way must not leave a thread waiting


def _refreshed(
    source: _Source,
    clock: _Clock,
    retry: Retry = Retry.NEXT_CALL,
    on_failure: Callable[[ActioncageError], None] | None = None,
) -> Refreshed[int]:
    return Refreshed(source, 30.0, name=_NAME, retry=retry, on_failure=on_failure, clock=clock)


def test_the_first_call_computes_on_the_callers_thread_and_its_error_reaches_the_caller(
    source: _Source,
) -> None:
    refreshed = _refreshed(source, _Clock())
    source.fail_with = SandboxError("no engine")
    with pytest.raises(SandboxError, match="no engine"):
        refreshed.get()
    source.fail_with = None
    # Nothing was remembered from the failure: the next call computes again, here.
    assert refreshed.get() == 2
    assert source.threads == [threading.current_thread().name] * 2
    assert refreshed.get() == 2  # fresh: from memory
    refreshed.close()
    assert source.calls == 2


def test_a_stale_value_is_answered_at_once_while_a_background_thread_refreshes_it(
    source: _Source,
) -> None:
    clock = _Clock()
    refreshed = _refreshed(source, clock)
    assert refreshed.get() == 1
    clock.now += 30.0
    source.gate.clear()  # the refresh cannot finish until the test lets it
    assert refreshed.get() == 1
    assert wait_for(lambda: source.calls == 2, timeout=10)
    assert source.threads[1] == _NAME
    assert refreshed.get() == 1  # still computing: still the last value
    source.gate.set()
    assert wait_for(lambda: refreshed.get() == 2, timeout=10)
    refreshed.close()


def test_only_one_refresh_runs_at_a_time_however_many_callers_find_the_value_stale(
    source: _Source,
) -> None:
    clock = _Clock()
    refreshed = _refreshed(source, clock)
    refreshed.get()
    clock.now += 60.0
    source.gate.clear()
    callers = [
        threading.Thread(target=lambda: [refreshed.get() for _ in range(50)]) for _ in range(4)
    ]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(30)
    assert wait_for(lambda: source.calls == 2, timeout=10)
    assert [t.name for t in threading.enumerate()].count(_NAME) == 1
    assert refreshed.get() == 1
    source.gate.set()
    assert wait_for(lambda: refreshed.get() == 2, timeout=10)
    refreshed.close()
    assert source.calls == 2 and source.most_running == 1
    clock.now += 30.0  # stale again: the next refresh may start
    refreshed.get()
    refreshed.close()
    assert source.calls == 3


def test_a_failed_refresh_keeps_the_value_and_is_retried_at_the_next_call(
    source: _Source,
) -> None:
    clock = _Clock()
    failures: list[ActioncageError] = []
    refreshed = _refreshed(source, clock, Retry.NEXT_CALL, failures.append)
    refreshed.get()
    clock.now += 30.0
    source.fail_with = SandboxError("the engine went away")
    assert refreshed.get() == 1
    refreshed.close()
    assert source.calls == 2 and [str(e) for e in failures] == ["the engine went away"]
    assert refreshed.get() == 1  # the clock has not moved: still stale, asked again
    refreshed.close()
    assert source.calls == 3
    source.fail_with = None
    assert refreshed.get() == 1
    refreshed.close()
    assert source.calls == 4 and refreshed.get() == 4
    refreshed.close()
    assert source.calls == 4  # fresh again


def test_a_failed_refresh_keeps_the_value_and_is_retried_after_the_time_to_live(
    source: _Source,
) -> None:
    clock = _Clock()
    failures: list[ActioncageError] = []
    refreshed = _refreshed(source, clock, Retry.AFTER_TTL, failures.append)
    refreshed.get()
    clock.now += 30.0
    source.fail_with = SandboxError("no digest")
    assert refreshed.get() == 1
    refreshed.close()
    assert source.calls == 2 and len(failures) == 1
    clock.now += 29.0  # the failure counts as a look
    assert refreshed.get() == 1
    refreshed.close()
    assert source.calls == 2
    clock.now += 1.0
    source.fail_with = None
    assert refreshed.get() == 1
    refreshed.close()
    assert source.calls == 3 and refreshed.get() == 3


def test_an_unexpected_error_in_a_refresh_is_logged_and_keeps_the_value(
    source: _Source, caplog: pytest.LogCaptureFixture
) -> None:
    clock = _Clock()
    failures: list[ActioncageError] = []
    refreshed = _refreshed(source, clock, Retry.NEXT_CALL, failures.append)
    refreshed.get()
    clock.now += 30.0
    source.fail_with = KeyError("a bug")
    refreshed.get()
    refreshed.close()
    assert failures == [] and refreshed.get() == 1
    refreshed.close()
    [record] = [r for r in caplog.records if r.name == "actioncage.sandbox.refresh"][:1]
    assert _NAME in record.getMessage() and record.exc_info is not None


def test_close_waits_for_a_refresh_in_flight_but_only_so_long(source: _Source) -> None:
    clock = _Clock()
    refreshed = _refreshed(source, clock)
    refreshed.get()
    clock.now += 30.0
    source.gate.clear()
    refreshed.get()
    assert wait_for(lambda: source.running == 1, timeout=10)
    began = time.monotonic()
    refreshed.close(timeout_s=0.2)  # the refresh is stuck: close gives up
    assert time.monotonic() - began < 10 and source.running == 1
    # A refresh that ends a moment later is waited for.
    opener = threading.Timer(0.3, source.gate.set)
    opener.start()
    refreshed.close(timeout_s=30)
    assert source.gate.is_set() and source.running == 0
    assert [t.name for t in threading.enumerate()].count(_NAME) == 0
    assert refreshed.get() == 2
    opener.join()
