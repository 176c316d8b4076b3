"""Run slots without an engine: at most N runs, a bounded queue, a bounded wait, and a slot
always given back; real threads, no sleeps."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from actioncage.errors import OverloadedError
from actioncage.runs.slots import RunSlots
from tests.conftest import make_settings, wait_for


def _slots(tmp_path: Path, slots: int, queue: int, wait_ms: int = 30_000) -> RunSlots:
    return RunSlots(
        make_settings(
            tmp_path,
            max_concurrent_runs=slots,
            run_queue_size=queue,
            run_queue_wait_ms=wait_ms,
        )
    )


class Waiter:
    """A thread asking for a slot, holding it until release(); records what it got."""

    def __init__(self, slots: RunSlots) -> None:
        self.slots = slots
        self.got = threading.Event()
        self.refused: OverloadedError | None = None
        self.done = threading.Event()
        self._release = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            with self.slots.hold():
                self.got.set()
                assert self._release.wait(timeout=30)
        except OverloadedError as exc:
            self.refused = exc
        finally:
            self.done.set()

    def release(self) -> None:
        """Let it give its slot back (a queued waiter then leaves as soon as it gets one)."""
        self._release.set()


def _finish(waiters: list[Waiter]) -> None:
    for w in waiters:
        w.release()
    for w in waiters:
        w.thread.join(timeout=30)
        assert not w.thread.is_alive()


@pytest.fixture
def waiters() -> Iterator[list[Waiter]]:
    made: list[Waiter] = []
    yield made
    _finish(made)


def test_at_most_n_run_at_once_and_a_queued_caller_gets_the_first_freed_slot(
    tmp_path: Path, waiters: list[Waiter]
) -> None:
    slots = _slots(tmp_path, slots=2, queue=4)
    waiters.extend(Waiter(slots) for _ in range(2))
    assert all(w.got.wait(timeout=10) for w in waiters)
    assert slots.running == 2
    queued = Waiter(slots)
    waiters.append(queued)
    assert wait_for(lambda: slots.queued == 1, timeout=10)
    assert not queued.got.is_set() and slots.running == 2
    waiters[0].release()
    assert queued.got.wait(timeout=10)
    assert (slots.running, slots.queued, slots.refused) == (2, 0, 0)


def test_a_caller_past_the_slots_and_the_queue_is_refused_at_once(
    tmp_path: Path, waiters: list[Waiter]
) -> None:
    slots = _slots(tmp_path, slots=1, queue=1)
    holder = Waiter(slots)
    waiters.append(holder)
    assert holder.got.wait(timeout=10)
    waiters.append(Waiter(slots))
    assert wait_for(lambda: slots.queued == 1, timeout=10)
    started = time.monotonic()
    with pytest.raises(OverloadedError) as refused, slots.hold():
        pytest.fail("got a slot past the queue")
    assert time.monotonic() - started < 1  # not after the 30 s wait
    assert str(refused.value) == "all 1 run slots and 1 queue places are taken; retry shortly"
    assert (slots.running, slots.queued, slots.refused) == (1, 1, 1)


def test_with_no_queue_a_full_house_refuses_at_once(tmp_path: Path, waiters: list[Waiter]) -> None:
    slots = _slots(tmp_path, slots=1, queue=0)
    waiters.append(Waiter(slots))
    assert waiters[0].got.wait(timeout=10)
    with pytest.raises(OverloadedError, match="0 queue places"), slots.hold():
        pytest.fail("got a slot with none free")
    assert slots.refused == 1


def test_a_queued_caller_waits_at_most_the_queue_wait(
    tmp_path: Path, waiters: list[Waiter]
) -> None:
    slots = _slots(tmp_path, slots=1, queue=1, wait_ms=200)
    waiters.append(Waiter(slots))
    assert waiters[0].got.wait(timeout=10)
    started = time.monotonic()
    with pytest.raises(OverloadedError) as refused, slots.hold():
        pytest.fail("got a slot that was never freed")
    waited = time.monotonic() - started
    assert 0.2 <= waited < 5, waited
    assert str(refused.value) == "no run slot came free within 0.2 s; retry shortly"
    # It left the queue: the place is free for the next caller.
    assert (slots.running, slots.queued, slots.refused) == (1, 0, 1)


def test_a_slot_is_given_back_when_the_run_raises(tmp_path: Path) -> None:
    slots = _slots(tmp_path, slots=1, queue=0)
    with pytest.raises(RuntimeError, match="the run failed"), slots.hold():
        raise RuntimeError("the run failed")
    assert slots.running == 0
    with slots.hold():  # free again, at once
        assert slots.running == 1
    assert slots.running == 0


def test_releasing_wakes_queued_callers_one_slot_at_a_time(tmp_path: Path) -> None:
    slots = _slots(tmp_path, slots=1, queue=3)
    holder = Waiter(slots)
    queued: list[Waiter] = []
    try:
        assert holder.got.wait(timeout=10)
        queued.extend(Waiter(slots) for _ in range(3))
        assert wait_for(lambda: slots.queued == 3, timeout=10)
        holder.release()
        # Exactly one of the three gets the slot; the others stay queued.
        assert wait_for(lambda: sum(w.got.is_set() for w in queued) == 1, timeout=10)
        assert (slots.running, slots.queued) == (1, 2)
        first = next(w for w in queued if w.got.is_set())
        first.release()
        assert wait_for(lambda: sum(w.got.is_set() for w in queued) == 2, timeout=10)
        assert (slots.running, slots.queued) == (1, 1)
    finally:
        _finish([holder, *queued])
    assert all(w.got.is_set() for w in queued)
    assert all(w.refused is None for w in queued)
    assert (slots.running, slots.queued, slots.refused) == (0, 0, 0)
