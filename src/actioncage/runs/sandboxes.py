"""runs/: the sandbox part of a run, the seam between the executor and where sandboxes run:
on this host (the egress proxy and the runner, below) or on an executor worker
(dispatch/). Either way an envelope goes in and an untrusted RawOutcome comes out; the
executor keeps validation, classification, effects and the record."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from actioncage.egress.guard import guard_from_settings, parse_patterns
from actioncage.egress.proxy import EgressProxy
from actioncage.errors import SandboxError
from actioncage.models import EffectiveLimits, RawOutcome
from actioncage.sandbox.channel import HostCallHandler
from actioncage.sandbox.foreground import Foreground
from actioncage.sandbox.runner import SandboxRunner
from actioncage.settings import Settings

log = logging.getLogger(__name__)

# Set (runs/jobs.py Jobs.handed_over) while a run is handed to an executor worker: its
# signed handover ticket (runs/tickets.py), which the task carries, so that another control
# plane can record the run's outcome if the dispatching process dies meanwhile.
handover_ticket: ContextVar[str | None] = ContextVar("actioncage_handover_ticket", default=None)


@dataclass(frozen=True)
class SandboxRun:
    """What the sandbox part of one run produced: the raw outcome (None when no run could
    be produced, ``error`` then says why), the egress proxy's log, the image the sandbox ran
    and the executor worker that ran it (None: this process). ``settled``, when set, is to
    be called once the run is recorded (or failed to be) and its response written: an
    executor worker's outcome is acknowledged then, so the worker's engine work (the
    sandbox's removal, the warm pool's refill) waits for both instead of competing with them
    for the CPU."""

    raw: RawOutcome | None
    error: str | None = None
    egress: tuple[dict[str, Any], ...] = ()
    image_digest: str | None = None
    executor: str | None = None
    settled: Callable[[], None] | None = field(default=None, compare=False, repr=False)


class Sandboxes(Protocol):
    """Runs the sandbox part of runs."""

    @property
    def foreground(self) -> Foreground:
        """Runs in flight in this process (background engine work yields to them)."""
        ...

    def run(
        self,
        run_id: str,
        envelope_line: bytes,
        limits: EffectiveLimits,
        on_host_call: HostCallHandler,
    ) -> SandboxRun:
        """Run one envelope in a new sandbox under ``limits`` (its ``egress`` patterns get a
        proxy next to the sandbox), answering host calls with ``on_host_call``. Never raises
        for a failed run: SandboxRun.error says why none could be produced."""
        ...


class LocalSandboxes:
    """Sandboxes on this host: the runner's backend (the warm pool or the engine), with a
    per-run egress proxy when the limits allow egress. Used in-process and by workers."""

    def __init__(self, settings: Settings, runner: SandboxRunner, name: str | None = None) -> None:
        self._settings = settings
        self._runner = runner
        self._name = name

    @property
    def foreground(self) -> Foreground:
        return self._runner.foreground

    def run(
        self,
        run_id: str,
        envelope_line: bytes,
        limits: EffectiveLimits,
        on_host_call: HostCallHandler,
        admit: Callable[[], bool] | None = None,
    ) -> SandboxRun:
        """As Sandboxes.run; ``admit``: the egress proxy holds each connection the run opens
        until it says whether the run may reach out (EgressProxy)."""
        digest: str | None = None
        raw: RawOutcome | None = None
        error: str | None = None
        egress: tuple[dict[str, Any], ...] = ()
        proxy = self._egress_proxy(limits, admit)
        try:
            if proxy is not None:
                limits = replace(limits, egress_dir=proxy.start())
            digest = self._runner.image_digest()
            raw = self._runner.run(run_id, envelope_line, limits, on_host_call)
        except SandboxError as exc:
            log.warning("run %s: %s", run_id, exc)
            error = str(exc)
        except OSError as exc:  # the egress proxy could not listen
            log.warning("run %s: egress proxy: %s", run_id, exc)
            error = f"egress proxy failed: {exc}"
        finally:
            if proxy is not None:
                egress = proxy.close()
        return SandboxRun(raw, error, egress, digest, self._name)

    def _egress_proxy(
        self, limits: EffectiveLimits, admit: Callable[[], bool] | None
    ) -> EgressProxy | None:
        if not limits.egress:
            return None
        return EgressProxy(
            parse_patterns(limits.egress),
            guard_from_settings(self._settings),
            self._settings.egress_dir,
            refuse_ports_on_self=[self._settings.port],
            admit=admit,
        )
