"""endpoints (named worker pools); the AWS-extension API's checkpoints, models and trainings

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08 08:00:00
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def _times() -> list[sa.Column[datetime]]:
    return [sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False)]


def upgrade() -> None:
    op.create_table(
        "endpoints",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("instance_type", sa.String(length=64), nullable=False),
        sa.Column("desired_replicas", sa.Integer(), nullable=False),
        sa.Column("min_replicas", sa.Integer(), nullable=False),
        sa.Column("max_replicas", sa.Integer(), nullable=False),
        sa.Column("ready_replicas", sa.Integer(), nullable=False),
        sa.Column("autoscaling", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("owner", sa.String(length=100), nullable=True),
        sa.Column("owner_expires_at", sa.DateTime(timezone=True), nullable=True),
        *_times(),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_endpoints_tenant_name", "endpoints", ["tenant_id", "name"], unique=False)
    op.create_index(op.f("ix_endpoints_status"), "endpoints", ["status"], unique=False)
    op.create_table(
        "esd_checkpoints",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("files", sa.JSON(), nullable=False),
        sa.Column("models", sa.JSON(), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        *_times(),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_esd_checkpoints_tenant_created", "esd_checkpoints", ["tenant_id", "created_at"], unique=False)
    op.create_table(
        "esd_models",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("model_type", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("checkpoint_id", sa.String(length=40), nullable=False),
        sa.Column("base_model", sa.String(length=200), nullable=True),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        *_times(),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_esd_models_tenant_created", "esd_models", ["tenant_id", "created_at"], unique=False)
    op.create_table(
        "esd_trainings",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("train_type", sa.String(length=32), nullable=False),
        sa.Column("model_id", sa.String(length=40), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("files", sa.JSON(), nullable=False),
        sa.Column("job_id", sa.String(length=40), nullable=True),
        sa.Column("output_model", sa.String(length=200), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        *_times(),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_esd_trainings_tenant_created", "esd_trainings", ["tenant_id", "created_at"], unique=False)


def downgrade() -> None:
    for table in ("esd_trainings", "esd_models", "esd_checkpoints"):
        op.drop_index(f"ix_{table}_tenant_created", table_name=table)
        op.drop_table(table)
    op.drop_index(op.f("ix_endpoints_status"), table_name="endpoints")
    op.drop_index("ix_endpoints_tenant_name", table_name="endpoints")
    op.drop_table("endpoints")
