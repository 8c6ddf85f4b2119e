"""SQLAlchemy 2.0 typed models: the job table is the source of truth.

Alembic migrations in ``migrations/`` must match these exactly; ``tests/test_migrations.py`` checks
there is no drift on SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import (JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint,
                        text)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

JOB_STATUSES = ("queued", "running", "succeeded", "failed", "canceled")
PRIORITIES = ("normal", "high")
TERMINAL_STATUSES = ("succeeded", "failed", "canceled")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def as_utc(value: dt.datetime | None) -> dt.datetime | None:
    """SQLite returns naive datetimes; every stored time is UTC."""
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def new_id() -> str:
    return str(uuid.uuid4())


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, dt.datetime: DateTime(timezone=True)}


class Job(Base):
    """One unit of work. ``status`` moves ``queued -> running -> succeeded|failed|canceled`` only through
    guarded updates in :mod:`core.jobs.repository`."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_created", "created_at", "id"),
        Index("ix_jobs_status_created", "status", "created_at"),
        Index("ix_jobs_lease", "status", "lease_expires_at"),
        Index("ix_jobs_dispatch", "status", "dispatched_at"),
        Index("ix_jobs_owner_created", "owner", "created_at"),
        # The worker's webhook sweep looks for recently finished jobs that carry a webhook, every 0.5 s.
        Index("ix_jobs_webhook_finished", "finished_at", postgresql_where=text("webhook IS NOT NULL"),
              sqlite_where=text("webhook IS NOT NULL")),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    step: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    notices: Mapped[list[Any]] = mapped_column(default=list)  # e.g. "random weights: not artistic"
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    preview_path: Mapped[str | None] = mapped_column(String(512))
    preview_step: Mapped[int | None] = mapped_column(Integer)
    worker_id: Mapped[str | None] = mapped_column(String(255))
    lease_expires_at: Mapped[dt.datetime | None]
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    priority: Mapped[str] = mapped_column(String(8), default="normal")  # "normal" | "high"
    # Broker bookkeeping: when the newest "job X has work" message was sent, and how many were sent in
    # all. A queued job is re-sent only when its message can really have been lost (see worker.dispatch).
    dispatched_at: Mapped[dt.datetime | None]
    dispatch_count: Mapped[int] = mapped_column(Integer, default=0)
    # Idempotent submits: the client's Idempotency-Key and a hash of the request it came with.
    idempotency_key: Mapped[str | None] = mapped_column(String(255), unique=True)
    request_hash: Mapped[str | None] = mapped_column(String(64))
    # Who submitted it: the token's owner name (None: submitted with auth off).
    owner: Mapped[str | None] = mapped_column(String(128))
    name: Mapped[str | None] = mapped_column(String(255))  # a label the user gives the job
    # Webhook URL and the events it wants (start, progress, output, completed); deliveries are rows.
    webhook: Mapped[str | None] = mapped_column(String(2048))
    webhook_events: Mapped[list[Any]] = mapped_column(default=list, server_default="[]")
    deleted_at: Mapped[dt.datetime | None]  # a deleted job's row stays as a tombstone
    artifacts_removed_at: Mapped[dt.datetime | None]  # retention removed its files; the row stays
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]

    files: Mapped[list["JobFile"]] = relationship(
        back_populates="job", cascade="all, delete-orphan", order_by="JobFile.id"
    )


class JobFile(Base):
    """An input or output file of a job; ``path`` is a storage key (see :mod:`core.storage`)."""

    __tablename__ = "job_files"
    __table_args__ = (UniqueConstraint("job_id", "direction", "name", name="uq_job_files_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    direction: Mapped[str] = mapped_column(String(8))  # "input" | "output"
    role: Mapped[str] = mapped_column(String(64))  # e.g. "content", "style", "result"
    name: Mapped[str] = mapped_column(String(255))
    path: Mapped[str] = mapped_column(String(512))
    content_type: Mapped[str] = mapped_column(String(128))
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    job: Mapped[Job] = relationship(back_populates="files")


class JobMetricPoint(Base):
    """One point of a metric series (e.g. the loss at a step), for the job page's plots."""

    __tablename__ = "job_metric_points"
    __table_args__ = (Index("ix_metric_points_job_name_step", "job_id", "name", "step"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    step: Mapped[int] = mapped_column(Integer)
    value: Mapped[float] = mapped_column(Float)


class JobEvent(Base):
    """A log line of a job (what the worker did), shown on the job page."""

    __tablename__ = "job_events"
    __table_args__ = (Index("ix_job_events_job", "job_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    level: Mapped[str] = mapped_column(String(16), default="info")
    message: Mapped[str] = mapped_column(Text)


class Worker(Base):
    """A worker process, registered at start and refreshed by its heartbeat (the worker view)."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    queues: Mapped[str] = mapped_column(String(255))
    device: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default="online")  # online | busy | stopped
    current_job_id: Mapped[str | None] = mapped_column(String(36))
    info: Mapped[dict[str, Any]] = mapped_column(default=dict)  # e.g. weights availability
    jobs_done: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Dataset(Base):
    """An uploaded image collection, validated once and reused by many training jobs."""

    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255))
    layout: Mapped[str] = mapped_column(String(32))  # "unpaired" | "paired"
    path: Mapped[str] = mapped_column(String(512))  # storage key prefix
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)  # counts, rejected files report
    owner: Mapped[str | None] = mapped_column(String(128), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Model(Base):
    """A generator (trained here or imported) with the options needed to rebuild it."""

    __tablename__ = "models"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255))
    family: Mapped[str] = mapped_column(String(32))  # "cyclegan" | "pix2pix" | "imported"
    path: Mapped[str] = mapped_column(String(512))  # storage key prefix
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)  # architecture options, directions, size
    source_job_id: Mapped[str | None] = mapped_column(String(36))
    owner: Mapped[str | None] = mapped_column(String(128), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ApiToken(Base):
    """A bearer token for the API and the pages. Only its SHA-256 is stored (tokens are 256-bit random,
    so a slow password hash adds nothing); ``prefix`` identifies it in listings. ``name`` is the owner
    name written on the jobs, datasets and models the token creates."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(128), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    admin: Mapped[bool] = mapped_column(Boolean, default=False)
    webhook_secret: Mapped[str] = mapped_column(String(128))  # signs this owner's webhook deliveries
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[dt.datetime | None]
    revoked_at: Mapped[dt.datetime | None]


class WebhookDelivery(Base):
    """One webhook POST to send (or sent) for a job event; workers send them, never a web request."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_job", "job_id", "id"),
                      Index("ix_webhook_deliveries_due", "status", "next_attempt_at"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    event: Mapped[str] = mapped_column(String(16))  # start | progress | output | completed
    url: Mapped[str] = mapped_column(String(2048))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    response_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    next_attempt_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]
