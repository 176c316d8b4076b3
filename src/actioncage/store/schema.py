"""store/: the tables (the schema Alembic's migrations build)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """A point in time, stored in UTC and always read back timezone-aware.

    PostgreSQL keeps ``timestamptz``; SQLite has no time zones and hands back naive values,
    so they are written as UTC and read back with UTC attached. A naive value going in is
    taken as UTC (what ``repo.now()`` and our cursors carry).
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _nul_free(value: str | None) -> str | None:
    return value if value is None or "\x00" not in value else value.replace("\x00", "\ufffd")


class NulFreeString(TypeDecorator[str]):
    """A string with every NUL character written as U+FFFD, in values and in lookups.

    PostgreSQL text cannot hold NUL, not even as a query parameter: a run's logs may carry
    one, and so may an id in a URL. Writing it as the replacement character (what
    undecodable output already becomes) records the run and answers the lookup (404) on both
    databases alike, where PostgreSQL would fail the statement.
    """

    impl = String
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return _nul_free(value)


class NulFreeText(TypeDecorator[str]):
    """Text, NUL-free like ``NulFreeString``."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return _nul_free(value)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class OrgRow(Base):
    __tablename__ = "orgs"
    id: Mapped[str] = mapped_column(NulFreeString(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Signs run callbacks; made on first use.
    webhook_secret: Mapped[str | None] = mapped_column(NulFreeString(80), nullable=True)


class ApiKeyRow(Base):
    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(NulFreeString(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(NulFreeString(64), index=True)
    # sha256 of the key: keys are 256-bit random, so a fast hash is enough.
    key_hash: Mapped[str] = mapped_column(NulFreeString(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Set once revoked: the key then authenticates nowhere (the row stays for the audit trail).
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class ActionRow(Base):
    """The current version of each live action."""

    __tablename__ = "actions"
    __table_args__ = (UniqueConstraint("org_id", "name"),)
    id: Mapped[str] = mapped_column(NulFreeString(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(NulFreeString(64), index=True)
    name: Mapped[str] = mapped_column(NulFreeString(64))
    version: Mapped[int] = mapped_column(Integer)
    created_by: Mapped[str] = mapped_column(NulFreeString(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_by: Mapped[str] = mapped_column(NulFreeString(40))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ActionVersionRow(Base):
    """Every version ever saved; runs point here, so deleting an action keeps its history."""

    __tablename__ = "action_versions"
    action_id: Mapped[str] = mapped_column(NulFreeString(40), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[str] = mapped_column(NulFreeString(64), index=True)
    name: Mapped[str] = mapped_column(NulFreeString(64))
    type: Mapped[str] = mapped_column(NulFreeString(16))
    code: Mapped[str] = mapped_column(NulFreeText())
    parameters: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    policy: Mapped[dict[str, Any]] = mapped_column(JSON)
    description: Mapped[str | None] = mapped_column(NulFreeText(), nullable=True)
    created_by: Mapped[str] = mapped_column(NulFreeString(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    endpoint: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    user_waiting_text: Mapped[str | None] = mapped_column(NulFreeText(), nullable=True)
    user_success_text: Mapped[str | None] = mapped_column(NulFreeText(), nullable=True)
    user_error_text: Mapped[str | None] = mapped_column(NulFreeText(), nullable=True)
    invocation_trigger: Mapped[str | None] = mapped_column(NulFreeString(40), nullable=True)
    # The output's JSON Schema, and the names of the org's secrets the action reads.
    returns: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    secrets: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)


class ConversationRow(Base):
    __tablename__ = "conversations"
    org_id: Mapped[str] = mapped_column(NulFreeString(64), primary_key=True)
    id: Mapped[str] = mapped_column(NulFreeString(128), primary_key=True)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON)
    tags: Mapped[list[Any]] = mapped_column(JSON)
    events: Mapped[list[Any]] = mapped_column(JSON)
    messages: Mapped[list[Any]] = mapped_column(JSON)
    handed_off: Mapped[bool] = mapped_column(Boolean, default=False)
    hand_off_reason: Mapped[str | None] = mapped_column(NulFreeText(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class RunRow(Base):
    """The audit record of one run."""

    __tablename__ = "runs"
    id: Mapped[str] = mapped_column(NulFreeString(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(NulFreeString(64), index=True)
    caller_key_id: Mapped[str | None] = mapped_column(NulFreeString(40), nullable=True)
    action_id: Mapped[str] = mapped_column(NulFreeString(40), index=True)
    action_version: Mapped[int] = mapped_column(Integer)
    conversation_id: Mapped[str | None] = mapped_column(NulFreeString(128), nullable=True)
    status: Mapped[str] = mapped_column(NulFreeString(16))
    error_type: Mapped[str | None] = mapped_column(NulFreeString(32), nullable=True)
    error_message: Mapped[str | None] = mapped_column(NulFreeText(), nullable=True)
    error_traceback: Mapped[str | None] = mapped_column(NulFreeText(), nullable=True)
    output: Mapped[Any] = mapped_column(JSON, nullable=True)
    effects: Mapped[list[Any]] = mapped_column(JSON)
    effects_applied: Mapped[bool] = mapped_column(Boolean)
    logs: Mapped[str] = mapped_column(NulFreeText())
    duration_ms: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime] = mapped_column(UTCDateTime())
    image_digest: Mapped[str | None] = mapped_column(NulFreeString(80), nullable=True)
    policy_hash: Mapped[str | None] = mapped_column(NulFreeString(64), nullable=True)
    egress: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    # Which door the call came in by (native, rasa, botpress, dashboard, trigger, mcp...).
    front_door: Mapped[str | None] = mapped_column(NulFreeString(16), nullable=True)
    # The args the run was called with (None: recorded before runs kept them).
    args: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # The names of the secrets the run was given (never their values).
    secrets: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    # The executor worker that ran the sandbox part (None: this control plane, in-process).
    executor: Mapped[str | None] = mapped_column(NulFreeString(64), nullable=True)
    # The isolation tier it ran in (jail, container, gvisor) and that tier's runtime version.
    isolation: Mapped[str | None] = mapped_column(NulFreeString(16), nullable=True)
    runtime_version: Mapped[str | None] = mapped_column(NulFreeString(80), nullable=True)


class OrgPolicyRow(Base):
    """The operator's ceilings for one org (no row: the operator-wide maxima apply)."""

    __tablename__ = "org_policies"
    org_id: Mapped[str] = mapped_column(NulFreeString(64), primary_key=True)
    max_timeout_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_memory_mb: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_cpus: Mapped[float | None] = mapped_column(Float, nullable=True)
    restricted: Mapped[bool] = mapped_column(Boolean, default=False)
    runs_per_minute: Mapped[int | None] = mapped_column(Integer, nullable=True)
    concurrent_runs: Mapped[int | None] = mapped_column(Integer, nullable=True)
    egress: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    # The weakest isolation tier the org's runs may use (None: any).
    min_isolation: Mapped[str | None] = mapped_column(NulFreeString(16), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class IdempotencyRow(Base):
    """One Idempotency-Key of one org: the request it was first used with and its answer."""

    __tablename__ = "idempotency_keys"
    org_id: Mapped[str] = mapped_column(NulFreeString(64), primary_key=True)
    key: Mapped[str] = mapped_column(NulFreeString(255), primary_key=True)
    # sha256 of the route and the canonical request body.
    fingerprint: Mapped[str] = mapped_column(NulFreeString(64))
    # None while the first call is still running.
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    body: Mapped[Any] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class InstanceRow(Base):
    """One live actioncage process (serve or worker). It heartbeats here; a row whose
    heartbeat is stale belongs to a dead process, whose containers and leases may be reaped."""

    __tablename__ = "instances"
    id: Mapped[str] = mapped_column(NulFreeString(40), primary_key=True)
    role: Mapped[str] = mapped_column(NulFreeString(16))
    host: Mapped[str] = mapped_column(NulFreeString(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class JobRow(Base):
    """A run that outlasts its caller's waitMs: durable, leased by the process running it.

    ``state``: queued (no process has started it), running (``owner`` holds a lease until
    ``lease_until``), done. A running job whose lease ran out is completed as sandbox_error
    ("executor lost") by the reaper, never re-run.
    """

    __tablename__ = "jobs"
    run_id: Mapped[str] = mapped_column(NulFreeString(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(NulFreeString(64), index=True)
    state: Mapped[str] = mapped_column(NulFreeString(16), index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    owner: Mapped[str | None] = mapped_column(NulFreeString(40), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    deadline_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class CallbackRow(Base):
    """The callback outbox: a signed POST owed to a caller's callbackUrl for a finished run.

    ``state``: pending (due at ``next_attempt_at``; a process delivering it holds a lease),
    delivered, failed (attempts ran out or the target refused).
    """

    __tablename__ = "callbacks"
    id: Mapped[str] = mapped_column(NulFreeString(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(NulFreeString(64), index=True)
    run_id: Mapped[str] = mapped_column(NulFreeString(40), index=True)
    url: Mapped[str] = mapped_column(NulFreeText())
    body: Mapped[str] = mapped_column(NulFreeText())
    state: Mapped[str] = mapped_column(NulFreeString(16), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    owner: Mapped[str | None] = mapped_column(NulFreeString(40), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_error: Mapped[str | None] = mapped_column(NulFreeText(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class ServerSecretRow(Base):
    """Secrets every process of one deployment shares (the dashboard's session key when
    ACTIONCAGE_SECRET_KEY is unset). Made once; the first insert wins."""

    __tablename__ = "server_secrets"
    name: Mapped[str] = mapped_column(NulFreeString(64), primary_key=True)
    value: Mapped[str] = mapped_column(NulFreeText())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class OrgSecretRow(Base):
    """One secret of an org: its value Fernet-encrypted (store/secrets.py); never plaintext."""

    __tablename__ = "org_secrets"
    org_id: Mapped[str] = mapped_column(NulFreeString(64), primary_key=True)
    name: Mapped[str] = mapped_column(NulFreeString(64), primary_key=True)
    ciphertext: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class EpochRow(Base):
    """A counter that every write to one kind of shared definition moves, in the write's own
    transaction (``definitions``: actions and org policies), so every process can tell, by
    reading one row, that what it cached of them is stale. No row reads as 0."""

    __tablename__ = "epochs"
    name: Mapped[str] = mapped_column(NulFreeString(32), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)
