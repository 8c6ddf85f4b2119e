"""dispatch bookkeeping, priority and idempotency keys on jobs

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 06:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("priority", sa.String(length=8), nullable=False, server_default="normal"))
        batch.add_column(sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("dispatch_count", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("idempotency_key", sa.String(length=255), nullable=True))
        batch.add_column(sa.Column("request_hash", sa.String(length=64), nullable=True))
        batch.create_unique_constraint("uq_jobs_idempotency_key", ["idempotency_key"])
        batch.create_index("ix_jobs_dispatch", ["status", "dispatched_at"])
    # Jobs queued before this migration count as dispatched once (their message was sent at submit).
    op.execute("UPDATE jobs SET dispatch_count = 1, dispatched_at = updated_at WHERE status = 'queued'")


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_dispatch")
        batch.drop_constraint("uq_jobs_idempotency_key", type_="unique")
        for column in ("request_hash", "idempotency_key", "dispatch_count", "dispatched_at", "priority"):
            batch.drop_column(column)
