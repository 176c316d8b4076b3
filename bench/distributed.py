"""The distributed path beside in-process: warm trivial runs, 1 caller, paced, through
API -> broker -> worker -> back on RabbitMQ and on Redis, against `serve` running them
in-process, in interleaved rounds (medians over rounds, so slow drift of a shared machine
hits every system alike). Also the per-run costs the capacity model in docs/scaling.md is
built from: CPU seconds per run of the API process and of the worker process, broker
messages and bytes per run.

Run alone: PYTHONPATH=src .venv/bin/python bench/distributed.py [--runs N] [--rounds R]
(`make bench` runs it too, and puts its numbers in bench/results/latest.*).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))  # tests.rabbitmq_server starts the broker as the tests do
from run import IMAGE, KEY, LABEL, RUN_LABEL, Cell, JsonPoster, drive, free_port  # noqa: E402

H = {"Authorization": f"Bearer {KEY}"}
TRIVIAL = "def execute_action(context):\n    return {'ok': True}\n"
RATE = 2.0  # runs per second: light enough that every run finds a warm sandbox
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


class Deployment:
    """One `serve` and, with a broker, one `worker` (4 slots), each its own database."""

    def __init__(
        self, tmp: Path, name: str, broker_url: str | None, pool_size: int, src: Path = ROOT / "src"
    ) -> None:
        """``src``: the code both processes run (another checkout's, to compare)."""
        self.name = name
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("ACTIONCAGE_")}
        env.update(
            PYTHONPATH=str(src),
            ACTIONCAGE_DATABASE_URL=f"sqlite:///{tmp / f'{name}-{uuid.uuid4().hex[:6]}.db'}",
            ACTIONCAGE_PORT=str(self.port),
            ACTIONCAGE_API_KEY=KEY,
            ACTIONCAGE_SANDBOX_IMAGE=IMAGE,
            ACTIONCAGE_POOL_SIZE=str(pool_size),
            ACTIONCAGE_CONTAINER_LABELS=f"{LABEL}={RUN_LABEL}",
        )
        if broker_url:
            env["ACTIONCAGE_BROKER_URL"] = broker_url
        python = str(ROOT / ".venv" / "bin" / "python")
        if not Path(python).exists():
            python = sys.executable
        cli = [python, "-m", "actioncage.cli"]
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        if broker_url:
            worker_env = {k: v for k, v in env.items() if k != "ACTIONCAGE_DATABASE_URL"}
            self.procs["worker"] = subprocess.Popen(
                [*cli, "worker", "--name", f"bench-{name}", "--slots", "4"],
                env=worker_env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        self.procs["api"] = subprocess.Popen(
            [*cli, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.base = f"http://127.0.0.1:{self.port}"
        self.pool_size = pool_size
        self.broker = broker_url is not None
        _until(self._healthy, 90, f"{name} did not come up")
        r = requests.post(
            f"{self.base}/v1/actions", headers=H, json={"name": "trivial", "code": TRIVIAL}
        )
        assert r.status_code == 201, r.text

    def _healthy(self) -> bool:
        try:
            return requests.get(self.base + "/health", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def warm_ready(self) -> bool:
        """Every warm sandbox is back (the worker's heartbeat, or this process's metric)."""
        if self.broker:
            workers = requests.get(self.base + "/health", timeout=5).json().get("workers", [])
            return bool(workers) and workers[0]["warm"].get("default", 0) >= self.pool_size
        text = requests.get(self.base + "/metrics", timeout=5).text
        ready = sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("actioncage_pool_ready")
        )
        return ready >= self.pool_size

    def cpu_s(self) -> dict[str, float]:
        return {role: _cpu_s(proc.pid) for role, proc in self.procs.items()}

    def cell(self, n: int) -> tuple[Cell, dict[str, float]]:
        _until(self.warm_ready, 60, f"{self.name}: the warm pool did not refill")
        post = JsonPoster(self.port, "/v1/actions/trivial/execute", {"args": {}}, H)

        def once() -> bool:
            status, out = post()
            return status == 200 and out["status"] == "ok"

        before = self.cpu_s()
        cell = drive(once, n, 1, RATE)
        after = self.cpu_s()
        cell.system, cell.scenario = self.name, "trivial"
        return cell, {role: (after[role] - before[role]) / n for role in after}

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                proc.kill()


def _until(condition: Callable[[], bool], timeout: float, problem: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(problem)
        time.sleep(0.1)


def _redis(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is missing: run `make packages`")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp), "--save", "",
         "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    return proc, f"redis://127.0.0.1:{port}/0"


def message_sizes() -> dict[str, int]:
    """Bytes of the JSON a trivial run puts on the broker (its task, claim, answer and
    outcome bodies; the broker's own framing adds a few hundred bytes to each)."""
    from actioncage.dispatch import messages
    from actioncage.models import Policy, RawOutcome
    from actioncage.runs.sandboxes import SandboxRun
    from actioncage.runs.tickets import Ticket, Tickets
    from actioncage.sandbox.envelope import build_envelope
    from actioncage.sandbox.limits import effective_limits
    from actioncage.settings import Settings

    limits = effective_limits(Policy(), Settings())
    line = build_envelope(TRIVIAL, {}, None, limits)
    now = datetime.now(UTC)
    ticket = Tickets("0" * 64).issue(
        Ticket("run_" + "0" * 32, "default", "act_" + "0" * 32, "key_" + "0" * 32, None,
               "native", {}, now, "ins_" + "0" * 32, now)
    )  # fmt: skip
    task = messages.task_body(
        messages.RunTask("run_" + "0" * 32, line, limits, "x" * 40, 0.0, ticket=ticket)
    )
    raw = RawOutcome({"type": "result", "status": "ok", "output": {"ok": True}, "effects": []},
                     b"", None, False, False, False, None, 5)  # fmt: skip
    grant = Tickets("0" * 64).grant("run_" + "0" * 32, "w1")
    outcome = messages.outcome_body(
        "run_" + "0" * 32, "w1", grant, SandboxRun(raw, None, (), "sha256:" + "0" * 64, "w1")
    )
    claim = {"type": "claim", "runId": "run_" + "0" * 32, "worker": "w1", "corr": "0" * 32,
             "replyTo": "x" * 40}  # fmt: skip
    answer = {"type": "claimed", "ok": True, "grant": grant, "corr": "0" * 32}
    size = lambda body: len(json.dumps(body, separators=(",", ":")))  # noqa: E731
    return {
        "envelope": len(line),
        "task": size(task),
        "claim": size(claim),
        "claim_answer": size(answer),
        "outcome": size(outcome),
    }


def measure(
    tmp: Path,
    n: int,
    rounds: int,
    log: Callable[[str], None],
    pool_size: int = 2,
    before: Path | None = None,
) -> dict[str, Any]:
    """Interleaved rounds of the three systems (and, with ``before``, the distributed ones
    running that checkout's code, on their own brokers); returns per-round and median
    numbers."""
    from tests.rabbitmq_server import RabbitServer

    rabbit = RabbitServer(tmp / "rabbitmq")
    rabbit.start()
    redis_proc, redis_url = _redis(tmp)
    rabbit_before = None
    deployments: list[Deployment] = []
    try:
        deployments = [
            Deployment(tmp, "in-process", None, pool_size),
            Deployment(tmp, "workers on RabbitMQ", rabbit.url, pool_size),
            Deployment(tmp, "workers on Redis", redis_url, pool_size),
        ]
        if before is not None:
            rabbit_before = RabbitServer(tmp / "rabbitmq-before")
            rabbit_before.start()
            src = before / "src"
            deployments += [
                Deployment(tmp, "before: RabbitMQ", rabbit_before.url, pool_size, src),
                Deployment(tmp, "before: Redis", redis_url[:-2] + "/1", pool_size, src),
            ]
        per_round: list[dict[str, Any]] = []
        for index in range(rounds):
            row: dict[str, Any] = {}
            for d in deployments:
                cell, cpu = d.cell(n)
                s = cell.summary()
                row[d.name] = {
                    "p50_ms": s["p50_ms"],
                    "p99_ms": s["p99_ms"],
                    "errors": s["errors"],
                    "cpu_ms_per_run": {k: round(v * 1000, 2) for k, v in cpu.items()},
                }
                log(f"distributed, round {index + 1}: {d.name}: {row[d.name]}")
            per_round.append(row)
    finally:
        for d in deployments:
            d.stop()
        redis_proc.terminate()
        redis_proc.wait(timeout=30)
        rabbit.stop()
        rabbit.kill_epmd()
        if rabbit_before is not None:
            rabbit_before.stop()
            rabbit_before.kill_epmd()
    medians: dict[str, dict[str, float]] = {}
    for d in deployments:
        medians[d.name] = {
            "p50_ms": round(statistics.median(r[d.name]["p50_ms"] for r in per_round), 1),
            "p99_ms": round(statistics.median(r[d.name]["p99_ms"] for r in per_round), 1),
        }
        for role in ("api", "worker"):
            values = [r[d.name]["cpu_ms_per_run"].get(role) for r in per_round]
            if all(v is not None for v in values):
                medians[d.name][f"{role}_cpu_ms_per_run"] = round(statistics.median(values), 2)
    base = medians["in-process"]["p50_ms"]
    added = {
        name: round(m["p50_ms"] - base, 1) for name, m in medians.items() if name != "in-process"
    }
    return {
        "rate_per_s": RATE,
        "runs_per_cell": n,
        "rounds": per_round,
        "median": medians,
        "p50_added_ms": added,
        "goal": "at most 5 ms added to in-process p50",
        "broker_messages_per_run": {
            "task (API -> worker)": 1,
            "start claim (worker -> API)": 1,
            "claim answer (API -> worker)": 1,
            "outcome (worker -> API)": 1,
            "outcome acknowledgement (API -> worker)": 1,
            "host call + answer, each": 2,
        },  # fmt: skip
        "bytes_per_run": message_sizes(),
        "database_writes_per_run": "1, the record, as in-process (a run still out after "
        "ACTIONCAGE_DISPATCH_RECORD_AFTER_MS, 250 ms, also gets a running record and job then, "
        "and the job is marked done after its answer: 2 writes more)",
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"Distributed path, warm trivial action, 1 caller paced {result['rate_per_s']:g}/s, "
        f"medians over {len(result['rounds'])} interleaved rounds "
        f"of {result['runs_per_cell']} runs:",
        "",
        "| system | p50 ms | p99 ms | API CPU ms/run | worker CPU ms/run |",
        "|---|---|---|---|---|",
    ]
    for name, m in result["median"].items():
        api, worker = m.get("api_cpu_ms_per_run", "-"), m.get("worker_cpu_ms_per_run", "-")
        lines.append(f"| {name} | {m['p50_ms']} | {m['p99_ms']} | {api} | {worker} |")
    lines += ["", f"p50 added by the workers: {result['p50_added_ms']} (goal: {result['goal']})",
              f"Bytes per run: {result['bytes_per_run']}", ""]  # fmt: skip
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--before", type=Path, default=None, help="also run the distributed path on this checkout"
    )
    args = parser.parse_args()
    tmp = BENCH / ".tmp" / RUN_LABEL
    tmp.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()

    def log(line: str) -> None:
        print(f"[{time.monotonic() - began:6.1f}s] {line}", flush=True)

    result = measure(tmp, args.runs, args.rounds, log, before=args.before)
    print(json.dumps(result, indent=2))
    print(markdown(result))
    (BENCH / "results").mkdir(exist_ok=True)
    (BENCH / "results" / "distributed.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
