"""components.py: build(settings), the one composition root: every component is made here,
once, for the app, `actioncage run` and `actioncage audit` alike; nothing builds its own
collaborators."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from actioncage.hostcalls.registry import HostCalls
from actioncage.instances import Instance, sweep_quietly
from actioncage.metrics import Metrics
from actioncage.models import Isolation, Policy, RunResult
from actioncage.runs.admission import Gate
from actioncage.runs.background import BackgroundRuns
from actioncage.runs.callbacks import CallbackSender
from actioncage.runs.definitions import Definitions
from actioncage.runs.executor import Executor
from actioncage.runs.idempotency import Idempotency
from actioncage.runs.jobs import Jobs
from actioncage.runs.outbox import Outbox
from actioncage.runs.service import RunService
from actioncage.runs.slots import RunSlots
from actioncage.runs.tenant_limits import TenantLimiter
from actioncage.runs.tickets import SECRET_NAME as TICKETS_SECRET
from actioncage.runs.tickets import Tickets
from actioncage.sandbox.backend import SandboxBackend
from actioncage.sandbox.docker.backend import DockerBackend
from actioncage.sandbox.foreground import Foreground
from actioncage.sandbox.jail.backend import JailBackend
from actioncage.sandbox.limits import effective_limits
from actioncage.sandbox.pool import WarmPool
from actioncage.sandbox.runner import SandboxRunner
from actioncage.sandbox.tiers import TieredBackend
from actioncage.settings import Settings
from actioncage.shared.memory import in_process
from actioncage.shared.state import DomainCache, LiveSet, SharedState
from actioncage.store import Store, repo
from actioncage.store.secrets import shared_secret
from actioncage.vault import Vault
from actioncage.web.auth import KeyCache

if TYPE_CHECKING:  # Celery is imported only where runs are dispatched
    from actioncage.dispatch.dispatcher import Dispatcher
    from actioncage.dispatch.worker import ExecutorWorker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Components:
    """Everything one actioncage process runs with."""

    settings: Settings
    store: Store
    instance: Instance
    runner: SandboxRunner
    host_calls: HostCalls
    executor: Executor
    service: RunService
    keys: KeyCache
    definitions: Definitions
    slots: RunSlots
    metrics: Metrics
    jobs: Jobs
    outbox: Outbox
    shared: SharedState
    vault: Vault
    pool: WarmPool | None = None
    # With ACTIONCAGE_BROKER_URL: hands the sandbox part of runs to executor workers.
    dispatcher: Dispatcher | None = None

    @property
    def domains(self) -> DomainCache:
        """The Rasa domain cache (shared by every process with Redis)."""
        return self.shared.domains

    def close(self) -> None:
        """Take no new background runs and finish those in flight (or hand them to another
        process's reaper), send or hand back due callbacks, stop the warm pool, finish
        removals and release the engine, forget this instance, then release the database."""
        self.service.close()
        if self.dispatcher is not None:
            self.dispatcher.close()
        self.outbox.close(final_pass_s=self.settings.callback_timeout_ms / 1000)
        self.runner.backend.close()  # the pool, when there is one, closes its backend
        self.instance.close()
        self.keys.close()
        self.definitions.close()
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


def build_backend(
    settings: Settings, owner_id: str, foreground: Foreground, shared_live: LiveSet | None = None
) -> TieredBackend:
    """The sandbox backend of every isolation tier: Docker runs ``container`` (runc) and
    ``gvisor`` (runsc), bubblewrap runs ``jail`` on the image Docker exports."""
    docker_backend = DockerBackend(settings, owner_id, foreground, shared_live)
    jail = JailBackend(settings, owner_id, docker_backend, foreground)
    return TieredBackend(
        {
            Isolation.CONTAINER: docker_backend,
            Isolation.GVISOR: docker_backend,
            Isolation.JAIL: jail,
        },
        default=Isolation.CONTAINER,
    )


def build(settings: Settings, role: str = "serve") -> Components:
    """Make every component for ``settings``: the store (tables made or upgraded), this
    process's instance (registered and heartbeating when ``role`` is a long-lived one), the
    sandbox backend wrapped in its warm pool, the executor and the run service.

    ``role``: ``serve`` keeps a warm pool, sweeps what dead instances left every stale
    window, renews its background runs' leases, reaps dead processes' runs and delivers the
    callback outbox; with ``settings.broker_url`` it keeps no pool and sweeps no engine: the
    sandbox part of every run goes to executor workers (build_worker). ``run`` and ``audit``
    are one-off processes with none of these loops (``run`` works on a private in-memory
    store, and always runs in-process).
    Raises ConfigError for a database that cannot be opened.
    """
    store = Store(settings.database_url)
    store.upgrade()
    vault = Vault(store, settings.secrets_key_list)
    try:
        vault.check_readable()  # stored secrets and no key that opens them: do not start
    except BaseException:
        store.dispose()
        raise
    if settings.api_key:
        with store.session() as s:
            repo.create_key(s, "default", settings.api_key)
    long_lived = role == "serve"
    dispatching = long_lived and settings.broker_url is not None
    instance = Instance(settings, store, role=role)
    if long_lived:
        instance.start()
    shared = build_shared(settings, store)
    foreground = Foreground(settings.engine_work_defer_ms)
    # With Redis the live-container cap counts every process's containers.
    shared_live = shared.containers if settings.redis_url else None
    backend: SandboxBackend = build_backend(settings, instance.id, foreground, shared_live)
    pool = None
    if long_lived and not dispatching and settings.pool_size > 0:
        backend = pool = WarmPool(settings, backend, foreground)
        pool.keep_warm(effective_limits(Policy(), settings))
    runner = SandboxRunner(backend, foreground)
    if long_lived and not dispatching:
        instance.every_stale_window(lambda: sweep_quietly(instance, backend))
    dispatcher = None
    tickets = None
    if dispatching:
        from actioncage.dispatch.dispatcher import Dispatcher

        # Shared by every control plane through the database; workers never see it.
        with store.session() as s:
            tickets = Tickets(shared_secret(s, TICKETS_SECRET))
        dispatcher = Dispatcher(settings, instance.id, foreground, tickets)
        dispatcher.start()
    host_calls = HostCalls(settings)
    slots = RunSlots(settings)
    metrics = Metrics(runner, slots, pool)
    executor = Executor(
        settings,
        store,
        runner,
        host_calls,
        slots=slots,
        metrics=metrics,
        vault=vault,
        sandboxes=dispatcher,
    )
    callbacks = CallbackSender(settings)
    outbox = Outbox(settings, store, callbacks, instance.id)
    jobs = Jobs(
        settings,
        store,
        instance.id,
        BackgroundRuns(settings.background_workers, settings.background_max_pending),
        outbox,
        _callback_body,
        tickets=tickets,
    )
    definitions = Definitions(store, settings.definition_cache_s)
    service = RunService(
        store,
        definitions,
        executor,
        Gate(definitions, TenantLimiter(settings, shared.rates, shared.concurrency)),
        Idempotency(
            store, shared.claims, settings.idempotency_ttl_s, settings.max_timeout_ms / 1000 + 30
        ),
        jobs,
        callbacks,
        hand_over=dispatcher is not None,
    )
    if dispatcher is not None:
        dispatcher.adopt = service.adopt_dispatched
    keys = KeyCache(settings.key_cache_s, shared.revocations)
    if long_lived:
        jobs.start()
        outbox.start()
        keys.start()  # revocations are read off the requests' path
        definitions.start()  # so is the definitions epoch
    return Components(
        settings=settings,
        store=store,
        instance=instance,
        runner=runner,
        host_calls=host_calls,
        executor=executor,
        service=service,
        keys=keys,
        definitions=definitions,
        slots=slots,
        metrics=metrics,
        jobs=jobs,
        outbox=outbox,
        shared=shared,
        vault=vault,
        pool=pool,
        dispatcher=dispatcher,
    )


def build_worker(settings: Settings, name: str, slots: int) -> ExecutorWorker:
    """The components of an executor worker (`actioncage worker`): this host's engine, its
    warm pool and the broker; never the database, nor any provider credential. Its
    sandboxes carry a fresh worker owner id (which its heartbeats name, so other workers
    on the engine can tell its leftovers once it is gone).

    Raises ConfigError when ACTIONCAGE_BROKER_URL is unset.
    """
    from actioncage.dispatch.worker import ExecutorWorker, worker_owner_id
    from actioncage.errors import ConfigError

    if settings.broker_url is None:
        raise ConfigError("ACTIONCAGE_BROKER_URL: a worker needs the broker it takes runs from")
    foreground = Foreground(settings.engine_work_defer_ms)
    owner_id = worker_owner_id(settings.broker_url)
    backend: SandboxBackend = DockerBackend(settings, owner_id, foreground, None)
    pool = None
    if settings.pool_size > 0:
        backend = pool = WarmPool(settings, backend, foreground)
        pool.keep_warm(effective_limits(Policy(), settings))
    runner = SandboxRunner(backend, foreground)
    return ExecutorWorker(settings, name, slots, runner, pool, owner_id=owner_id)
