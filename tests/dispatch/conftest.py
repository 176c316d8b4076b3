"""A small deployment on loopback for the worker tests: `actioncage serve` processes and
`actioncage worker` processes (as real processes, on a real broker, PostgreSQL and Docker),
and a "refund" server whose calls are the side effect that must never happen twice."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

import actioncage
from tests import fakes
from tests.conftest import SESSION, TEST_DB, TEST_LABEL, wait_for
from tests.served import ACTIONCAGE, free_port, serve_env

KEY = "workers-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
REFUND_HOST = "api.refund.test"
# Every container a cluster's processes make carries this label with the cluster's id, so
# what a SIGKILLed worker left (its warm pool, its run) is removed when the cluster stops.
CLUSTER_LABEL = "io.actioncage.test-cluster"

# The distributed tests start brokers, PostgreSQL, API processes and workers: they run in
# the PostgreSQL pass of the suite only (the deployment they stand for), not twice.
distributed = pytest.mark.skipif(
    TEST_DB != "postgresql",
    reason="distributed worker tests run in the ACTIONCAGE_TEST_DB=postgresql pass only",
)


@dataclass
class Cluster:
    """API processes and workers on one broker and one database."""

    tmp_path: Path
    broker_url: str
    extra_env: dict[str, str] = field(default_factory=dict)
    apis: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    cluster_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    def _env(self, **extra: str) -> dict[str, str]:
        env = serve_env(
            self.tmp_path,
            ACTIONCAGE_BROKER_URL=self.broker_url,
            ACTIONCAGE_CONTAINER_LABELS=f"{TEST_LABEL}={SESSION},{CLUSTER_LABEL}={self.cluster_id}",
            ACTIONCAGE_EGRESS_ALLOWED_CIDRS="127.0.0.1/32",
            ACTIONCAGE_EGRESS_RESOLVE=f"{REFUND_HOST}=127.0.0.1",
            ACTIONCAGE_DEFAULT_EGRESS="*.refund.test",
            **self.extra_env,
        )
        env.update(extra)
        return env

    def _log(self, name: str) -> Any:
        return open(self.tmp_path / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps it

    def start_api(self, **env: str) -> str:
        """Start `actioncage serve`; returns its base URL once /health answers."""
        port = free_port()
        log = self._log(f"api-{port}")
        proc = subprocess.Popen(
            [*ACTIONCAGE, "serve"],
            env=self._env(ACTIONCAGE_PORT=str(port), ACTIONCAGE_API_KEY=KEY, **env),
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        log.close()
        base = f"http://127.0.0.1:{port}"
        self.apis.append((base, proc))

        def answers() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"serve exited: {self.log_of(f'api-{port}')}")
            try:
                requests.get(base + "/health", timeout=2)
                return True
            except requests.RequestException:
                return False

        assert wait_for(answers, timeout=60), f"serve on {port} did not answer"
        return base

    def start_worker(self, name: str, slots: int = 2, **env: str) -> subprocess.Popen[bytes]:
        """Start `actioncage worker` with no database and no provider credentials, from the
        package installed outside any checkout (installed_package): it has no default
        database either."""
        worker_env = self._env(**{"ACTIONCAGE_POOL_SIZE": "1", **env})
        for secret in ("ACTIONCAGE_DATABASE_URL", "ACTIONCAGE_LLM_API_KEY", "ACTIONCAGE_API_KEY"):
            worker_env.pop(secret, None)
        site = installed_package(self.tmp_path)
        worker_env["PYTHONPATH"] = os.pathsep.join(
            [str(site), *filter(None, [worker_env.get("PYTHONPATH")])]
        )
        log = self._log(f"worker-{name}")
        proc = subprocess.Popen(
            [*ACTIONCAGE, "worker", "--name", name, "--slots", str(slots)],
            env=worker_env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        log.close()
        self.workers[name] = proc
        return proc

    def log_of(self, name: str) -> str:
        path = self.tmp_path / f"{name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def live_workers(self, base: str) -> dict[str, dict[str, Any]]:
        try:
            body = requests.get(base + "/health", timeout=5).json()
        except requests.RequestException:
            return {}
        return {w["name"]: w for w in body.get("workers", [])}

    def wait_live(self, *names: str, timeout: float = 60) -> None:
        """Wait until every API process hears every named worker."""
        for base, _ in self.apis:
            ok = wait_for(lambda b=base: set(names) <= set(self.live_workers(b)), timeout)
            assert ok, (
                f"{base} does not list {names}: {[self.log_of(f'worker-{n}') for n in names]}"
            )

    def kill_worker(self, name: str) -> None:
        proc = self.workers[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def stop(self) -> None:
        for proc in [*self.workers.values(), *(p for _, p in self.apis)]:
            if proc.poll() is None:
                proc.terminate()
        for proc in [*self.workers.values(), *(p for _, p in self.apis)]:
            try:
                proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self.remove_containers()

    def remove_containers(self) -> None:
        """Remove what this cluster's processes left (a killed worker cannot)."""
        import docker
        import docker.errors

        client = docker.from_env(timeout=60)
        try:
            for c in client.containers.list(
                ignore_removed=True,
                all=True,
                filters={"label": f"{CLUSTER_LABEL}={self.cluster_id}"},
            ):
                with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                    c.remove(force=True)
        finally:
            client.close()


def installed_package(root: Path) -> Path:
    """A copy of the actioncage package outside any source checkout, as `pip install` puts
    it (made once under ``root``): the directory to put first on PYTHONPATH."""
    site = root / "site-packages"
    if not (site / "actioncage").is_dir():
        shutil.copytree(
            Path(actioncage.__file__).resolve().parent,
            site / "actioncage",
            ignore=shutil.ignore_patterns("__pycache__"),
        )
    return site


@contextlib.contextmanager
def cluster(tmp_path: Path, broker_url: str, **env: str) -> Iterator[Cluster]:
    c = Cluster(tmp_path, broker_url, dict(env))
    try:
        yield c
    finally:
        c.stop()


def make_action(base: str, name: str, code: str, **policy: Any) -> None:
    body: dict[str, Any] = {"name": name, "code": code}
    if policy:
        body["policy"] = policy
    resp = requests.post(f"{base}/v1/actions", json=body, headers=AUTH, timeout=30)
    assert resp.status_code == 201, resp.text


def execute(base: str, name: str, args: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
    resp = requests.post(
        f"{base}/v1/actions/{name}/execute", json={"args": args}, headers=AUTH, timeout=timeout
    )
    body: dict[str, Any] = resp.json()
    body["httpStatus"] = resp.status_code
    return body


def get_run(base: str, run_id: str) -> dict[str, Any]:
    body: dict[str, Any] = requests.get(f"{base}/v1/runs/{run_id}", headers=AUTH, timeout=30).json()
    return body


# A script whose side effect is one POST /refund/<id> to the refund server, through the
# egress proxy next to its sandbox; then it sleeps for ``args.sleep`` seconds.
REFUND = (
    "import os, socket, time\n"
    "def execute_action(context):\n"
    "    args = context['args']\n"
    "    host, proxy_port = os.environ['HTTPS_PROXY'][7:].split(':')\n"
    "    s = socket.create_connection((host, int(proxy_port)), timeout=10)\n"
    f"    target = f\"{REFUND_HOST}:{{args['port']}}\"\n"
    "    s.sendall(f'CONNECT {target} HTTP/1.1\\r\\nHost: {target}\\r\\n\\r\\n'.encode())\n"
    "    head = s.recv(4096)\n"
    "    assert b' 200 ' in head, head\n"
    "    path = '/refund/' + args['id']\n"
    "    s.sendall(f'POST {path} HTTP/1.0\\r\\nHost: x\\r\\nContent-Length: 0\\r\\n\\r\\n'.encode())\n"
    "    data = b''\n"
    "    while chunk := s.recv(65536):\n"
    "        data += chunk\n"
    "    time.sleep(args.get('sleep', 0))\n"
    "    return {'refunded': args['id']}\n"
)


@contextlib.contextmanager
def refund_server() -> Iterator[tuple[int, list[fakes.Request]]]:
    """A loopback "refund" API: yields its port and the requests it saw."""
    with fakes.serve(lambda req: (200, {"ok": True})) as (url, seen):
        yield int(url.rsplit(":", 1)[1]), seen


def refunds_by_id(seen: list[fakes.Request]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for req in seen:
        if req.path.startswith("/refund/"):
            key = req.path.removeprefix("/refund/")
            counts[key] = counts.get(key, 0) + 1
    return counts


def elapsed(since: float) -> float:
    return time.monotonic() - since
