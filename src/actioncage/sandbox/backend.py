"""sandbox/: sandbox/backend.py: the sandbox backend protocol: start a sandbox, hand back its
channel."""

from __future__ import annotations

import enum
import queue
import time
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Protocol

from actioncage.models import EffectiveLimits, Isolation

# What a sandbox's process prints to stderr after its last log byte (docs/protocol.md).
LOGS_END = b"\x00actioncage:logs-end\x00"


def new_owner_id() -> str:
    """A fresh instance id (``ins_<hex>``): what every sandbox a process starts is labelled with."""
    return f"ins_{uuid.uuid4().hex[:16]}"


class Stream(enum.IntEnum):
    """Where a chunk read from a sandbox came from; END: its streams have closed."""

    END = 0
    STDOUT = 1
    STDERR = 2


# One chunk of a sandbox's output: (Stream.STDOUT, frame bytes), (Stream.STDERR, log bytes),
# or (Stream.END, b"") once both streams have ended.
Output = tuple[Stream, bytes]
END: Output = (Stream.END, b"")


@dataclass(frozen=True)
class Profile:
    """What a sandbox is started with: the run's limits (each backend turns them into its own
    options, e.g. container options) and, for a warm sandbox, the modules it imports before
    it writes its ready frame. ``preload=None``: a cold sandbox that reads its envelope at once.
    """

    limits: EffectiveLimits
    preload: str | None = None

    @property
    def warm(self) -> bool:
        return self.preload is not None


@dataclass(frozen=True)
class ExitStatus:
    """How a sandbox's process ended: its exit code (None: unknown) and whether the kernel's
    OOM killer ended it."""

    exit_code: int | None
    oom_killed: bool = False


@dataclass(frozen=True)
class TierStatus:
    """Whether an isolation tier can run here: its runtime's version and the flags it runs
    sandboxes with, or why it cannot (``reason``)."""

    isolation: Isolation
    available: bool
    runtime_version: str | None = None
    flags: tuple[str, ...] = ()
    reason: str | None = None


class Sandbox(Protocol):
    """One started sandbox: its process's stdin, stdout and stderr as one byte channel.

    Every method raises SandboxError (EngineUnavailableError when the backend's engine is
    gone) when the channel or the backend fails; never a library's own error.
    """

    @property
    def sandbox_id(self) -> str:
        """The backend's id for it (a container id)."""
        ...

    @property
    def profile(self) -> Profile:
        """What it was started with."""
        ...

    # When it became usable (a monotonic time): its ready frame for a warm one, else its start.
    ready_at: float

    def write(self, data: bytes) -> None:
        """Write to its stdin."""
        ...

    def read(self, timeout_s: float) -> Output | None:
        """The next chunk of its output, waiting at most ``timeout_s``; None when nothing
        came in time, END once its streams have ended."""
        ...

    def alive(self) -> bool:
        """False when its output has already ended (it died while idle); never waits."""
        ...

    def close(self) -> None:
        """Hang up on its channel (idempotent). The process may still be running."""
        ...

    def kill(self) -> None:
        """Kill its process (nothing when it has already ended)."""
        ...

    def wait(self, timeout_s: float) -> ExitStatus:
        """Wait for its process to end; how it ended."""
        ...


class SandboxBackend(Protocol):
    """Starts sandboxes and removes them (Docker with runc or gVisor's runsc, a bubblewrap
    jail; sandbox/tiers.py routes each run to its tier's). Like httpx's transports: a small
    interface, one real implementation per folder, and wrappers (the warm pool, the tier
    router) that are backends too.

    Every sandbox started carries the owner id the backend was built with, so a later process
    can tell a dead owner's leftovers from a live process's sandboxes.
    """

    def start(self, run_id: str, profile: Profile) -> Sandbox:
        """Start one sandbox for ``profile``; the caller must discard() it after use.

        A warm profile's sandbox may not have written its ready frame yet: whoever keeps it
        warm reads up to it (channel.await_ready). Raises SandboxError
        (EngineUnavailableError when no engine answers).
        """
        ...

    def discard(self, sandbox: Sandbox) -> None:
        """Hang up on a sandbox and have it removed (soon, off the caller's path). Never raises:
        a failed removal is logged, and a later sweep finds it."""
        ...

    def ping(self) -> bool:
        """True when the engine answers."""
        ...

    def tier(self, isolation: Isolation) -> TierStatus:
        """Whether this backend can run sandboxes of ``isolation`` here, and with what (a
        backend that does not run that tier says so). Never raises."""
        ...

    def image_digest(self) -> str:
        """The id of what sandboxes run (the image). Raises SandboxError when it is missing."""
        ...

    def sweep(self, dead_owners: Collection[str], unowned_older_than_s: float) -> int:
        """Remove the sandboxes that owners in ``dead_owners`` left, and those with no owner
        (made before owners existed) older than ``unowned_older_than_s``. Never touches an
        owner not named. Returns how many it removed. Raises SandboxError."""
        ...

    @property
    def live_count(self) -> int:
        """Sandboxes this process started and has not removed yet."""
        ...

    @property
    def pending_removals(self) -> int:
        """Discarded sandboxes whose removal has not finished."""
        ...

    def drain(self, timeout_s: float = 30.0) -> bool:
        """Wait until every discarded sandbox is removed; False when ``timeout_s`` passed."""
        ...

    def close(self) -> None:
        """Finish pending removals and release the engine (a later call reopens it)."""
        ...


def wait_drained(work: queue.Queue[Any], timeout_s: float) -> bool:
    """Wait until every item put on ``work`` is done (``task_done``), at most ``timeout_s``;
    False when the time ran out first. Backends drain their removal queues with it."""
    deadline = time.monotonic() + timeout_s
    with work.all_tasks_done:
        while work.unfinished_tasks:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            work.all_tasks_done.wait(remaining)
    return True
