"""Egress through the proxy: allowed hosts reachable, everything else refused and recorded.

A local "customer API" on loopback stands in for an outside service; the operator allows its
CIDR and pins names to addresses with ACTIONCAGE_EGRESS_RESOLVE (also how the DNS-rebinding
case gets a name that resolves to a private address).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from actioncage import create_app
from actioncage.models import OrgPolicy
from actioncage.store import repo
from tests.conftest import make_settings, sandbox_subject

pytestmark = [pytest.mark.docker, sandbox_subject]


class _Api(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        body = json.dumps({"path": self.path, "port": self.server.server_address[1]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def customer_api() -> Iterator[list[int]]:
    """Two local HTTP servers (the second one is the "other port"); yields their ports."""
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), _Api) for _ in range(2)]
    for server in servers:
        Thread(target=server.serve_forever, daemon=True).start()
    yield [server.server_address[1] for server in servers]
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def egress_app(tmp_path: Path, tier: str) -> Iterator[Flask]:
    # A database of its own: the plain ``app`` fixture stands for an org with no ceiling.
    # Egress through the per-run proxy's socket works the same in every isolation tier.
    (tmp_path / "egress").mkdir()
    settings = make_settings(
        tmp_path / "egress",
        isolation=tier,
        egress_allowed_cidrs="127.0.0.1/32",
        egress_resolve={
            "api.customer.test": "127.0.0.1",
            "rebind.customer.test": "10.9.8.7",
            "meta.customer.test": "169.254.169.254",
            "loop.customer.test": "127.0.0.2",
        },
    )
    app = create_app(settings)
    with app.extensions["actioncage"].store.session() as s:
        repo.set_org_policy(s, "default", OrgPolicy(egress=("*.customer.test",)))
    yield app
    app.extensions["actioncage"].close()


def _run(
    client: FlaskClient, headers: dict[str, str], code: str, egress: list[str], args: Any
) -> dict[str, Any]:
    resp = client.post(
        "/v1/actions",
        json={"name": "net", "code": code, "policy": {"egress": egress}},
        headers=headers,
    )
    assert resp.status_code == 201, resp.get_json()
    resp = client.post(
        f"/v1/actions/{resp.get_json()['id']}/execute", json={"args": args}, headers=headers
    )
    assert resp.status_code == 200
    body: dict[str, Any] = resp.get_json()
    return body


def test_an_allowed_host_is_reached_through_the_proxy_and_recorded(
    egress_app: Flask, auth_headers: dict[str, str], customer_api: list[int]
) -> None:
    port, other = customer_api
    code = (
        "import os, socket, requests\n"
        "def execute_action(context):\n"
        "    port, other = context['args']['port'], context['args']['other']\n"
        "    r = requests.get(f'http://api.customer.test:{port}/hello', timeout=5)\n"
        "    o = requests.get(f'http://api.customer.test:{other}/other', timeout=5)\n"
        "    return {'body': r.json(), 'other': o.status_code,\n"
        "            'ifaces': sorted(n for _, n in socket.if_nameindex()),\n"
        "            'proxy': os.environ['HTTPS_PROXY'].startswith('http://127.0.0.1:')}\n"
    )
    run = _run(
        egress_app.test_client(),
        auth_headers,
        code,
        [f"api.customer.test:{port}"],
        {"port": port, "other": other},
    )
    assert run["status"] == "ok", run
    assert run["output"] == {
        "body": {"path": "/hello", "port": port},
        "other": 403,
        "ifaces": ["lo"],
        "proxy": True,
    }
    allowed, refused = run["egress"]
    assert allowed["host"] == "api.customer.test" and allowed["port"] == port
    assert allowed["allowed"] is True and allowed["address"] == "127.0.0.1"
    assert allowed["bytesOut"] > 0 and allowed["bytesIn"] > 0
    assert refused["port"] == other and refused["allowed"] is False
    assert "not on the egress allowlist" in refused["reason"]


def test_connect_tunnels_to_an_allowed_host(
    egress_app: Flask, auth_headers: dict[str, str], customer_api: list[int]
) -> None:
    port = customer_api[0]
    code = (
        "import os, socket\n"
        "def execute_action(context):\n"
        "    host, proxy_port = os.environ['HTTPS_PROXY'][7:].split(':')\n"
        "    s = socket.create_connection((host, int(proxy_port)), timeout=5)\n"
        "    target = f\"api.customer.test:{context['args']['port']}\"\n"
        "    s.sendall(f'CONNECT {target} HTTP/1.1\\r\\nHost: {target}\\r\\n\\r\\n'.encode())\n"
        "    head = s.recv(4096).decode()\n"
        "    s.sendall(b'GET /tunnel HTTP/1.0\\r\\nHost: api.customer.test\\r\\n\\r\\n')\n"
        "    data = b''\n"
        "    while chunk := s.recv(65536):\n"
        "        data += chunk\n"
        "    return [head.split('\\r\\n')[0], data.split(b'\\r\\n\\r\\n', 1)[1].decode()]\n"
    )
    run = _run(egress_app.test_client(), auth_headers, code, ["api.customer.test"], {"port": port})
    assert run["status"] == "ok", run
    status_line, body = run["output"]
    assert status_line == "HTTP/1.1 200 Connection established"
    assert json.loads(body) == {"path": "/tunnel", "port": port}
    assert run["egress"][0]["allowed"] is True and run["egress"][0]["bytesIn"] > 0


def test_everything_else_is_refused_and_on_the_audit_record(
    egress_app: Flask, auth_headers: dict[str, str], customer_api: list[int]
) -> None:
    port = customer_api[0]
    code = (
        "import socket, requests\n"
        "def execute_action(context):\n"
        "    port = context['args']['port']\n"
        "    out = {}\n"
        "    for url in ['http://example.com/', 'http://169.254.169.254/latest/meta-data/',\n"
        "                'http://meta.customer.test/', f'http://rebind.customer.test:{port}/',\n"
        "                f'http://loop.customer.test:{port}/', 'http://10.0.0.1/',\n"
        "                'https://example.com/', 'https://rebind.customer.test/']:\n"
        "        try:\n"
        "            out[url] = requests.get(url, timeout=5).status_code\n"
        "        except requests.RequestException as exc:\n"
        "            out[url] = type(exc).__name__\n"
        "    for target in [('127.0.0.1', port), ('169.254.169.254', 80), ('10.0.0.1', 80),\n"
        "                   ('172.17.0.1', 2375), ('8.8.8.8', 53)]:\n"
        "        try:\n"
        "            socket.create_connection(target, timeout=2).close()\n"
        "            out[str(target)] = 'connected'\n"
        "        except OSError:\n"
        "            out[str(target)] = 'refused'\n"
        "    try:\n"
        "        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)\n"
        "        out['raw'] = 'opened'\n"
        "    except OSError:\n"
        "        out['raw'] = 'refused'\n"
        "    return out\n"
    )
    run = _run(egress_app.test_client(), auth_headers, code, ["*.customer.test"], {"port": port})
    assert run["status"] == "ok", run
    out = run["output"]
    for url in list(out)[:6]:
        assert out[url] == 403, (url, out)
    assert out["https://example.com/"] == "ProxyError"
    assert out["https://rebind.customer.test/"] == "ProxyError"
    assert [v for k, v in out.items() if k.startswith("(")] == ["refused"] * 5
    assert out["raw"] == "refused"
    records = {(r["host"], r["port"]): r for r in run["egress"]}
    assert not any(r["allowed"] for r in records.values()), run["egress"]
    assert "not on the egress allowlist" in records[("example.com", 80)]["reason"]
    assert "not on the egress allowlist" in records[("169.254.169.254", 80)]["reason"]
    assert "169.254.0.0/16" in records[("meta.customer.test", 80)]["reason"]
    assert "10.0.0.0/8" in records[("rebind.customer.test", port)]["reason"]
    assert "10.0.0.0/8" in records[("rebind.customer.test", 443)]["reason"]
    assert "127.0.0.0/8" in records[("loop.customer.test", port)]["reason"]
    assert ("example.com", 443) in records
    # The stored record is the same.
    client = egress_app.test_client()
    stored = client.get(f"/v1/runs/{run['runId']}", headers=auth_headers).get_json()
    assert stored["egress"] == run["egress"]


def test_egress_beyond_the_orgs_ceiling_is_refused_on_save(
    egress_app: Flask, app: Flask, auth_headers: dict[str, str]
) -> None:
    client = egress_app.test_client()
    for egress, message in (
        (["api.example.com"], "outside the org's ceiling"),
        (["*.test"], "outside the org's ceiling"),
        (["not a host"], "not a host name"),
    ):
        resp = client.post(
            "/v1/actions",
            json={
                "name": "x",
                "code": "def execute_action(c):\n    return 1\n",
                "policy": {"egress": egress},
            },
            headers=auth_headers,
        )
        assert resp.status_code == 422, resp.get_json()
        assert message in resp.get_json()["error"]["message"]
    # An org without an egress ceiling gets no egress at all.
    resp = app.test_client().post(
        "/v1/actions",
        json={
            "name": "x",
            "code": "def execute_action(c):\n    return 1\n",
            "policy": {"egress": ["api.customer.test"]},
        },
        headers=auth_headers,
    )
    assert resp.status_code == 422 and "no egress allowed" in resp.get_json()["error"]["message"]


def test_a_run_without_egress_has_no_proxy_and_no_socket(run_code: Any) -> None:
    run = run_code(
        "import os\n"
        "def execute_action(context):\n"
        "    return [k for k in os.environ if 'proxy' in k.lower()] + [\n"
        "        p for p in ['/run/actioncage-egress'] if os.path.exists(p)]\n"
    )
    assert run["status"] == "ok" and run["output"] == [] and run["egress"] == []


def test_with_the_warm_pool_on_egress_runs_start_cold_and_seed_no_profile(
    tmp_path: Path, auth_headers: dict[str, str], customer_api: list[int]
) -> None:
    port, _ = customer_api
    app = create_app(
        make_settings(
            tmp_path,
            pool_size=1,
            egress_allowed_cidrs="127.0.0.1/32",
            egress_resolve={"api.customer.test": "127.0.0.1"},
        )
    )
    components = app.extensions["actioncage"]
    try:
        with components.store.session() as s:
            repo.set_org_policy(s, "default", OrgPolicy(egress=("*.customer.test",)))
        code = (
            "import requests\n"
            "def execute_action(context):\n"
            '    return requests.get(f\'http://api.customer.test:{context["args"]["port"]}/x\', timeout=5).json()\n'
        )
        profiles_before = len(components.pool.stats())
        cold_before = components.runner.cold_starts
        run = _run(
            app.test_client(), auth_headers, code, [f"api.customer.test:{port}"], {"port": port}
        )
        assert run["status"] == "ok" and run["output"]["path"] == "/x", run
        assert components.runner.cold_starts == cold_before + 1
        assert len(components.pool.stats()) == profiles_before
    finally:
        components.close()


def test_the_hosts_docker_client_proxies_never_reach_a_sandbox(
    tmp_path: Path, auth_headers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # docker-py's create_container adds these to a container's environment by default.
    config = tmp_path / "docker-config"
    config.mkdir()
    (config / "config.json").write_text(
        '{"proxies": {"default": {"httpProxy": "http://leak.test:3128",'
        ' "httpsProxy": "http://leak.test:3128", "noProxy": "leak.test"}}}'
    )
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    app = create_app(make_settings(tmp_path))
    try:
        client = app.test_client()
        code = "import os\ndef execute_action(context):\n    return sorted(os.environ)\n"
        created = client.post(
            "/v1/actions", json={"name": "env", "code": code}, headers=auth_headers
        )
        assert created.status_code == 201, created.get_json()
        run = client.post("/v1/actions/env/execute", json={}, headers=auth_headers).get_json()
        assert run["status"] == "ok", run
        assert not [k for k in run["output"] if "proxy" in k.lower()], run["output"]
    finally:
        app.extensions["actioncage"].close()


def test_a_script_without_egress_that_tries_the_network_is_told_why(run_code: Any) -> None:
    run = run_code(
        "import requests\n"
        "def execute_action(context):\n"
        "    return requests.get('https://api.example.com/x', timeout=5).status_code\n"
    )
    assert run["error"]["type"] == "exception", run
    message = run["error"]["message"]
    assert "this action has no network" in message, message
    assert '"egress": ["api.example.com"]' in message


def test_a_refused_host_names_the_proxys_reason_in_the_error(
    egress_app: Flask, auth_headers: dict[str, str], customer_api: list[int]
) -> None:
    port, other = customer_api
    code = (
        "import requests\n"
        "def execute_action(context):\n"
        "    r = requests.get(f\"https://api.customer.test:{context['args']['other']}/\", "
        "timeout=5)\n"
        "    return r.status_code\n"
    )
    run = _run(
        egress_app.test_client(),
        auth_headers,
        code,
        [f"api.customer.test:{port}"],
        {"other": other},
    )
    assert run["error"]["type"] == "exception", run
    message = run["error"]["message"]
    assert f"the egress proxy refused api.customer.test:{other}" in message, message
    assert "not on the egress allowlist" in message
