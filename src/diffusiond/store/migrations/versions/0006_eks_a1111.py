"""EKS and A1111: per-key bursts, several webhook targets per job (and their format), the data a
dialect keeps with its jobs, tenants' callback URLs, and tenants' settings per dialect

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rate_burst", sa.Integer(), nullable=True))
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("notify_targets", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("dialect_data", sa.JSON(), nullable=True))
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("format", sa.String(length=16), nullable=False, server_default="standard"))
        batch_op.drop_index("uq_outbox_terminal_job", sqlite_where=sa.text("terminal"),
                            postgresql_where=sa.text("terminal"))
        batch_op.create_index("uq_outbox_terminal_job", ["job_id", "url"], unique=True,
                              sqlite_where=sa.text("terminal"), postgresql_where=sa.text("terminal"))
    op.create_table(
        "tenant_callbacks",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("dialect", sa.String(length=32), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("format", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant_id", "dialect", "url", name="uq_tenant_callbacks_url"),
    )
    op.create_table(
        "dialect_settings",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("dialect", sa.String(length=32), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "dialect"),
    )


def downgrade() -> None:
    op.drop_table("dialect_settings")
    op.drop_table("tenant_callbacks")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index("uq_outbox_terminal_job", sqlite_where=sa.text("terminal"),
                            postgresql_where=sa.text("terminal"))
        batch_op.create_index("uq_outbox_terminal_job", ["job_id"], unique=True, sqlite_where=sa.text("terminal"),
                              postgresql_where=sa.text("terminal"))
        batch_op.drop_column("format")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("dialect_data")
        batch_op.drop_column("notify_targets")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("rate_burst")
