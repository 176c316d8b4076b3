"""store/: revision workers_1, the executor worker that ran each run (runs.executor).

Revision ID: workers_1
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "workers_1"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A database made by create_all (adopted by 0001) may have the column already.
    present = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("runs")}
    if "executor" not in present:
        op.add_column("runs", sa.Column("executor", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("executor")
