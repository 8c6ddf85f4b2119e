"""Process-wide logging: one line per event, tagged with the job it belongs to.

A worker runs one job at a time per thread, so *which job* a log line is about is context, not an
argument: :func:`job_log_context` binds the job id, its attempt and the worker id in context variables
for the duration of a job, and :class:`JobContextFilter` (on the handler, so it sees every record,
including those of libraries such as torch, SQLAlchemy or Celery emitted during the job) copies them
onto each record. A thread a job starts runs in a copy of the job's context (``contextvars.copy_context``)
to log with it: new threads start with an empty context.

Two formats, chosen by ``ATELIER_LOG_FORMAT``:

- ``text`` (default): ``time LEVEL logger: message [job=... attempt=N]`` for people;
- ``json``: one JSON object per line (``time, level, logger, message, job_id, attempt, worker`` and
  ``exc_info`` for a traceback) for log shippers; a multi-line message or traceback stays on one line.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

#: The job bound here: ``{"job_id", "attempt", "worker"}``. One mutable dict per job, so the attempt set
#: after the claim is seen by every scope and thread that shares the job's context (the Celery task
#: around the runner, the heartbeat thread).
_bound: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("atelier_job", default=None)

#: The process's own identity (a worker's ``node:pid``), used when no job is bound.
_process_worker: dict[str, str | None] = {"id": None}

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s%(job_suffix)s"


def set_process_worker(worker_id: str | None) -> None:
    """Name this process on every line it logs (``worker``), job or not."""
    _process_worker["id"] = worker_id


@contextlib.contextmanager
def job_log_context(job_id: str, *, worker: str | None = None, attempt: int | None = None) -> Iterator[None]:
    """Tag every log line written in this context (this thread, and threads started with a copy of it)
    with ``job_id``, ``attempt`` and ``worker`` until the block ends. Nested blocks for the same job
    (the task around the runner) share one binding."""
    current_job = _bound.get()
    if current_job is not None and current_job["job_id"] == job_id:
        if worker is not None:
            current_job["worker"] = worker
        if attempt is not None:
            current_job["attempt"] = attempt
        yield
        return
    token = _bound.set({"job_id": job_id, "attempt": attempt, "worker": worker})
    try:
        yield
    finally:
        _bound.reset(token)


def bind_attempt(attempt: int) -> None:
    """Set the attempt once it is known (after the claim), inside a :func:`job_log_context` block."""
    current_job = _bound.get()
    if current_job is not None:
        current_job["attempt"] = attempt


def current() -> dict[str, Any]:
    """What a log line written here would be tagged with."""
    bound = _bound.get() or {}
    return {"job_id": bound.get("job_id"), "attempt": bound.get("attempt"),
            "worker": bound.get("worker") or _process_worker["id"]}


class JobContextFilter(logging.Filter):
    """Copies the bound job id, attempt and worker onto every record (never drops one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = current()
        record.job_id = ctx["job_id"]
        record.attempt = ctx["attempt"]
        record.worker = ctx["worker"]
        record.job_suffix = (f" [job={ctx['job_id']} attempt={ctx['attempt']}]" if ctx["job_id"] else "")
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line, UTC timestamps in ISO 8601 with milliseconds."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "job_id": getattr(record, "job_id", None),
            "attempt": getattr(record, "attempt", None),
            "worker": getattr(record, "worker", None),
            "process": record.processName,
        }
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc_info"] = record.exc_text
        if record.stack_info:
            out["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def make_handler(fmt: str, stream: Any = None) -> logging.Handler:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(JobContextFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    return handler


def configure(level: str, fmt: str = "text", stream: Any = None) -> None:
    """Install one handler on the root logger (replacing earlier ones). Called once by each process's
    entry point (``atelier`` commands); Celery keeps it (``worker_hijack_root_logger`` is off)."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(make_handler(fmt, stream))
    root.setLevel(level.upper())
    logging.captureWarnings(True)  # warnings (a library's, Celery's) are log lines in the same format
