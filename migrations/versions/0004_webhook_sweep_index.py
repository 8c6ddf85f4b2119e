"""an index for the webhook completion sweep (finished jobs that carry a webhook)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 11:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

WHERE = sa.text("webhook IS NOT NULL")


def upgrade() -> None:
    op.create_index("ix_jobs_webhook_finished", "jobs", ["finished_at"], postgresql_where=WHERE, sqlite_where=WHERE)


def downgrade() -> None:
    op.drop_index("ix_jobs_webhook_finished", table_name="jobs")
