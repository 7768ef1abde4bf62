"""queue index on (status, endpoint, created_at)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 18:10:00
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index("ix_jobs_queue", ["status", "endpoint", "created_at"], unique=False)
        batch_op.drop_index("ix_jobs_status_created")


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index("ix_jobs_status_created", ["status", "created_at"], unique=False)
        batch_op.drop_index("ix_jobs_queue")
