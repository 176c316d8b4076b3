"""Uniqueness races answer their documented 4xx and concurrent writers lose nothing."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from flask.testing import FlaskClient
from sqlalchemy import func, select

from actioncage.errors import IdempotencyInProgressError
from actioncage.models import Effect, EffectKind, IdempotentResponse
from actioncage.runs.effects import apply_effects
from actioncage.store import Store, repo
from actioncage.store.schema import OrgRow
from tests.conftest import API_KEY

THREADS = 8
ROUNDS = 3


def race(n: int, attempt: Callable[[int], Any]) -> list[Any]:
    """Run ``attempt(i)`` in ``n`` threads released together; each one's result or error."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def run(i: int) -> None:
        barrier.wait(timeout=30)
        try:
            results[i] = attempt(i)
        except Exception as exc:  # the outcome under test
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a racer never finished"
    return results


HEADERS = {"Authorization": f"Bearer {API_KEY}"}
CODE = "def execute_action(context):\n    return {}\n"


def test_concurrent_creates_of_one_action_name_give_one_201_and_409s(
    store_client: FlaskClient,
) -> None:
    for round_ in range(ROUNDS):
        name = f"greet_{round_}"
        statuses = race(
            THREADS,
            lambda _, name=name: (
                store_client.post(
                    "/v1/actions", json={"name": name, "code": CODE}, headers=HEADERS
                ).status_code
            ),
        )
        assert sorted(statuses) == [201] + [409] * (THREADS - 1)
    listed = store_client.get("/v1/actions", headers=HEADERS).get_json()["actions"]
    assert sorted(a["name"] for a in listed) == [f"greet_{r}" for r in range(ROUNDS)]


def test_concurrent_creates_of_one_conversation_id_give_one_201_and_409s(
    store_client: FlaskClient,
) -> None:
    for round_ in range(ROUNDS):
        conversation_id = f"conv-{round_}"
        responses = race(
            THREADS,
            lambda i, conversation_id=conversation_id: store_client.post(
                "/v1/conversations",
                json={"id": conversation_id, "metadata": {"by": i}},
                headers=HEADERS,
            ),
        )
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [201] + [409] * (THREADS - 1)
        conflict = next(r for r in responses if r.status_code == 409).get_json()
        assert conflict["error"]["type"] == "conflict"
        winner = next(r for r in responses if r.status_code == 201).get_json()
        stored = store_client.get(
            f"/v1/conversations/{conversation_id}", headers=HEADERS
        ).get_json()
        assert stored["metadata"] == winner["metadata"]


def test_concurrent_first_uses_of_a_new_org_all_succeed(store: Store) -> None:
    for round_ in range(ROUNDS):
        org = f"fresh-org-{round_}"

        def new_key_in(i: int, org: str = org) -> str:
            with store.session() as s:
                key, _ = repo.create_key(s, org, f"secret-{org}-{i}")
            return key.org_id

        assert race(THREADS, new_key_in) == [org] * THREADS
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(OrgRow)) == ROUNDS


def test_processes_booting_with_one_api_key_share_its_row(store: Store) -> None:
    def boot(_: int) -> str:
        with store.session() as s:
            key, _ = repo.create_key(s, "default", "shared-boot-key")
        return key.id

    ids = race(THREADS, boot)
    assert isinstance(ids[0], str) and ids == [ids[0]] * THREADS


def test_concurrent_claims_of_an_idempotency_key_let_exactly_one_run(store: Store) -> None:
    def claim(_: int) -> IdempotentResponse | None:
        with store.session() as s:
            return repo.claim_idempotency_key(s, "acme", "idem-1", "fp", ttl_s=3600)

    outcomes = race(THREADS, claim)
    assert outcomes.count(None) == 1
    assert all(isinstance(o, IdempotencyInProgressError) for o in outcomes if o is not None), (
        outcomes
    )
    with store.session() as s:
        repo.finish_idempotency_key(s, "acme", "idem-1", IdempotentResponse(200, {"ok": 1}))
    assert race(THREADS, claim) == [IdempotentResponse(200, {"ok": 1})] * THREADS


def test_concurrent_effects_on_one_conversation_all_land(store: Store) -> None:
    with store.session() as s:
        repo.create_conversation(s, "acme", "busy", [], {}, [])

    def write_tags(i: int) -> None:
        for j in range(5):
            # What the executor's _record does for a run's effects.
            with store.session() as s:
                current = repo.get_conversation(s, "acme", "busy", lock=True)
                effects = (
                    Effect(EffectKind.ADD_TAG, {"tag": f"t{i}-{j}"}),
                    Effect(EffectKind.SET_METADATA, {"key": f"k{i}", "value": j}),
                    Effect(EffectKind.ADD_EVENT, {"event": {"by": i, "n": j}}),
                )
                repo.apply_to_conversation(s, "acme", "busy", apply_effects(current, effects))

    assert race(THREADS, write_tags) == [None] * THREADS
    with store.session() as s:
        after = repo.get_conversation(s, "acme", "busy")
    assert sorted(after.tags) == sorted(f"t{i}-{j}" for i in range(THREADS) for j in range(5))
    assert after.metadata == {f"k{i}": 4 for i in range(THREADS)}
    assert len(after.events) == THREADS * 5


def test_concurrent_first_webhook_secrets_agree(store: Store) -> None:
    def secret(_: int) -> str:
        with store.session() as s:
            return repo.webhook_secret(s, "acme")

    secrets = race(THREADS, secret)
    assert isinstance(secrets[0], str) and secrets == [secrets[0]] * THREADS
