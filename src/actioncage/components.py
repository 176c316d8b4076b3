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
from actioncage.runs.service import RunService
from actioncage.runs.slots import RunSlots
from actioncage.runs.tenant_limits import TenantLimiter
from actioncage.sandbox.docker.runner import DockerRunner
from actioncage.sandbox.limits import container_options, effective_limits
from actioncage.sandbox.pool import WarmPool
from actioncage.settings import Settings
from actioncage.shared.memory import in_process
from actioncage.shared.state import DomainCache, SharedState
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
    shared: SharedState
    pool: WarmPool | None = None

    @property
    def domains(self) -> DomainCache:
        """The Rasa domain cache (shared by every process with Redis)."""
        return self.shared.domains

    def close(self) -> None:
        """Finish background runs and callbacks, stop the warm pool, finish removals, then
        release the database pool and the engine connection."""
        self.service.close()
        if self.pool is not None:
            self.pool.close()
        self.runner.close()
        self.shared.close()
        self.store.dispose()


def _callback_body(run: RunResult) -> bytes:
    from actioncage.web.wire import run_out  # a callback carries the API's Run

    return json.dumps(run_out(run), separators=(",", ":")).encode()


def build_shared(settings: Settings, store: Store) -> SharedState:
    """The state shared by every process: on the Redis at ``settings.redis_url``, else in
    this process (revocations read from ``store``). The only place that chooses.

    Raises ConfigError when ACTIONCAGE_REDIS_URL is set and no Redis answers there.
    """
    if settings.redis_url:
        from actioncage.shared.redis_state import on_redis

        return on_redis(settings.redis_url)
    return in_process(store)


def build(settings: Settings) -> Components:
    """Make every component for ``settings``: the store (tables made or upgraded), the
    sandbox runner and its warm pool, the executor and the run service.

    Raises ConfigError for a database that cannot be opened.
    """
    store = Store(settings.database_url)
    store.create_all()
    if settings.api_key:
        with store.session() as s:
            repo.create_key(s, "default", settings.api_key)
    shared = build_shared(settings, store)
    runner = DockerRunner(settings)
    if settings.redis_url:
        runner.shared_live = shared.containers  # the live-container cap over every process
    host_calls = HostCalls(settings)
    slots = RunSlots(settings)
    metrics = Metrics(runner, slots)
    pool = None
    if settings.pool_size > 0:
        pool = runner.pool = WarmPool(settings, runner)
        pool.start(container_options(effective_limits(Policy(), settings), settings))
    executor = Executor(settings, store, runner, host_calls, slots=slots, metrics=metrics)
    service = RunService(
        store,
        executor,
        Gate(store, TenantLimiter(settings, shared.rates, shared.concurrency)),
        Idempotency(
            store, shared.claims, settings.idempotency_ttl_s, settings.max_timeout_ms / 1000 + 30
        ),
        BackgroundRuns(settings.background_workers, settings.background_max_pending),
        CallbackSender(settings),
        _callback_body,
    )
    return Components(
        settings=settings,
        store=store,
        runner=runner,
        host_calls=host_calls,
        executor=executor,
        service=service,
        keys=KeyCache(settings.key_cache_s, shared.revocations),
        slots=slots,
        metrics=metrics,
        shared=shared,
        pool=pool,
    )
