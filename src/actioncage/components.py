"""components.py: build(settings), the one composition root: every component is made here,
once, for the app, `actioncage run` and `actioncage audit` alike; nothing builds its own
collaborators."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from actioncage.hostcalls.registry import HostCalls
from actioncage.metrics import Metrics
from actioncage.models import Policy, RunResult
from actioncage.runs.admission import Gate
from actioncage.runs.background import BackgroundRuns
from actioncage.runs.callbacks import CallbackSender
from actioncage.runs.executor import Executor
from actioncage.runs.idempotency import Idempotency
from actioncage.runs.jobs import Jobs
from actioncage.runs.outbox import Outbox
from actioncage.runs.service import RunService
from actioncage.runs.slots import RunSlots
from actioncage.runs.tenant_limits import TenantLimiter
from actioncage.sandbox.docker.runner import DockerRunner
from actioncage.sandbox.limits import container_options, effective_limits
from actioncage.sandbox.pool import WarmPool
from actioncage.settings import Settings
from actioncage.store import Store, repo
from actioncage.web.auth import KeyCache

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Components:
    """Everything one actioncage process runs with."""

    settings: Settings
    store: Store
    runner: DockerRunner
    host_calls: HostCalls
    executor: Executor
    service: RunService
    keys: KeyCache
    slots: RunSlots
    metrics: Metrics
    jobs: Jobs
    outbox: Outbox
    # This process's id: it owns the leases of its background runs and callbacks.
    instance_id: str
    pool: WarmPool | None = None

    def close(self) -> None:
        """Take no new background runs and finish those in flight (or hand them to another
        process's reaper), send or hand back due callbacks, stop the warm pool, finish
        removals, then release the database pool and the engine connection."""
        self.service.close()
        self.outbox.close(final_pass_s=self.settings.callback_timeout_ms / 1000)
        if self.pool is not None:
            self.pool.close()
        self.runner.close()
        self.store.dispose()


def _callback_body(run: RunResult) -> bytes:
    from actioncage.web.wire import run_out  # a callback carries the API's Run

    return json.dumps(run_out(run), separators=(",", ":")).encode()


def build(settings: Settings, loops: bool = True) -> Components:
    """Make every component for ``settings``: the store (tables made or upgraded), the
    sandbox runner and its warm pool, the executor and the run service. ``loops`` starts
    the background jobs' lease renewal and reaper and the callback outbox's delivery (off
    for a one-shot process on a private in-memory store).

    Raises ConfigError for a database that cannot be opened.
    """
    store = Store(settings.database_url)
    store.create_all()
    if settings.api_key:
        with store.session() as s:
            repo.create_key(s, "default", settings.api_key)
    runner = DockerRunner(settings)
    host_calls = HostCalls(settings)
    slots = RunSlots(settings)
    metrics = Metrics(runner, slots)
    pool = None
    if settings.pool_size > 0:
        pool = runner.pool = WarmPool(settings, runner)
        pool.start(container_options(effective_limits(Policy(), settings), settings))
    executor = Executor(settings, store, runner, host_calls, slots=slots, metrics=metrics)
    instance_id = repo.new_id("inst")
    callbacks = CallbackSender(settings)
    outbox = Outbox(settings, store, callbacks, instance_id)
    jobs = Jobs(
        settings,
        store,
        instance_id,
        BackgroundRuns(settings.background_workers, settings.background_max_pending),
        outbox,
        _callback_body,
    )
    service = RunService(
        store,
        executor,
        Gate(store, TenantLimiter(settings)),
        Idempotency(store, settings.idempotency_ttl_s, settings.max_timeout_ms / 1000 + 30),
        jobs,
        callbacks,
    )
    if loops:
        jobs.start()
        outbox.start()
    return Components(
        settings=settings,
        store=store,
        runner=runner,
        host_calls=host_calls,
        executor=executor,
        service=service,
        keys=KeyCache(settings.key_cache_s),
        slots=slots,
        metrics=metrics,
        jobs=jobs,
        outbox=outbox,
        instance_id=instance_id,
        pool=pool,
    )
