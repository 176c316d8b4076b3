"""metrics.py: Prometheus metrics: runs by status and error type, latency, pool, queue, live
containers."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from actioncage.models import RunResult
from actioncage.runs.slots import RunSlots
from actioncage.sandbox.pool import WarmPool
from actioncage.sandbox.runner import SandboxRunner

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    """One registry per app, so several apps in one process (tests) never share counts."""

    def __init__(
        self, runner: SandboxRunner, slots: RunSlots, pool: WarmPool | None = None
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._runs = Counter(
            "actioncage_runs",
            "Runs recorded, by status and error type",
            ["status", "error_type"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "actioncage_run_duration_seconds",
            "Run latency inside the control plane (arguments checked to run recorded)",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_LiveCollector(runner, slots, pool))

    def observe_run(self, result: RunResult) -> None:
        error_type = result.error.type.value if result.error is not None else ""
        self._runs.labels(status=result.status.value, error_type=error_type).inc()
        self._latency.observe(max(result.duration_ms, 0) / 1000)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


class _LiveCollector(Collector):
    """Reads the pool, the slots and the runner at scrape time."""

    def __init__(self, runner: SandboxRunner, slots: RunSlots, pool: WarmPool | None) -> None:
        self._runner = runner
        self._slots = slots
        self._pool = pool

    def collect(self) -> Iterator[Metric]:
        ready = GaugeMetricFamily(
            "actioncage_pool_ready", "Warm sandboxes ready, per profile", labels=["profile"]
        )
        starting = GaugeMetricFamily(
            "actioncage_pool_starting", "Warm sandboxes starting, per profile", labels=["profile"]
        )
        lean = GaugeMetricFamily(
            "actioncage_pool_lean_ready",
            "Warm sandboxes ready without the preload (started under pressure), per profile",
            labels=["profile"],
        )
        pool = self._pool
        for p in pool.stats() if pool is not None else []:
            ready.add_metric([p.name], p.ready)
            starting.add_metric([p.name], p.starting)
            lean.add_metric([p.name], p.lean)
        yield ready
        yield starting
        yield lean
        yield CounterMetricFamily(
            "actioncage_pool_lean_starts",
            "Warm sandboxes started without the preload because the pool was under pressure",
            pool.lean_starts if pool is not None else 0,
        )
        yield CounterMetricFamily(
            "actioncage_cold_starts", "Runs that started a container cold", self._runner.cold_starts
        )
        yield CounterMetricFamily(
            "actioncage_warm_starts", "Runs that took a warm sandbox", self._runner.warm_starts
        )
        yield GaugeMetricFamily(
            "actioncage_run_queue_depth", "Runs waiting for a slot", self._slots.queued
        )
        yield GaugeMetricFamily(
            "actioncage_runs_in_flight", "Runs holding a slot", self._slots.running
        )
        yield CounterMetricFamily(
            "actioncage_runs_refused", "Runs refused with 429 (no slot)", self._slots.refused
        )
        yield GaugeMetricFamily(
            "actioncage_live_containers",
            "Containers created by this process and not yet removed",
            self._runner.live_containers,
        )
        foreground = self._runner.foreground
        yield CounterMetricFamily(
            "actioncage_engine_work_deferred",
            "Removals and pool refills that waited for the runs in flight to finish",
            foreground.deferred,
        )
        yield CounterMetricFamily(
            "actioncage_engine_work_overdue",
            "Deferred removals and refills that went ahead at the bound, runs still in flight",
            foreground.overdue,
        )
        yield GaugeMetricFamily(
            "actioncage_removals_pending",
            "Containers queued for background removal",
            self._runner.backend.pending_removals,
        )
