"""A container after its clean result: the runtime ends what the script left running and
waits for the hang-up, which discard() leaves to the removal's quiet moment, so the
container's exit (costly to the engine) is off the run's answer path. Real Docker, runc and
gVisor."""

from __future__ import annotations

from pathlib import Path

import docker
import pytest

from actioncage.components import build_backend
from actioncage.models import Policy
from actioncage.sandbox.backend import Profile, new_owner_id
from actioncage.sandbox.channel import exchange
from actioncage.sandbox.envelope import build_envelope
from actioncage.sandbox.foreground import Foreground
from actioncage.sandbox.limits import effective_limits
from tests.conftest import make_settings, tier_problem, wait_for

# A thread and a child process, both meant to outlive the result by ten minutes.
_LEAVES_THINGS_RUNNING = (
    "import os, sys, threading, time\n"
    "def execute_action(context):\n"
    "    threading.Thread(target=time.sleep, args=(600,), daemon=True).start()\n"
    "    if os.fork() == 0:\n"
    "        time.sleep(600)\n"
    "        os._exit(0)\n"
    "    return 'returned'\n"
)


# Run inside the container: the command line of every other live process (a killed one not
# reaped yet is a zombie: it runs nothing), one per line.
_LIST_PROCESSES = (
    "import os\n"
    "for pid in os.listdir('/proc'):\n"
    "    if not pid.isdigit() or int(pid) == os.getpid():\n"
    "        continue\n"
    "    if open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()[0] != 'Z':\n"
    "        print(open(f'/proc/{pid}/cmdline', 'rb').read().replace(b'\\0', b' ').decode())\n"
)


def _commands(container: docker.models.containers.Container) -> list[str]:
    """The command line of each process in the container but its init, seen from inside
    (``docker top`` does not see into gVisor's sandbox)."""
    code, out = container.exec_run(["/opt/actioncage/python", "-I", "-c", _LIST_PROCESSES])
    assert code == 0, out
    return [c for c in out.decode().splitlines() if not c.startswith("/sbin/docker-init")]


@pytest.mark.docker
@pytest.mark.parametrize("tier", ["container", "gvisor"])
def test_after_a_clean_result_only_cat_waits_for_the_hang_up_which_waits_for_a_quiet_moment(
    tmp_path: Path, docker_client: docker.DockerClient, tier: str
) -> None:
    if (problem := tier_problem(tier)) is not None:
        pytest.skip(problem)
    settings = make_settings(tmp_path, isolation=tier)
    foreground = Foreground(60_000)
    backend = build_backend(settings, new_owner_id(), foreground)
    limits = effective_limits(Policy(), settings)
    try:
        with foreground.run():  # the run is in flight until its answer is out
            sandbox = backend.start(f"linger-{tier}", Profile(limits))
            envelope = build_envelope(_LEAVES_THINGS_RUNNING, {}, None, limits)
            raw = exchange(sandbox, envelope, limits, lambda frame: b"")
            assert raw.result_frame is not None and raw.result_frame["output"] == "returned"
            container = docker_client.containers.get(sandbox.sandbox_id)

            def script_gone() -> bool:
                return [c.strip() for c in _commands(container)] == ["/bin/cat"]

            # The runtime became cat (its thread ended with the exec) and killed the child.
            assert wait_for(script_gone, timeout=10), _commands(container)
            backend.discard(sandbox)
            # Neither hung up on nor removed while a run is in flight.
            assert not wait_for(lambda: backend.pending_removals == 0, timeout=0.5)
            container.reload()
            assert container.status == "running"
        assert backend.drain(30)
        with pytest.raises(docker.errors.NotFound):
            docker_client.containers.get(container.id)
        assert backend.live_count == 0
    finally:
        backend.close()
