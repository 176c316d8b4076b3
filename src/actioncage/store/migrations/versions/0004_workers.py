"""store/: revision 0004, the executor worker that ran each run (runs.executor).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
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
