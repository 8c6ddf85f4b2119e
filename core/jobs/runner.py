"""Run one job: claim it, keep its lease alive, call its kind, store the outcome.

Called by the Celery task with only a job id: everything else comes from the row. A duplicate or late
message finds the job already claimed or finished and does nothing. Bad input or a job that cannot run
ends as ``failed`` with a reason for the user; the traceback goes to the log; the worker lives on.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.engines.progress import Cancelled
from core.errors import AtelierError
from core.jobs import repository as repo
from core.jobs.progress import JobProgress
from core.kinds.context import InputFile, JobContext
from core.kinds.registry import get_kind
from core.models import Worker
from core.services import Services

log = logging.getLogger(__name__)

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def safe_filename(name: str, default: str = "file") -> str:
    """A filename that is safe as the last part of a storage key."""
    base = Path(name.replace("\\", "/")).name
    cleaned = _SAFE_NAME.sub("_", base).strip("._")[:120]
    return cleaned or default


@dataclass(frozen=True)
class RunOutcome:
    status: str  # "succeeded" | "failed" | "canceled" | "skipped" | "lost"
    error: str | None = None


class StoredJobContext(JobContext):
    """A :class:`JobContext` over the job row and storage."""

    def __init__(self, services: Services, job_id: str, params: Mapping[str, Any], inputs: list[InputFile],
                 progress: JobProgress) -> None:
        self.services = services
        self.job_id = job_id
        self.params = params
        self.inputs = inputs
        self.progress = progress
        self.settings = services.settings
        self.device = services.settings.device
        self.work_dir = services.storage.path(f"jobs/{job_id}/work")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.metrics: dict[str, Any] = {}
        self.warnings = []

    def save_output(self, name: str, data: bytes, content_type: str) -> None:
        name = safe_filename(name, "output")
        key = f"jobs/{self.job_id}/outputs/{name}"
        obj = self.services.storage.put_bytes(key, data)
        repo.put_output(self.services.sessions, self.job_id, role="output", name=name, key=key,
                        content_type=content_type, size=obj.size, sha256=obj.sha256)

    def set_metrics(self, metrics: Mapping[str, Any]) -> None:
        self.metrics.update(metrics)

    def resource_path(self, table: str, resource_id: str) -> Path:
        from core import resources

        return resources.local_path(self.services, table, resource_id)

    def register_model(self, name: str, kind: str, source_dir: Path, meta: Mapping[str, Any]) -> str:
        from core import resources

        model = resources.add_model(self.services, name=name, family=kind, source_dir=source_dir, meta=meta,
                                    source_job_id=self.job_id)
        return model.id


class _Heartbeat(threading.Thread):
    """Renews the lease every ``period`` seconds; notices cancellation and a lost lease."""

    def __init__(self, services: Services, job_id: str, worker_id: str, progress: JobProgress) -> None:
        super().__init__(name=f"lease-{job_id[:8]}", daemon=True)
        self.services, self.job_id, self.worker_id, self.progress = services, job_id, worker_id, progress
        self.stopped = threading.Event()

    def run(self) -> None:
        s = self.services.settings
        while not self.stopped.wait(s.heartbeat_seconds):
            try:
                ours, cancel = repo.renew_lease(self.services.sessions, self.job_id, self.worker_id, s.lease_seconds)
            except Exception:  # a database blip must not end the job; the next beat retries
                log.exception("job %s: lease renewal failed", self.job_id)
                continue
            if not ours:
                log.warning("job %s: lease lost; another worker owns it now", self.job_id)
                self.progress.lease_lost.set()
                return
            if cancel:
                self.progress.cancel_seen.set()


def run_job(services: Services, job_id: str, worker_id: str) -> RunOutcome:
    sf = services.sessions
    settings = services.settings
    job = repo.get_job(sf, job_id)
    if job is None:
        log.warning("job %s: no such job (message for a deleted job?)", job_id)
        return RunOutcome("skipped")
    kind = get_kind(job.kind)
    if kind is None:
        repo.fail_unclaimable(sf, job_id, f"This server does not know the job kind {job.kind!r}.")
        return RunOutcome("failed", "unknown kind")
    if not repo.claim(sf, job_id, worker_id, settings.lease_seconds):
        log.info("job %s: not claimable (status %s); message ignored", job_id, job.status)
        return RunOutcome("skipped")

    progress = JobProgress(services, job_id, worker_id, preview_every=settings.preview_every,
                           interval=settings.progress_interval)
    inputs = [InputFile(role=f.role, name=f.name, content_type=f.content_type, path=services.storage.path(f.path))
              for f in job.files if f.direction == "input"]
    ctx = StoredJobContext(services, job_id, job.params, inputs, progress)
    heartbeat = _Heartbeat(services, job_id, worker_id, progress)
    heartbeat.start()
    repo.touch_worker(sf, worker_id, state="busy", current_job_id=job_id)
    repo.add_event(sf, job_id, f"attempt {job.attempt + 1} started on {worker_id}")
    try:
        outcome = _execute(services, kind, ctx, progress, job_id, worker_id)
    finally:
        heartbeat.stopped.set()
        heartbeat.join(timeout=5)
        repo.touch_worker(sf, worker_id, state="online", current_job_id=None, jobs_done=Worker.jobs_done + 1)
    return outcome


def _execute(services: Services, kind: Any, ctx: StoredJobContext, progress: JobProgress, job_id: str,
             worker_id: str) -> RunOutcome:
    try:
        kind.run(ctx)
    except Cancelled:
        return _conclude(services, progress, ctx, job_id, worker_id, "canceled", "canceled at the user's request")
    except AtelierError as exc:
        return _fail(services, progress, ctx, job_id, worker_id, str(exc))
    except MemoryError:
        log.exception("job %s ran out of memory", job_id)
        return _fail(services, progress, ctx, job_id, worker_id,
                     "The worker ran out of memory. Try a smaller size or batch size.")
    except Exception as exc:  # the traceback is for operators; the user gets a sentence
        log.exception("job %s crashed", job_id)
        if "out of memory" in str(exc).lower():
            reason = "The device ran out of memory. Try a smaller size or batch size."
        else:
            reason = (f"The job stopped because of an internal error ({exc.__class__.__name__}). "
                      "The worker log has the details; please report it if it happens again.")
        return _fail(services, progress, ctx, job_id, worker_id, reason)
    return _conclude(services, progress, ctx, job_id, worker_id, "succeeded", "succeeded")


def _conclude(services: Services, progress: JobProgress, ctx: StoredJobContext, job_id: str, worker_id: str,
              status: str, event: str) -> RunOutcome:
    """End a job that stopped normally (succeeded or canceled) unless another worker owns it by now."""
    progress.flush()
    if progress.lease_lost.is_set():
        return RunOutcome("lost")
    repo.finish(services.sessions, job_id, worker_id, status, metrics=_merged(progress, ctx),
                add_notices=ctx.warnings)
    for warning in ctx.warnings:
        repo.add_event(services.sessions, job_id, f"warning: {warning}", level="warning")
    repo.add_event(services.sessions, job_id, event)
    return RunOutcome(status)


def _merged(progress: JobProgress, ctx: StoredJobContext) -> dict[str, Any]:
    latest = progress.latest_metrics()
    latest.update(ctx.metrics)
    return latest


def _fail(services: Services, progress: JobProgress, ctx: StoredJobContext, job_id: str, worker_id: str,
          reason: str) -> RunOutcome:
    progress.flush()
    repo.finish(services.sessions, job_id, worker_id, "failed", error=reason, metrics=_merged(progress, ctx))
    repo.add_event(services.sessions, job_id, f"failed: {reason}", level="error")
    return RunOutcome("failed", reason)
