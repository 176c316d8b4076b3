"""The callback outbox with a real store and a real receiver on loopback: signed, delivered
once, retried, failed for good, and redelivered after its deliverer died."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest

from actioncage.runs.callbacks import SIGNATURE_HEADER, CallbackSender
from actioncage.runs.outbox import Outbox
from actioncage.settings import Settings
from actioncage.store import Store, repo
from actioncage.store import callbacks as outbox_repo
from tests.conftest import wait_for
from tests.runs.conftest import Receiver


@pytest.fixture
def outboxes(durable_settings: Settings, store: Store) -> Iterator[list[Outbox]]:
    """Two outboxes (two processes) over one store; their loops do not run unless started."""
    made = [
        Outbox(durable_settings, store, CallbackSender(durable_settings), owner)
        for owner in ("inst_a", "inst_b")
    ]
    yield made
    for outbox in made:
        outbox.close()


def _owe(store: Store, url: str, run_id: str = "run_1") -> str:
    with store.session() as s:
        return outbox_repo.add_callback(
            s, "org1", run_id, url, json.dumps({"runId": run_id}).encode(), repo.now()
        )


def _callback(store: Store, callback_id: str) -> outbox_repo.Callback:
    with store.session() as s:
        (found,) = [
            c for c in outbox_repo.callbacks_for_run(s, "run_1") if c.id == callback_id
        ] or [None]
    assert found is not None
    return found


def test_a_callback_is_delivered_once_and_signed(
    store: Store, outboxes: list[Outbox], receiver: Receiver
) -> None:
    callback_id = _owe(store, receiver.url)
    outboxes[0].start()
    outboxes[0].wake()
    assert wait_for(lambda: _callback(store, callback_id).state == outbox_repo.DELIVERED, 10)
    assert outboxes[1].deliver_due() == outboxes[0].deliver_due() == 0
    ((headers, body),) = receiver.received
    with store.session() as s:
        secret = repo.webhook_secret(s, "org1")
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers[SIGNATURE_HEADER], expected)
    assert json.loads(body) == {"runId": "run_1"}
    assert _callback(store, callback_id).attempts == 1


def test_two_processes_racing_deliver_each_callback_once(
    store: Store, outboxes: list[Outbox], receiver: Receiver
) -> None:
    ids = [_owe(store, receiver.url) for _ in range(10)]
    barrier = threading.Barrier(2)

    def deliver(outbox: Outbox) -> None:
        barrier.wait()
        outbox.deliver_due()

    threads = [threading.Thread(target=deliver, args=(o,)) for o in outboxes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(receiver.received) == 10
    assert all(_callback(store, i).state == outbox_repo.DELIVERED for i in ids)


def test_a_server_error_is_retried_with_back_off(
    store: Store, outboxes: list[Outbox], receiver: Receiver
) -> None:
    receiver.answers = [500, 503]
    callback_id = _owe(store, receiver.url)
    outboxes[0].start()
    assert wait_for(lambda: _callback(store, callback_id).state == outbox_repo.DELIVERED, 10)
    callback = _callback(store, callback_id)
    assert callback.attempts == 3 and len(receiver.received) == 3
    assert callback.last_error is None


def test_a_client_error_or_running_out_of_attempts_fails_it_for_good(
    store: Store, outboxes: list[Outbox], receiver: Receiver, durable_settings: Settings
) -> None:
    receiver.answers = [400] + [500] * durable_settings.callback_max_attempts
    refused = _owe(store, receiver.url)
    outboxes[0].deliver_due()
    assert _callback(store, refused).state == outbox_repo.FAILED
    assert _callback(store, refused).last_error == "answered 400"

    exhausted = _owe(store, receiver.url)
    outboxes[0].start()
    assert wait_for(lambda: _callback(store, exhausted).state == outbox_repo.FAILED, 10)
    assert _callback(store, exhausted).attempts == durable_settings.callback_max_attempts


def test_a_claim_whose_deliverer_died_is_delivered_by_another_process(
    store: Store, outboxes: list[Outbox], receiver: Receiver
) -> None:
    callback_id = _owe(store, receiver.url)
    now = repo.now()
    with store.session() as s:  # a process claimed it, then died before posting
        claimed = outbox_repo.claim_callback(
            s, callback_id, "inst_dead", now, now + timedelta(seconds=1)
        )
    assert claimed is not None
    # While the claim's lease holds, nobody else touches it.
    assert outboxes[1].deliver_due() == 0 and receiver.received == []
    outboxes[1].start()
    assert wait_for(lambda: _callback(store, callback_id).state == outbox_repo.DELIVERED, 10)
    assert len(receiver.received) == 1


def test_close_hands_back_the_claims_it_holds(
    store: Store, outboxes: list[Outbox], receiver: Receiver
) -> None:
    callback_id = _owe(store, receiver.url)
    now = repo.now()
    with store.session() as s:
        outbox_repo.claim_callback(s, callback_id, "inst_a", now, now + timedelta(minutes=5))
    outboxes[0].close()
    assert _callback(store, callback_id).owner is None
    assert outboxes[1].deliver_due() == 1 and len(receiver.received) == 1
