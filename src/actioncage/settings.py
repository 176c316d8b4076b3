"""settings.py: A frozen Settings dataclass plus Settings.from_env(). Stdlib only."""

from __future__ import annotations

import base64
import ipaddress
import os
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from actioncage.errors import ConfigError

_PREFIX = "ACTIONCAGE_"
# models.Isolation's values (settings stays free of the other modules).
ISOLATION_TIERS = ("jail", "container", "gvisor")


@dataclass(frozen=True)
class Settings:
    """Everything the operator can set. Field ``x_y`` is read from ``ACTIONCAGE_X_Y``."""

    # Unset: var/actioncage.db in the source checkout actioncage runs from, whatever the
    # current directory (so `keys create` from elsewhere writes where `serve` reads).
    # Installed without a checkout, it must be set (store.Store says so), except on an
    # executor worker's host, which has no database.
    database_url: str = field(default_factory=lambda: default_database_url())
    host: str = "127.0.0.1"
    port: int = 8080
    api_key: str | None = None
    docker_url: str | None = None
    docker_runtime: str | None = None
    sandbox_image: str = "actioncage-sandbox:latest"
    # The isolation tier of actions that name none: jail, container or gvisor (an org's
    # minimum may raise it). gvisor runs containers with the engine's runtime gvisor_runtime
    # (scripts/ensure-gvisor.sh registers it); jail runs bubblewrap on the image's root
    # filesystem, exported once per image digest under jail_dir.
    isolation: str = "container"
    gvisor_runtime: str = "runsc"
    jail_dir: str = "/var/cache/actioncage/jail"
    # Per-run limits: the default an action gets, and the most it may ask for.
    default_timeout_ms: int = 10_000
    max_timeout_ms: int = 60_000
    default_memory_mb: int = 256
    max_memory_mb: int = 1024
    default_cpus: float = 1.0
    max_cpus: float = 2.0
    pids_limit: int = 64
    tmpfs_mb: int = 16
    max_output_bytes: int = 1024 * 1024
    # An execute response carries at most this many bytes of the run's logs (their end); the
    # run record keeps them all, up to max_output_bytes.
    response_logs_bytes: int = 64 * 1024
    max_host_calls: int = 20
    max_code_bytes: int = 256 * 1024
    max_request_bytes: int = 4 * 1024 * 1024
    # Host calls: an OpenAI-compatible chat-completions API and Google Sheets.
    llm_base_url: str | None = None
    llm_api_key: str | None = None
    llm_model: str = "gpt-4o-mini"
    host_call_timeout_ms: int = 10_000
    sheets_credentials_file: str | None = None
    sheets_base_url: str = "https://sheets.googleapis.com"
    # Outbound calls (API actions, callbacks): CIDRs the operator allows despite the
    # private/metadata ban (comma-separated, e.g. "10.1.0.0/16"); API response bodies past
    # max_api_response_bytes fail the run.
    egress_allowed_cidrs: str = ""
    # The egress ceiling of orgs without their own (comma-separated host patterns, as for
    # `org set-policy --egress`): what their scripts and API actions may reach. Empty: none.
    default_egress: str = ""
    max_api_response_bytes: int = 1024 * 1024
    # Signs the dashboard's session cookie. Unset: a random key made once and kept in the
    # database, so every process of the deployment shares it.
    secret_key: str | None = None
    # Runs that outlast a call's waitMs go on in a bounded pool of background workers.
    background_workers: int = 4
    background_max_pending: int = 64
    # Run callbacks: attempts, first back-off (doubling), per-attempt timeout.
    callback_max_attempts: int = 5
    callback_backoff_ms: int = 500
    callback_timeout_ms: int = 5_000
    # Durable background runs: a process holds a lease on each run it executes for
    # job_lease_s, renewed every job_renew_s; every process reaps expired leases every
    # job_reap_s (a dead process's run ends as sandbox_error within lease + reap interval).
    # A run's deadline is its timeout plus the run queue wait plus job_deadline_margin_s;
    # past it the lease is no longer renewed.
    job_lease_s: float = 15.0
    job_renew_s: float = 3.0
    job_reap_s: float = 5.0
    job_deadline_margin_s: float = 60.0
    # The callback outbox: a delivering process's claim lasts callback_lease_s (longer than
    # one attempt); every process looks for due callbacks at least every callback_poll_s.
    callback_lease_s: float = 30.0
    callback_poll_s: float = 1.0
    # How long an Idempotency-Key's answer is kept.
    idempotency_ttl_s: int = 24 * 3600
    # Egress: fixed name resolutions (host=ip,...) used instead of DNS by every outbound path,
    # and where the proxy's per-run socket dirs are made (a host path the engine can
    # bind-mount; default: the system temp dir).
    egress_resolve: dict[str, str] = field(default_factory=dict)
    egress_dir: str | None = None
    # How long a key that authenticated is trusted without a database lookup (0: always look).
    key_cache_s: float = 5.0
    # How long a run's action and org policy are trusted from memory while no write moved
    # the definitions epoch (0: read them for every run); see runs/definitions.py.
    definition_cache_s: float = 30.0
    # Per API key, in this process (0: unlimited); per-org limits live in the org's policy.
    key_runs_per_minute: int = 0
    key_concurrent_runs: int = 0
    # Speed: a warm pool of single-use sandboxes per policy profile (0 turns it off), a cap
    # on live containers, and bounded run slots with a bounded queue in front of them.
    pool_size: int = 2
    pool_starters: int = 3
    pool_max_idle_s: float = 300.0
    pool_ready_timeout_s: float = 20.0
    pool_preload: str = "requests,holidays"
    pool_pressure_window_s: float = 2.0
    max_live_containers: int = 32
    removal_queue_size: int = 256
    # Removals and pool refills wait for a moment with no run in flight, at most this long.
    engine_work_defer_ms: int = 250
    max_concurrent_runs: int = 8
    run_queue_size: int = 16
    run_queue_wait_ms: int = 30_000
    # Each process heartbeats in the database this often; one silent for owner_stale_s is
    # dead, and the sandboxes it left are swept (at start-up and every owner_stale_s).
    heartbeat_interval_s: float = 2.0
    owner_stale_s: float = 10.0
    # Extra labels put on every container (tests mark theirs for cleanup).
    container_labels: dict[str, str] = field(default_factory=dict)
    # Shared state (rate and concurrency limits, idempotency claims, key revocation, the Rasa
    # domain cache, the live-container cap) in this Redis, so every process behind a balancer
    # counts as one (redis://, rediss:// or unix://). Unset: each process keeps its own.
    redis_url: str | None = None
    # Origins (scheme://host[:port], comma-separated) allowed to call /mcp besides the server's
    # own: a browser page elsewhere is refused (DNS rebinding).
    mcp_allowed_origins: str = ""
    # Fernet keys (comma-separated, newest first: it encrypts, every one decrypts, so a key
    # can be rotated in) for the orgs' secrets. Unset: secrets are off, and a database that
    # holds some refuses to start.
    secrets_key: str | None = field(default=None, repr=False)
    # Executor workers: with a broker (amqp:// for RabbitMQ, or redis://), `serve` hands the
    # sandbox part of every run to `actioncage worker` processes through Celery; unset, runs
    # stay in-process. Workers heartbeat every worker_heartbeat_s; one silent for
    # worker_stale_s is gone and its runs end as executor lost. A started run's outcome is
    # awaited for its timeout plus dispatch_grace_s; a run no worker starts within
    # run_queue_wait_ms ends as sandbox_error. A run still out after dispatch_record_after_ms
    # gets a durable "running" record (so a reaper can end it if its worker and its API
    # process both die); one back sooner is written once, when it ends.
    broker_url: str | None = None
    worker_heartbeat_s: float = 1.0
    worker_stale_s: float = 5.0
    dispatch_grace_s: float = 10.0
    dispatch_record_after_ms: int = 250

    def __post_init__(self) -> None:
        # An empty database_url is refused by the Store, where a database is needed: an
        # executor worker (`actioncage worker`) has none.
        checks = [
            ("isolation", self.isolation in ISOLATION_TIERS),
            ("default_timeout_ms", 0 < self.default_timeout_ms <= self.max_timeout_ms),
            ("default_memory_mb", 6 <= self.default_memory_mb <= self.max_memory_mb),
            ("default_cpus", 0 < self.default_cpus <= self.max_cpus),
            ("pids_limit", self.pids_limit >= 8),
            ("tmpfs_mb", self.tmpfs_mb >= 1),
            ("max_output_bytes", self.max_output_bytes >= 1024),
            ("response_logs_bytes", self.response_logs_bytes >= 256),
            ("max_host_calls", self.max_host_calls >= 0),
            ("key_cache_s", 0 <= self.key_cache_s <= 3600),
            ("definition_cache_s", 0 <= self.definition_cache_s <= 3600),
            ("key_runs_per_minute", self.key_runs_per_minute >= 0),
            ("key_concurrent_runs", self.key_concurrent_runs >= 0),
            ("port", 0 <= self.port <= 65535),
            ("docker_url", self.docker_url is None or _engine_url_ok(self.docker_url)),
            ("max_api_response_bytes", self.max_api_response_bytes >= 1024),
            ("egress_allowed_cidrs", _cidrs_ok(self.egress_allowed_cidr_list)),
            ("default_egress", _patterns_ok(self.default_egress_list)),
            ("background_workers", self.background_workers >= 1),
            ("background_max_pending", self.background_max_pending >= 1),
            ("callback_max_attempts", self.callback_max_attempts >= 1),
            ("callback_backoff_ms", self.callback_backoff_ms >= 0),
            ("callback_timeout_ms", self.callback_timeout_ms >= 1),
            ("job_lease_s", 0 < self.job_lease_s <= 3600),
            # Two renewals fit in one lease, so one slow renewal does not lose the run.
            ("job_renew_s", 0 < self.job_renew_s <= self.job_lease_s / 2),
            ("job_reap_s", 0 < self.job_reap_s <= 3600),
            ("job_deadline_margin_s", self.job_deadline_margin_s >= 0),
            ("callback_lease_s", self.callback_lease_s > self.callback_timeout_ms / 1000),
            ("callback_poll_s", 0 < self.callback_poll_s <= 3600),
            ("idempotency_ttl_s", self.idempotency_ttl_s >= 1),
            ("pool_size", self.pool_size >= 0),
            ("pool_starters", self.pool_starters >= 1),
            ("pool_max_idle_s", self.pool_max_idle_s > 0),
            ("pool_ready_timeout_s", self.pool_ready_timeout_s > 0),
            ("pool_pressure_window_s", self.pool_pressure_window_s >= 0),
            ("max_live_containers", self.max_live_containers >= 1),
            ("removal_queue_size", self.removal_queue_size >= 1),
            ("engine_work_defer_ms", self.engine_work_defer_ms >= 0),
            ("max_concurrent_runs", self.max_concurrent_runs >= 1),
            ("run_queue_size", self.run_queue_size >= 0),
            ("run_queue_wait_ms", self.run_queue_wait_ms >= 0),
            ("heartbeat_interval_s", self.heartbeat_interval_s > 0),
            ("owner_stale_s", self.owner_stale_s >= 2 * self.heartbeat_interval_s),
            ("worker_heartbeat_s", 0 < self.worker_heartbeat_s <= 60),
            ("worker_stale_s", self.worker_stale_s >= 2 * self.worker_heartbeat_s),
            ("dispatch_grace_s", 1 <= self.dispatch_grace_s <= 600),
            ("dispatch_record_after_ms", 0 <= self.dispatch_record_after_ms <= 3_600_000),
        ]
        for name, ok in checks:
            if not ok:
                raise ConfigError(f"{_PREFIX}{name.upper()}: value out of range")
        if self.redis_url is not None and (problem := _redis_url_problem(self.redis_url)):
            raise ConfigError(f"{_PREFIX}REDIS_URL: {problem}")
        if self.secrets_key is not None and not all(
            _fernet_key_ok(k) for k in self.secrets_key_list
        ):
            # Never echo the value: it is the key.
            raise ConfigError(
                f"{_PREFIX}SECRETS_KEY: each comma-separated key must be 32 url-safe "
                "base64-encoded bytes (make one with `actioncage secrets new-key`)"
            )
        if self.broker_url is not None and (problem := _broker_url_problem(self.broker_url)):
            raise ConfigError(f"{_PREFIX}BROKER_URL: {problem}")
        try:
            for address in self.egress_resolve.values():
                ipaddress.ip_address(address)
        except ValueError as exc:
            raise ConfigError(f"{_PREFIX}EGRESS_RESOLVE: {exc}") from exc

    @property
    def egress_allowed_cidr_list(self) -> tuple[str, ...]:
        """``egress_allowed_cidrs`` split on commas."""
        return tuple(c.strip() for c in self.egress_allowed_cidrs.split(",") if c.strip())

    @property
    def secrets_key_list(self) -> tuple[str, ...]:
        """``secrets_key`` split on commas (newest first)."""
        return tuple(k.strip() for k in (self.secrets_key or "").split(",") if k.strip())

    @property
    def mcp_allowed_origin_list(self) -> tuple[str, ...]:
        """``mcp_allowed_origins`` split on commas, without trailing slashes."""
        return tuple(
            o.strip().rstrip("/") for o in self.mcp_allowed_origins.split(",") if o.strip()
        )

    @property
    def default_egress_list(self) -> tuple[str, ...]:
        """``default_egress`` split on commas."""
        return tuple(p.strip() for p in self.default_egress.split(",") if p.strip())

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read ``ACTIONCAGE_*`` variables; raise ConfigError naming a malformed one."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            var = _PREFIX + f.name.upper()
            raw = env.get(var)
            if raw is None or raw == "":
                continue
            values[f.name] = _parse(var, raw, str(f.type))
        return cls(**values)


def default_database_url(package_dir: Path | None = None) -> str:
    """``sqlite:///<checkout>/var/actioncage.db`` for the source checkout holding this package
    (the directory above ``src/`` with a ``pyproject.toml``), or ``""`` when there is none."""
    here = package_dir or Path(__file__).resolve().parent
    root = here.parent.parent
    if here.parent.name != "src" or not (root / "pyproject.toml").is_file():
        return ""
    return f"sqlite:///{root / 'var' / 'actioncage.db'}"


def _engine_url_ok(url: str) -> bool:
    from actioncage.sandbox.docker.engine import engine_address

    try:
        engine_address(url)
    except ValueError:
        return False
    return True


def _patterns_ok(patterns: Iterable[str]) -> bool:
    from actioncage.egress.guard import parse_patterns

    try:
        parse_patterns(patterns)
    except ValueError:
        return False
    return True


def _redis_url_problem(url: str) -> str | None:
    """What is wrong with a Redis URL, or None. Never echoes the URL: it may hold a password."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "unix":
        return None if parts.path else "a unix:// URL needs the socket's path"
    if parts.scheme not in ("redis", "rediss"):
        return "must start with redis://, rediss:// or unix://"
    try:
        parts.port  # noqa: B018 - parsing is the check
    except ValueError:
        return "the port is not a number from 0 to 65535"
    if not parts.hostname:
        return "names no host"
    db = parts.path.strip("/")
    if db and not db.isdigit():
        return "the database (after the host) must be a number"
    return None


def _fernet_key_ok(key: str) -> bool:
    try:
        return len(base64.urlsafe_b64decode(key.encode("ascii"))) == 32
    except (ValueError, UnicodeEncodeError):
        return False


def _broker_url_problem(url: str) -> str | None:
    """What is wrong with a broker URL, or None. Never echoes the URL."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("amqp", "amqps", "pyamqp", "redis", "rediss"):
        return "must start with amqp://, amqps:// (RabbitMQ), redis:// or rediss://"
    if parts.scheme.startswith("redis"):
        return _redis_url_problem(url)
    try:
        parts.port  # noqa: B018 - parsing is the check
    except ValueError:
        return "the port is not a number from 0 to 65535"
    return None if parts.hostname else "names no host"


def _cidrs_ok(cidrs: Iterable[str]) -> bool:
    try:
        for cidr in cidrs:
            ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return False
    return True


def _parse(var: str, raw: str, type_name: str) -> Any:
    try:
        if type_name.startswith("int"):
            return int(raw)
        if type_name.startswith("float"):
            return float(raw)
        if type_name.startswith("dict"):
            pairs = [p.split("=", 1) for p in raw.split(",") if p]
            return {k.strip(): v.strip() for k, v in pairs}
    except ValueError as exc:
        raise ConfigError(f"{var}: cannot parse {raw!r} as {type_name}") from exc
    return raw
