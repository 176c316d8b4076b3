"""store/: revision 0005, isolation tiers: each run's tier and runtime version, and an org's
minimum tier.

Revision ID: 0005
Revises: 0004
Create Date: 2025-01-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


_COLUMNS = (
    ("runs", sa.Column("isolation", sa.String(16), nullable=True)),
    ("runs", sa.Column("runtime_version", sa.String(80), nullable=True)),
    ("org_policies", sa.Column("min_isolation", sa.String(16), nullable=True)),
)


def upgrade() -> None:
    # A database made by create_all (adopted by 0001) may have them already.
    inspector = sa.inspect(op.get_bind())
    for table, column in _COLUMNS:
        if column.name not in {c["name"] for c in inspector.get_columns(table)}:
            op.add_column(table, column)


def downgrade() -> None:
    with op.batch_alter_table("org_policies") as batch:
        batch.drop_column("min_isolation")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("runtime_version")
        batch.drop_column("isolation")
