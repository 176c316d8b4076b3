"""create_app(settings=None): wires components and registers blueprints and error handlers."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from flask import Flask

from actioncage.hostcalls.registry import HostCalls
from actioncage.metrics import Metrics
from actioncage.models import Policy
from actioncage.runs.background import BackgroundRuns
from actioncage.runs.callbacks import CallbackSender
from actioncage.runs.executor import Executor
from actioncage.runs.slots import RunSlots
from actioncage.sandbox.docker.runner import DockerRunner
from actioncage.sandbox.limits import container_options, effective_limits
from actioncage.sandbox.pool import WarmPool
from actioncage.settings import Settings
from actioncage.store import Store, repo
from actioncage.web import dashboard, errors, meta, native
from actioncage.web.auth import KeyCache
from actioncage.web.frontdoors import botpress, rasa
from actioncage.web.in_flight import hold_while_responding

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Components:
    settings: Settings
    store: Store
    runner: DockerRunner
    host_calls: HostCalls
    executor: Executor
    background: BackgroundRuns
    callbacks: CallbackSender
    keys: KeyCache
    slots: RunSlots | None = None
    metrics: Metrics | None = None
    pool: WarmPool | None = None

    def close(self) -> None:
        """Finish background runs and callbacks, stop the warm pool, finish removals, then
        release the database pool and the engine connection."""
        self.callbacks.close()
        self.background.close()
        if self.pool is not None:
            self.pool.close()
        self.runner.close()
        self.store.dispose()


def create_app(settings: Settings | None = None) -> Flask:
    """The WSGI app. Reads the environment only when ``settings`` is None."""
    settings = settings or Settings.from_env()
    store = Store(settings.database_url)
    store.upgrade()
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
    components = Components(
        settings=settings,
        store=store,
        runner=runner,
        host_calls=host_calls,
        background=BackgroundRuns(settings.background_workers, settings.background_max_pending),
        callbacks=CallbackSender(settings),
        keys=KeyCache(settings.key_cache_s),
        executor=Executor(settings, store, runner, host_calls, slots=slots, metrics=metrics),
        slots=slots,
        metrics=metrics,
        pool=pool,
    )
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["actioncage"] = components
    errors.register(app)
    app.register_blueprint(meta.bp)
    app.register_blueprint(native.bp)
    dashboard.register(app, settings)
    app.register_blueprint(rasa.bp)
    app.register_blueprint(botpress.bp)
    app.wsgi_app = hold_while_responding(  # type: ignore[method-assign,assignment]
        app.wsgi_app, runner.foreground
    )
    return app
