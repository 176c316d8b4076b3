"""store/: revision 0002, runs keep the args they were called with (the run page shows them).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A database made by create_all (before migrations) from newer models may have it.
    columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("runs")}
    if "args" not in columns:
        op.add_column("runs", sa.Column("args", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("runs", "args")
