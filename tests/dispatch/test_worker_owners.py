"""Which sandbox owners a worker's sweep may take: only silent workers of its own broker."""

from __future__ import annotations

from actioncage.dispatch.worker import SilentWorkerOwners, owner_prefix, worker_owner_id

RABBIT = "amqp://guest:secret@127.0.0.1:5672//"
REDIS = "redis://127.0.0.1:6379/0"


def test_a_sweep_takes_only_silent_workers_of_its_own_broker() -> None:
    me, live, dead = (worker_owner_id(RABBIT) for _ in range(3))
    other_broker = worker_owner_id(REDIS)
    owners = SilentWorkerOwners(owner_prefix(RABBIT), {me, live})
    assert dead in owners
    assert me not in owners and live not in owners
    assert other_broker not in owners  # another deployment sharing the engine
    assert "ins_0123456789abcdef" not in owners  # an API process's: swept from the database
    assert None not in owners


def test_owner_ids_are_fresh_and_do_not_carry_the_broker_password() -> None:
    a, b = worker_owner_id(RABBIT), worker_owner_id(RABBIT)
    assert a != b and a.startswith(owner_prefix(RABBIT)) and "secret" not in a
    assert owner_prefix(RABBIT) != owner_prefix(REDIS)
