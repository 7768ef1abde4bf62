"""kinds of work: jobs record their kind and submitting dialect; artifacts are typed

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 06:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("dialect", sa.String(length=32), nullable=False, server_default="jobs"))
        batch_op.add_column(sa.Column("metrics", sa.JSON(), nullable=True))
    # Before 0004 `kind` named the dialect: "generation" for /v1/jobs, "stability" for Stability v1.
    op.execute("UPDATE jobs SET dialect = 'stability' WHERE kind = 'stability'")
    op.execute("UPDATE jobs SET kind = 'generate' WHERE kind IN ('generation', 'stability')")
    with op.batch_alter_table("artifacts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("kind", sa.String(length=16), nullable=False, server_default="image"))
        batch_op.add_column(sa.Column("name", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("format", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("size", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("sha256", sa.String(length=64), nullable=True))
        batch_op.alter_column("width", existing_type=sa.Integer(), nullable=True)
        batch_op.alter_column("height", existing_type=sa.Integer(), nullable=True)
        batch_op.alter_column("seed", existing_type=sa.BigInteger(), nullable=True)


def downgrade() -> None:
    op.execute("DELETE FROM artifacts WHERE kind <> 'image'")
    with op.batch_alter_table("artifacts", schema=None) as batch_op:
        batch_op.alter_column("seed", existing_type=sa.BigInteger(), nullable=False)
        batch_op.alter_column("height", existing_type=sa.Integer(), nullable=False)
        batch_op.alter_column("width", existing_type=sa.Integer(), nullable=False)
        for column in ("sha256", "size", "format", "name", "kind"):
            batch_op.drop_column(column)
    op.execute("UPDATE jobs SET kind = 'stability' WHERE dialect = 'stability'")
    op.execute("UPDATE jobs SET kind = 'generation' WHERE kind = 'generate'")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("metrics")
        batch_op.drop_column("dialect")
