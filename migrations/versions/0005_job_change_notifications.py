"""PostgreSQL: NOTIFY atelier_jobs with the job id whenever a job row or one of its files changes

Web processes keep the job views they answered in memory and drop one when its id is notified
(web/job_cache.py), so polling a job reads no table until it changes. A trigger, rather than a
notify in each write, covers every writer (repository, retention, deletion, a person with psql).
SQLite has no NOTIFY; the embedded mode reads the table on every request.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 13:30:00
"""
from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

CHANNEL = "atelier_jobs"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    # pg_notify in a transaction is delivered at commit, once per distinct payload.
    op.execute(f"""
        CREATE FUNCTION atelier_notify_job() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF TG_TABLE_NAME = 'jobs' THEN
            PERFORM pg_notify('{CHANNEL}', COALESCE(NEW.id, OLD.id));
          ELSE
            PERFORM pg_notify('{CHANNEL}', COALESCE(NEW.job_id, OLD.job_id));
          END IF;
          RETURN NULL;
        END $$""")
    for table in ("jobs", "job_files"):
        op.execute(f"CREATE TRIGGER {table}_notify AFTER INSERT OR UPDATE OR DELETE ON {table} "
                   "FOR EACH ROW EXECUTE FUNCTION atelier_notify_job()")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in ("jobs", "job_files"):
        op.execute(f"DROP TRIGGER IF EXISTS {table}_notify ON {table}")
    op.execute("DROP FUNCTION IF EXISTS atelier_notify_job()")
