"""Micro-benchmark: what the shared state adds per call, in-process vs on Redis.

Starts a throwaway redis-server on a free loopback port (or uses --redis-url) and times, per
call: admission (an org with runs-per-minute and concurrency limits, plus a key), the key
cache's lookup (its revocation check amortised), and an Idempotency-Key claim + answer.
Run: PYTHONPATH=src python bench/shared_state.py [--calls N]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis

from actioncage.models import ApiKey, OrgPolicy
from actioncage.runs.idempotency import Idempotency
from actioncage.runs.tenant_limits import TenantLimiter
from actioncage.settings import Settings
from actioncage.shared.memory import in_process
from actioncage.shared.redis_state import on_redis
from actioncage.shared.state import SharedState
from actioncage.store import Store
from actioncage.web.auth import KeyCache

BIG = 10**9  # limits that are checked but never reached


def _time(calls: int, fn: Callable[[int], None]) -> tuple[float, float]:
    samples = []
    for i in range(calls):
        start = time.perf_counter()
        fn(i)
        samples.append((time.perf_counter() - start) * 1e6)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


def _measure(
    name: str, state: SharedState, store: Store, calls: int
) -> dict[str, tuple[float, float]]:
    settings = Settings(key_runs_per_minute=BIG, key_concurrent_runs=BIG)
    limiter = TenantLimiter(settings, state.rates, state.concurrency)
    org = OrgPolicy(runs_per_minute=BIG, concurrent_runs=BIG)
    org_only = OrgPolicy(runs_per_minute=BIG)
    cache = KeyCache(5.0, state.revocations)
    cache.remember("secret", ApiKey("key_1", "acme"), cache.generation)
    idem = Idempotency(store, state.claims, 3600, 30)

    def admit_all(i: int) -> None:
        with limiter.admit(f"org{i % 50}", "key_1", org):
            pass

    def admit_org_rate(i: int) -> None:
        with limiter.admit(f"org{i % 50}", None, org_only):
            pass

    def key_lookup(i: int) -> None:
        cache.find("secret")

    def claim(i: int) -> None:
        idem.once("acme", f"{name}-{i}", "scope", {"i": i}, lambda: ({"ok": 1}, 200))

    for fn in (admit_all, key_lookup):  # warm up connections and scripts
        _time(50, fn)
    return {
        "admit: org rate + org concurrency + key rate + key concurrency": _time(calls, admit_all),
        "admit: org rate only": _time(calls, admit_org_rate),
        "key cache lookup": _time(calls * 10, key_lookup),
        "Idempotency-Key claim + answer (incl. SQLite)": _time(calls // 4, claim),
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--redis-url")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc = None
        url = args.redis_url
        if url is None:
            binary = shutil.which("redis-server")
            assert binary, "redis-server is not installed (make packages)"
            port = _free_port()
            proc = subprocess.Popen(
                [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", tmp],
                stdout=subprocess.DEVNULL,
            )
            url = f"redis://127.0.0.1:{port}/0"
            client = redis.Redis.from_url(url)
            deadline = time.monotonic() + 10
            while True:
                try:
                    client.ping()
                    break
                except redis.exceptions.ConnectionError:
                    assert time.monotonic() < deadline, "redis-server did not answer"
                    time.sleep(0.05)
            client.close()
        try:
            store = Store(f"sqlite:///{Path(tmp) / 'bench.db'}")
            store.create_all()
            results = {}
            for name, state in (("in-process", in_process(store)), ("redis", on_redis(url))):
                try:
                    results[name] = _measure(name, state, store, args.calls)
                finally:
                    state.close()
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(10)
    head = "per call, microseconds (p50 / p99)"
    print(f"{head:64} {'in-process':>16} {'redis':>16} {'added p50':>10}")
    for what in results["in-process"]:
        (m50, m99), (r50, r99) = results["in-process"][what], results["redis"][what]
        print(f"{what:64} {m50:7.0f} / {m99:6.0f} {r50:7.0f} / {r99:6.0f} {r50 - m50:10.0f}")


if __name__ == "__main__":
    main()
