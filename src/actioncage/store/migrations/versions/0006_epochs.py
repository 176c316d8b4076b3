"""store/: revision 0006, the epochs table: a counter every write to actions and org
policies moves, so each process can tell its cache of them is stale.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A database made by create_all (adopted by 0001) may have it already.
    if not sa.inspect(op.get_bind()).has_table("epochs"):
        op.create_table(
            "epochs",
            sa.Column("name", sa.String(32), primary_key=True),
            sa.Column("value", sa.BigInteger, nullable=False),
        )


def downgrade() -> None:
    op.drop_table("epochs")
