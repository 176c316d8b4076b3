"""Org ceilings, GET /v1/policy, the policy hash on runs, GET /v1/runs, and tenant limits."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from actioncage import create_app
from actioncage.cli import main
from actioncage.errors import RateLimitedError
from actioncage.models import OrgPolicy
from actioncage.runs.tenant_limits import TenantLimiter
from actioncage.sandbox.limits import SECCOMP_PROFILE_PATH, seccomp_profile
from actioncage.shared.memory import MemoryConcurrency, MemoryRateLimits
from actioncage.store import repo
from tests import fakes
from tests.conftest import database_url, make_settings

_OK = "def execute_action(context):\n    return 1\n"


def _set_org_policy(app: Flask, policy: OrgPolicy) -> None:
    with app.extensions["actioncage"].store.session() as s:
        repo.set_org_policy(s, "default", policy)


def test_an_action_beyond_the_orgs_ceiling_is_refused_with_the_reason(
    app: Flask, client: FlaskClient, auth_headers: dict[str, str]
) -> None:
    _set_org_policy(app, OrgPolicy(max_timeout_ms=2000, max_memory_mb=128, max_cpus=0.5))
    for policy, field in (
        ({"timeoutMs": 2001}, "timeoutMs"),
        ({"memoryMb": 256}, "memoryMb"),
        ({"cpus": 1.0}, "cpus"),
    ):
        resp = client.post(
            "/v1/actions", json={"name": "a", "code": _OK, "policy": policy}, headers=auth_headers
        )
        assert resp.status_code == 422, resp.get_json()
        error = resp.get_json()["error"]
        assert error["type"] == "policy_violation" and error["field"] == field
        assert "org's ceiling" in error["message"]
    resp = client.post(
        "/v1/actions",
        json={"name": "a", "code": _OK, "policy": {"timeoutMs": 2000}},
        headers=auth_headers,
    )
    assert resp.status_code == 201
    action_id = resp.get_json()["id"]
    resp = client.patch(
        f"/v1/actions/{action_id}", json={"policy": {"memoryMb": 512}}, headers=auth_headers
    )
    assert resp.status_code == 422 and resp.get_json()["error"]["field"] == "memoryMb"


def test_policy_shows_every_flag_the_seccomp_hash_and_the_org_ceiling(
    app: Flask, client: FlaskClient, auth_headers: dict[str, str], docker_client: Any
) -> None:
    _set_org_policy(app, OrgPolicy(max_timeout_ms=3000, runs_per_minute=10, restricted=True))
    resp = client.get("/v1/policy", headers=auth_headers)
    assert resp.status_code == 200
    body = resp.get_json()
    host = body["container"]["host_config"]
    assert host["network_mode"] == "none" and host["cap_drop"] == ["ALL"]
    assert host["read_only"] is True and host["init"] is True and host["ipc_mode"] == "private"
    assert host["privileged"] is False and host["pids_limit"] == 64
    assert host["memswap_limit"] == host["mem_limit"]
    assert "no-new-privileges" in host["security_opt"]
    expected = hashlib.sha256(seccomp_profile().encode()).hexdigest()
    assert body["seccompSha256"] == expected
    assert f"seccomp=sha256:{expected}" in host["security_opt"]
    assert body["container"]["user"] == "10001:10001" and body["container"]["environment"] == {}
    assert body["imageDigest"].startswith("sha256:")
    assert body["limits"]["timeoutMs"] == 3000  # the default 10 s, clamped to the ceiling
    assert body["maxima"]["timeoutMs"] == 3000
    assert body["orgPolicy"]["maxTimeoutMs"] == 3000 and body["orgPolicy"]["restricted"] is True
    assert client.get("/v1/policy").status_code == 401


def test_the_profile_forbids_what_docker_default_allows() -> None:
    import json

    profile = json.loads(SECCOMP_PROFILE_PATH.read_text())
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO"
    allowed = {
        n
        for rule in profile["syscalls"]
        if rule["action"] == "SCMP_ACT_ALLOW" and "args" not in rule
        for n in rule["names"]
    }
    for name in (
        "ptrace",
        "mount",
        "umount2",
        "unshare",
        "setns",
        "keyctl",
        "add_key",
        "request_key",
        "bpf",
        "userfaultfd",
        "perf_event_open",
        "personality",
        "kexec_load",
        "init_module",
        "finit_module",
        "delete_module",
        "open_by_handle_at",
        "name_to_handle_at",
        "pivot_root",
        "swapon",
        "swapoff",
        "reboot",
        "clone",
        "clone3",
        "chroot",
        "io_uring_setup",
        "process_vm_readv",
    ):
        assert name not in allowed, name


@pytest.mark.docker
def test_each_run_records_the_policy_hash_and_image_digest(
    client: FlaskClient, auth_headers: dict[str, str], run_code: Any
) -> None:
    run = run_code(_OK)
    policy = client.get("/v1/policy", headers=auth_headers).get_json()
    assert run["policyHash"] == policy["policyHash"] and len(run["policyHash"]) == 64
    assert run["imageDigest"] == policy["imageDigest"]
    stored = client.get(f"/v1/runs/{run['runId']}", headers=auth_headers).get_json()
    assert stored["policyHash"] == run["policyHash"]
    # A different limit is a different policy.
    other = run_code(_OK, name="other", policy={"memoryMb": 128})
    assert other["policyHash"] != run["policyHash"]


@pytest.mark.docker
def test_runs_list_filters_and_pages(
    client: FlaskClient, auth_headers: dict[str, str], make_action: Any, execute: Any
) -> None:
    good = make_action(_OK, name="good")
    bad = make_action("def execute_action(context):\n    raise ValueError('no')\n", name="bad")
    ids = [execute(good["id"])[1]["runId"] for _ in range(3)] + [execute(bad["id"])[1]["runId"]]

    def get(query: str) -> dict[str, Any]:
        resp = client.get(f"/v1/runs?{query}", headers=auth_headers)
        assert resp.status_code == 200, resp.get_json()
        body: dict[str, Any] = resp.get_json()
        return body

    assert [r["runId"] for r in get("")["runs"]] == ids[::-1]
    assert [r["runId"] for r in get(f"actionId={good['id']}")["runs"]] == ids[2::-1]
    # A name works as every other route's action reference does.
    assert [r["runId"] for r in get("actionId=good")["runs"]] == ids[2::-1]
    assert get("actionId=nothing-by-this-name")["runs"] == []
    assert [r["runId"] for r in get("status=error")["runs"]] == [ids[3]]
    first = get("limit=3")
    assert [r["runId"] for r in first["runs"]] == ids[:0:-1]
    second = get(f"limit=3&cursor={first['nextCursor']}")
    assert [r["runId"] for r in second["runs"]] == ids[:1] and second["nextCursor"] is None
    for query, field in (
        ("status=weird", "status"),
        ("limit=0", "limit"),
        ("limit=x", "limit"),
        ("cursor=!!!", "cursor"),
        ("colour=red", "colour"),
    ):
        resp = client.get(f"/v1/runs?{query}", headers=auth_headers)
        assert resp.status_code == 422 and resp.get_json()["error"]["field"] == field


@pytest.mark.docker
def test_runs_per_minute_answers_429_with_retry_after(
    app: Flask, make_action: Any, execute: Any, client: FlaskClient, auth_headers: dict[str, str]
) -> None:
    _set_org_policy(app, OrgPolicy(runs_per_minute=2))
    action = make_action(_OK)
    assert execute(action["id"])[0] == 200
    assert execute(action["id"])[0] == 200
    resp = client.post(f"/v1/actions/{action['id']}/execute", json={}, headers=auth_headers)
    assert resp.status_code == 429
    assert resp.get_json()["error"]["type"] == "rate_limited"
    assert 1 <= int(resp.headers["Retry-After"]) <= 60


@pytest.mark.docker
def test_concurrent_runs_per_org_answer_429_while_one_runs(
    tmp_path: Path, auth_headers: dict[str, str]
) -> None:
    with fakes.held_llm() as llm:
        app = create_app(make_settings(tmp_path, **llm.settings()))
        try:
            _set_org_policy(app, OrgPolicy(concurrent_runs=1))
            client = app.test_client()
            created = client.post(
                "/v1/actions",
                json={"name": "held", "code": fakes.held_code("held")},
                headers=auth_headers,
            )
            assert created.status_code == 201, created.get_json()
            url = f"/v1/actions/{created.get_json()['id']}/execute"
            results: list[Any] = []
            worker = threading.Thread(
                target=lambda: results.append(
                    app.test_client().post(url, json={}, headers=auth_headers)
                )
            )
            worker.start()
            try:
                # The first run is admitted and held inside its host call.
                assert llm.wait_entered(1), [r.get_json() for r in results]
                resp = client.post(url, json={}, headers=auth_headers)
                assert resp.status_code == 429 and resp.headers["Retry-After"] == "1"
                assert "runs in progress" in resp.get_json()["error"]["message"]
            finally:
                llm.release()
                worker.join(timeout=60)
            assert [(r.status_code, r.get_json()["output"]) for r in results] == [(200, "held")]
            # The slot came back with the run: the next one is admitted.
            again = client.post(url, json={}, headers=auth_headers)
            assert again.status_code == 200 and again.get_json()["output"] == "held"
        finally:
            app.extensions["actioncage"].close()


@pytest.mark.docker
def test_per_key_limit_applies_to_the_key(tmp_path: Path, auth_headers: dict[str, str]) -> None:
    app = create_app(make_settings(tmp_path, key_runs_per_minute=1))
    try:
        client = app.test_client()
        resp = client.post("/v1/actions", json={"name": "a", "code": _OK}, headers=auth_headers)
        url = f"/v1/actions/{resp.get_json()['id']}/execute"
        assert client.post(url, json={}, headers=auth_headers).status_code == 200
        resp = client.post(url, json={}, headers=auth_headers)
        assert resp.status_code == 429 and "API key" in resp.get_json()["error"]["message"]
    finally:
        app.extensions["actioncage"].close()


def test_limiter_refuses_past_its_limits_and_gives_slots_back(tmp_path: Path) -> None:
    # The window itself sliding is tested on short windows in tests/shared/.
    limiter = TenantLimiter(make_settings(tmp_path), MemoryRateLimits(), MemoryConcurrency())
    org = OrgPolicy(runs_per_minute=2, concurrent_runs=1)
    with limiter.admit("o", "k", org):
        with pytest.raises(RateLimitedError) as exc, limiter.admit("o", "k", org):
            pass
        assert exc.value.retry_after_s == 1
    with limiter.admit("o", "k", org):  # the refusal above was not counted
        pass
    with pytest.raises(RateLimitedError) as exc, limiter.admit("o", "k", org):
        pass
    assert 55 <= exc.value.retry_after_s <= 60
    with limiter.admit("another-org", "k", org):
        pass
    # A run that fails still gives its slot back.
    with pytest.raises(ValueError), limiter.admit("p", None, org):
        raise ValueError("boom")
    with limiter.admit("p", None, org):
        pass


def test_cli_sets_and_shows_org_policy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ACTIONCAGE_DATABASE_URL", database_url(tmp_path, "cli"))
    assert main(["org", "set-policy", "acme", "--max-timeout-ms", "5000", "--restricted"]) == 0
    assert main(["org", "set-policy", "acme", "--runs-per-minute", "30"]) == 0
    assert main(["org", "set-policy", "acme", "--egress", "api.example.com,*.acme.test:443"]) == 0
    capsys.readouterr()
    assert main(["org", "show-policy", "acme"]) == 0
    shown = capsys.readouterr().out
    assert '"max_timeout_ms": 5000' in shown and '"runs_per_minute": 30' in shown
    assert '"restricted": true' in shown
    assert '"api.example.com",' in shown and '"*.acme.test:443"' in shown
    assert main(["org", "set-policy", "acme", "--max-timeout-ms", "0", "--no-restricted"]) == 0
    capsys.readouterr()
    main(["org", "show-policy", "acme"])
    shown = capsys.readouterr().out
    assert '"max_timeout_ms": null' in shown and '"restricted": false' in shown
    assert main(["org", "set-policy", "acme", "--max-memory-mb", "-1"]) == 2
    assert main(["org", "set-policy", "acme", "--egress", "bad host"]) == 2
