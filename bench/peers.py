"""Peer workers, run in bench/.venv: epicbox runs of the same script, and the rasa-sdk actions.

`python peers.py epicbox IMAGE N CALLERS` prints a JSON list of per-run latencies (ms) and
errors. The rasa-sdk action server loads this file as its actions module
(`python -m rasa_sdk --actions peers`).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

SCRIPT = (
    "import json\n"
    "def execute_action(context):\n"
    "    return {'ok': True}\n"
    "print(json.dumps(execute_action({'args': {}})))\n"
)

try:  # the rasa-sdk action server imports this module
    from rasa_sdk import Action

    class Trivial(Action):  # type: ignore[misc]
        """The trivial action, in-process, no isolation."""

        def name(self) -> str:
            return "trivial"

        def run(self, dispatcher: Any, tracker: Any, domain: Any) -> list[Any]:
            dispatcher.utter_message(json_message={"ok": True})
            return []

except ImportError:  # pragma: no cover
    pass


def epicbox_runs(image: str, n: int, callers: int) -> dict[str, Any]:
    import epicbox

    epicbox.configure(
        profiles=[
            epicbox.Profile("python", image, user="10001", read_only=False, network_disabled=True)
        ]
    )
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    todo = [n]

    def caller() -> None:
        while True:
            with lock:
                if todo[0] <= 0:
                    return
                todo[0] -= 1
            t = time.perf_counter()
            try:
                result = epicbox.run(
                    "python",
                    "/opt/actioncage/python -I main.py",
                    files=[{"name": "main.py", "content": SCRIPT.encode()}],
                    limits={"cputime": 5, "realtime": 10, "memory": 256},
                )
                ok = result.get("exit_code") == 0 and b'"ok": true' in result.get("stdout", b"")
            except Exception as exc:  # noqa: BLE001 - a peer's failure is a data point
                ok = False
                result = {"error": repr(exc)}
            elapsed = (time.perf_counter() - t) * 1000
            with lock:
                latencies.append(elapsed)
                if not ok:
                    errors.append(str(result)[:200])

    started = time.perf_counter()
    threads = [threading.Thread(target=caller) for _ in range(callers)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall_s = time.perf_counter() - started
    _remove_epicbox_leftovers()
    return {
        "latencies": latencies,
        "errors": errors,
        "wall_s": wall_s,
    }


def _remove_epicbox_leftovers() -> None:
    """epicbox leaves its file-copy containers behind in the "created" state here; the bench
    must not leak containers, so remove every epicbox container once its runs are timed."""
    import docker

    client = docker.from_env()
    try:
        for container in client.containers.list(all=True, filters={"name": "epicbox-"}):
            container.remove(force=True)
    finally:
        client.close()


if __name__ == "__main__":
    kind, image, n, callers = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    if kind != "epicbox":
        raise SystemExit(f"unknown peer {kind}")
    print(json.dumps(epicbox_runs(image, n, callers)))
