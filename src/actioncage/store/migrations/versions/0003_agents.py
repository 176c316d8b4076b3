"""store/: revision 0003: actions declare ``returns`` and ``secrets``, runs record the
secrets' names, and the org_secrets table holds their encrypted values.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Only what is missing: a database made by create_all (adopted by 0001) may have it all.
    inspector = sa.inspect(op.get_bind())
    for table, column in (("action_versions", "returns"), ("action_versions", "secrets")):
        if column not in {c["name"] for c in inspector.get_columns(table)}:
            op.add_column(table, sa.Column(column, sa.JSON, nullable=True))
    if "secrets" not in {c["name"] for c in inspector.get_columns("runs")}:
        op.add_column("runs", sa.Column("secrets", sa.JSON, nullable=True))
    if not inspector.has_table("org_secrets"):
        op.create_table(
            "org_secrets",
            sa.Column("org_id", sa.String(64), primary_key=True),
            sa.Column("name", sa.String(64), primary_key=True),
            sa.Column("ciphertext", sa.Text, nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        )


def downgrade() -> None:
    op.drop_table("org_secrets")
    op.drop_column("runs", "secrets")
    op.drop_column("action_versions", "secrets")
    op.drop_column("action_versions", "returns")
