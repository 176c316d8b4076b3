"""Two `actioncage serve` processes on one database and one Redis count an org's runs as
one: over real HTTP, alternating between them."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from actioncage.models import OrgPolicy
from actioncage.store import Store, repo
from tests.conftest import API_KEY, database_url
from tests.served import served

OK = "def execute_action(context):\n    return 1\n"


@pytest.mark.docker
def test_an_org_limited_to_10_runs_a_minute_gets_10_over_two_processes(
    tmp_path: Path, redis_url: str
) -> None:
    env = {"ACTIONCAGE_API_KEY": API_KEY, "ACTIONCAGE_REDIS_URL": redis_url}
    env["ACTIONCAGE_POOL_SIZE"] = "0"
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with served(tmp_path, **env) as a, served(tmp_path, **env) as b:
        store = Store(database_url(tmp_path, "served"))
        with store.session() as s:
            repo.set_org_policy(s, "default", OrgPolicy(runs_per_minute=10))
        store.dispose()
        created = requests.post(
            f"{a}/v1/actions", json={"name": "ok", "code": OK}, headers=headers, timeout=30
        )
        assert created.status_code == 201, created.text
        answers = [
            requests.post(
                f"{base}/v1/actions/ok/execute", json={"args": {}}, headers=headers, timeout=60
            )
            for base in [a, b] * 7
        ]
    statuses = [r.status_code for r in answers]
    assert statuses == [200] * 10 + [429] * 4, [r.text for r in answers]
    assert all(r.json()["status"] == "ok" and r.json()["output"] == 1 for r in answers[:10])
    for refused in answers[10:]:
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert refused.json()["error"]["type"] == "rate_limited"
