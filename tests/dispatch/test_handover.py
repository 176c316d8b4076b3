"""A run whose API process dies while the run is on an executor worker: another API process
completes its record from the worker's outcome, with its effects applied, and the run is
never started again."""

from __future__ import annotations

import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import wait_for
from tests.dispatch.conftest import (
    AUTH,
    REFUND,
    REFUND_HOST,
    cluster,
    distributed,
    make_action,
    refund_server,
    refunds_by_id,
)

pytestmark = [pytest.mark.docker, distributed]

# The refund script, then a conversation effect: it must land although the API process
# that dispatched the run is gone by the time the run ends.
LATE = REFUND.replace(
    "    return {'refunded': args['id']}\n",
    "    add_conversation_tag(context, 'refunded')\n    return {'refunded': args['id']}\n",
)


def _runs(base: str) -> list[dict[str, Any]]:
    try:
        resp = requests.get(f"{base}/v1/runs", headers=AUTH, timeout=10)
    except requests.RequestException:
        return []
    runs: list[dict[str, Any]] = resp.json()["runs"]
    return runs


# Each broker and each record case once (the record cases do not depend on the broker, nor
# the broker's part on them): two runs of about 20 s instead of four.
@pytest.mark.parametrize(
    ("broker", "early_record"),
    [("rabbitmq", True), ("redis", False)],
    ids=["rabbitmq-early-record", "redis-no-record"],
)
def test_a_run_whose_api_process_is_sigkilled_is_completed_by_another_with_its_effects(
    tmp_path: Path, request: pytest.FixtureRequest, broker: str, early_record: bool
) -> None:
    broker_url: str = request.getfixturevalue("amqp_url" if broker == "rabbitmq" else "redis_url")
    # early-record: the run is out longer than dispatch_record_after_ms, so it has a durable
    # "running" record and job when its process dies. no-record: it has none (its process
    # died before writing one): the survivor records it from the handover ticket alone.
    leases = {
        "ACTIONCAGE_JOB_LEASE_S": "4",
        "ACTIONCAGE_JOB_RENEW_S": "1",
        "ACTIONCAGE_JOB_REAP_S": "1",
        "ACTIONCAGE_OWNER_STALE_S": "4",
        "ACTIONCAGE_HEARTBEAT_INTERVAL_S": "1",
        "ACTIONCAGE_DISPATCH_RECORD_AFTER_MS": "250" if early_record else "3600000",
    }
    with refund_server() as (port, seen), cluster(tmp_path, broker_url, **leases) as c:
        a, b = c.start_api(), c.start_api()
        c.start_worker("w1", slots=1)
        c.wait_live("w1")
        make_action(a, "late", LATE, timeoutMs=30_000, egress=[REFUND_HOST])
        created = requests.post(
            f"{a}/v1/conversations", json={"id": "conv-1"}, headers=AUTH, timeout=30
        )
        assert created.status_code == 201, created.text
        body = {"args": {"id": "late", "port": port, "sleep": 3}, "conversationId": "conv-1"}

        def execute_on_a() -> requests.Response:
            return requests.post(
                f"{a}/v1/actions/late/execute", json=body, headers=AUTH, timeout=120
            )

        with ThreadPoolExecutor(1) as pool:
            caller = pool.submit(execute_on_a)
            # The run is on the worker (its side effect happened); it sleeps 3 s more.
            assert wait_for(lambda: refunds_by_id(seen).get("late") == 1, timeout=60)
            # While it is away its record says "running", in the shared database (only once
            # it has been out for dispatch_record_after_ms).
            if early_record:
                assert wait_for(lambda: [r["status"] for r in _runs(b)] == ["running"])
            else:
                assert _runs(b) == []
            api_a = c.apis[0][1]
            api_a.send_signal(signal.SIGKILL)
            api_a.wait(timeout=10)
            assert isinstance(caller.exception(timeout=60), requests.ConnectionError)

        def completed() -> bool:
            runs = _runs(b)
            return len(runs) == 1 and runs[0]["status"] != "running"

        assert wait_for(completed, timeout=60), (_runs(b), c.log_of(f"api-{b.rsplit(':', 1)[1]}"))
        run = _runs(b)[0]
        assert run["status"] == "ok", run
        assert run["output"] == {"refunded": "late"} and run["executor"] == "w1"
        assert run["effectsApplied"] is True
        conv = requests.get(f"{b}/v1/conversations/conv-1", headers=AUTH, timeout=30).json()
        assert conv["tags"] == ["refunded"]
        # Completed from the worker's one outcome: never started again.
        assert refunds_by_id(seen) == {"late": 1}
        assert "handing it over" in c.log_of("worker-w1")
