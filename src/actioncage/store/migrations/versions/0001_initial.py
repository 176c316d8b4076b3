"""store/: revision 0001, every table; completes a database made by create_all before it.

Revision ID: 0001
Revises:
Create Date: 2025-01-01

Before migrations, every process ran ``create_all`` at boot: it made missing tables but
never added a column to an existing one. Such a database has no ``alembic_version``. This
revision therefore creates only the tables that are missing and adds the (nullable) columns
an older table lacks, so upgrading adopts it; on an empty database it simply creates all.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from alembic import op

from actioncage.errors import ConfigError

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _ts(name: str, nullable: bool = False) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _schema() -> sa.MetaData:
    """The schema as this revision leaves it (frozen here: later revisions change it)."""
    m = sa.MetaData()
    sa.Table(
        "orgs",
        m,
        sa.Column("id", sa.String(64), primary_key=True),
        _ts("created_at"),
        sa.Column("webhook_secret", sa.String(80), nullable=True),
    )
    sa.Table(
        "api_keys",
        m,
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("org_id", sa.String(64), nullable=False, index=True),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        _ts("created_at"),
        _ts("revoked_at", nullable=True),
    )
    sa.Table(
        "actions",
        m,
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("org_id", sa.String(64), nullable=False, index=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("created_by", sa.String(40), nullable=False),
        _ts("created_at"),
        sa.Column("updated_by", sa.String(40), nullable=False),
        _ts("updated_at"),
        sa.UniqueConstraint("org_id", "name"),
    )
    sa.Table(
        "action_versions",
        m,
        sa.Column("action_id", sa.String(40), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("org_id", sa.String(64), nullable=False, index=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("code", sa.Text, nullable=False),
        sa.Column("parameters", sa.JSON, nullable=True),
        sa.Column("policy", sa.JSON, nullable=False),
        sa.Column("description", sa.Text, nullable=True),
        sa.Column("created_by", sa.String(40), nullable=False),
        _ts("created_at"),
        sa.Column("endpoint", sa.JSON, nullable=True),
        sa.Column("user_waiting_text", sa.Text, nullable=True),
        sa.Column("user_success_text", sa.Text, nullable=True),
        sa.Column("user_error_text", sa.Text, nullable=True),
        sa.Column("invocation_trigger", sa.String(40), nullable=True),
    )
    sa.Table(
        "conversations",
        m,
        sa.Column("org_id", sa.String(64), primary_key=True),
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("metadata", sa.JSON, nullable=False),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("events", sa.JSON, nullable=False),
        sa.Column("messages", sa.JSON, nullable=False),
        sa.Column("handed_off", sa.Boolean, nullable=False),
        sa.Column("hand_off_reason", sa.Text, nullable=True),
        _ts("created_at"),
        _ts("updated_at"),
        _ts("ended_at", nullable=True),
    )
    sa.Table(
        "runs",
        m,
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("org_id", sa.String(64), nullable=False, index=True),
        sa.Column("caller_key_id", sa.String(40), nullable=True),
        sa.Column("action_id", sa.String(40), nullable=False, index=True),
        sa.Column("action_version", sa.Integer, nullable=False),
        sa.Column("conversation_id", sa.String(128), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error_type", sa.String(32), nullable=True),
        sa.Column("error_message", sa.Text, nullable=True),
        sa.Column("error_traceback", sa.Text, nullable=True),
        sa.Column("output", sa.JSON, nullable=True),
        sa.Column("effects", sa.JSON, nullable=False),
        sa.Column("effects_applied", sa.Boolean, nullable=False),
        sa.Column("logs", sa.Text, nullable=False),
        sa.Column("duration_ms", sa.Integer, nullable=False),
        _ts("started_at"),
        _ts("finished_at"),
        sa.Column("image_digest", sa.String(80), nullable=True),
        sa.Column("policy_hash", sa.String(64), nullable=True),
        sa.Column("egress", sa.JSON, nullable=True),
        sa.Column("front_door", sa.String(16), nullable=True),
    )
    sa.Table(
        "org_policies",
        m,
        sa.Column("org_id", sa.String(64), primary_key=True),
        sa.Column("max_timeout_ms", sa.Integer, nullable=True),
        sa.Column("max_memory_mb", sa.Integer, nullable=True),
        sa.Column("max_cpus", sa.Float, nullable=True),
        sa.Column("restricted", sa.Boolean, nullable=False),
        sa.Column("runs_per_minute", sa.Integer, nullable=True),
        sa.Column("concurrent_runs", sa.Integer, nullable=True),
        sa.Column("egress", sa.JSON, nullable=True),
        _ts("updated_at"),
    )
    sa.Table(
        "idempotency_keys",
        m,
        sa.Column("org_id", sa.String(64), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("status_code", sa.Integer, nullable=True),
        sa.Column("body", sa.JSON, nullable=True),
        _ts("created_at"),
    )
    sa.Table(
        "instances",
        m,
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        _ts("started_at"),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False, index=True),
    )
    sa.Table(
        "jobs",
        m,
        sa.Column("run_id", sa.String(40), primary_key=True),
        sa.Column("org_id", sa.String(64), nullable=False, index=True),
        sa.Column("state", sa.String(16), nullable=False, index=True),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("owner", sa.String(40), nullable=True),
        _ts("lease_until", nullable=True),
        _ts("deadline_at"),
        _ts("created_at"),
        _ts("started_at", nullable=True),
        _ts("finished_at", nullable=True),
    )
    sa.Table(
        "callbacks",
        m,
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("org_id", sa.String(64), nullable=False, index=True),
        sa.Column("run_id", sa.String(40), nullable=False, index=True),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False, index=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        _ts("next_attempt_at"),
        sa.Column("owner", sa.String(40), nullable=True),
        _ts("lease_until", nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        _ts("created_at"),
        _ts("delivered_at", nullable=True),
    )
    sa.Table(
        "server_secrets",
        m,
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
        _ts("created_at"),
    )
    return m


def upgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    for table in _schema().sorted_tables:
        if not inspector.has_table(table.name):
            table.create(bind)
            continue
        present = {column["name"] for column in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            if not column.nullable:
                raise ConfigError(
                    f"cannot adopt table {table.name}: it lacks the required column "
                    f"{column.name} (made by a version too old to upgrade in place)"
                )
            op.add_column(table.name, column._copy())


def downgrade() -> None:
    for table in reversed(_schema().sorted_tables):
        op.drop_table(table.name)
