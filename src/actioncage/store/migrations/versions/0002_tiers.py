"""store/: revision tiers_1, isolation tiers: each run's tier and runtime version, and an org's
minimum tier.

Revision ID: tiers_1
Revises: 0001
Create Date: 2025-01-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "tiers_1"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("isolation", sa.String(16), nullable=True))
    op.add_column("runs", sa.Column("runtime_version", sa.String(80), nullable=True))
    op.add_column("org_policies", sa.Column("min_isolation", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("org_policies") as batch:
        batch.drop_column("min_isolation")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("runtime_version")
        batch.drop_column("isolation")
