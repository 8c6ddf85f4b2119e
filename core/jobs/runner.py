"""Run one job: claim it, keep its lease alive, call its kind, store the outcome.

Called by the Celery task with only a job id: everything else comes from the row. A duplicate or late
message finds the job already claimed or finished and does nothing. Bad input or a job that cannot run
ends as ``failed`` with a reason for the user; the traceback goes to the log; the worker lives on.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.engines.progress import Cancelled, TimeLimitExceeded
from core.errors import AtelierError, JobFailure
from core.jobs import repository as repo
from core.jobs.progress import RETRY_FIRST_SECONDS, RETRY_MAX_SECONDS, TRANSIENT_DB_ERRORS, JobProgress
from core.kinds.context import InputFile, JobContext
from core.kinds.registry import get_kind
from core.logging_setup import bind_attempt, job_log_context
from core.models import TERMINAL_STATUSES, Worker
from core.services import Services
from core.storage import WorkDir
from core.webhooks import WebhookEmitter

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


@dataclass(frozen=True)
class StoredInput:
    """An input row of the job: where it is in storage (see :attr:`StoredJobContext.inputs`)."""

    role: str
    name: str
    content_type: str
    key: str


class StoredJobContext(JobContext):
    """A :class:`JobContext` over the job row and storage.

    Files reach the engines as local paths, fetched through the storage interface when first asked for:
    inputs, datasets and models are local copies (the stored files themselves on the local backend,
    downloads into this host's scratch space on an object store) that live until :meth:`close`; the work
    directory is a :class:`core.storage.WorkDir` restored from storage, so an attempt on another host
    continues from the checkpoints an earlier attempt synced (:meth:`persist_work`)."""

    def __init__(self, services: Services, job_id: str, params: Mapping[str, Any], inputs: list[StoredInput],
                 progress: JobProgress, owner: str | None = None) -> None:
        self.services = services
        self.owner = owner  # written on what the job registers (a trained model), like on the job itself
        self.job_id = job_id
        self.params = params
        self.stored_inputs = inputs
        self.progress = progress
        self.settings = services.settings
        self.device = services.settings.device
        self.metrics: dict[str, Any] = {}
        self.warnings = []
        self._copies = contextlib.ExitStack()
        self._inputs: list[InputFile] | None = None
        self._work: WorkDir | None = None

    @property
    def inputs(self) -> list[InputFile]:  # type: ignore[override]
        if self._inputs is None:
            local = []
            storage, scratch = self.services.storage, self.services.scratch_dir
            for f in self.stored_inputs:
                try:
                    path = self._copies.enter_context(storage.local_copy(f.key, scratch))
                except FileNotFoundError:
                    raise JobFailure(f"The input {f.name} is gone from storage (removed by retention or by hand); "
                                     "submit the job again with its files.") from None
                local.append(InputFile(role=f.role, name=f.name, content_type=f.content_type, path=path))
            self._inputs = local
        return self._inputs

    @property
    def work_dir(self) -> Path:  # type: ignore[override]
        if self._work is None:
            work = self.services.storage.work_dir(f"jobs/{self.job_id}/work", self.services.scratch_dir / "work")
            work.restore()
            self._work = work
        return self._work.path

    def persist_work(self, relative: str = "") -> None:
        self.work_dir  # noqa: B018 - restored first, so a sync never removes what an earlier attempt stored
        assert self._work is not None
        self._work.sync(relative)

    def close(self) -> None:
        """Remove this attempt's local copies and scratch work directory (stored files stay)."""
        self._copies.close()
        if self._work is not None:
            self._work.close()

    def save_output(self, name: str, data: bytes, content_type: str) -> None:
        name = safe_filename(name, "output")
        key = f"jobs/{self.job_id}/outputs/{name}"
        obj = self.services.storage.put_bytes(key, data)
        _retrying(self.services, self.job_id, f"storing output {name}", lambda: repo.put_output(
            self.services.sessions, self.job_id, role="output", name=name, key=key, content_type=content_type,
            size=obj.size, sha256=obj.sha256))
        self.progress.emit("output", name, content_type, obj.size, obj.sha256)

    def set_metrics(self, metrics: Mapping[str, Any]) -> None:
        self.metrics.update(metrics)

    def resource_path(self, table: str, resource_id: str) -> Path:
        from core import resources

        return _retrying(self.services, self.job_id, f"looking up {table} {resource_id}",
                         lambda: self._copies.enter_context(resources.local_copy(self.services, table, resource_id)))

    def register_model(self, name: str, kind: str, source_dir: Path, meta: Mapping[str, Any]) -> str:
        from core import resources

        model = _retrying(self.services, self.job_id, "registering the model", lambda: resources.add_model(
            self.services, name=name, family=kind, source_dir=source_dir, meta=meta, source_job_id=self.job_id,
            owner=self.owner))
        return model.id


def _retrying(services: Services, job_id: str, what: str, fn: Callable[[], Any]) -> Any:
    """A database operation a running job needs before it can go on (storing an output, registering a
    model): through a transient outage it is retried with backoff for up to the lease, so a short
    outage does not fail the job."""
    deadline = time.monotonic() + services.settings.lease_seconds
    delay = RETRY_FIRST_SECONDS
    while True:
        try:
            return fn()
        except TRANSIENT_DB_ERRORS as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("job %s: %s failed (%s); retrying in %.1f s", job_id, what, exc.__class__.__name__, delay)
            time.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_SECONDS)


class _Heartbeat(threading.Thread):
    """Renews the lease every ``period`` seconds; notices cancellation and a lost lease."""

    def __init__(self, services: Services, job_id: str, worker_id: str, progress: JobProgress) -> None:
        super().__init__(name=f"lease-{job_id[:8]}", daemon=True)
        self.services, self.job_id, self.worker_id, self.progress = services, job_id, worker_id, progress
        self.stopped = threading.Event()
        self._log_context = contextvars.copy_context()  # its log lines carry the job id and attempt

    def run(self) -> None:
        self._log_context.run(self._beat)

    def _beat(self) -> None:
        s = self.services.settings
        while not self.stopped.wait(s.heartbeat_seconds):
            try:
                ours, cancel = repo.renew_lease(self.services.sessions, self.job_id, self.worker_id, s.lease_seconds)
            except TRANSIENT_DB_ERRORS as exc:  # the database is away: the next beat retries
                log.warning("job %s: lease renewal failed (%s); retrying", self.job_id, exc.__class__.__name__)
                continue
            except Exception:  # a bug must not end the job either, but it needs its traceback
                log.exception("job %s: lease renewal failed", self.job_id)
                continue
            if not ours:
                if self.stopped.is_set():  # the job just ended and its row moved on: nothing happened
                    return
                job = repo.get_job(self.services.sessions, self.job_id)
                if job is not None and job.status in TERMINAL_STATUSES:
                    return  # the same race, seen before the runner stopped this thread
                log.warning("job %s: lease lost; another worker owns it now", self.job_id)
                self.progress.lease_lost.set()
                return
            if cancel:
                self.progress.cancel_seen.set()


def run_job(services: Services, job_id: str, worker_id: str) -> RunOutcome:
    """Run the job; every log line written meanwhile (ours, the engine's, a library's) carries its id,
    attempt and worker (:mod:`core.logging_setup`)."""
    with job_log_context(job_id, worker=worker_id):
        return _run_job(services, job_id, worker_id)


def _run_job(services: Services, job_id: str, worker_id: str) -> RunOutcome:
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
    if not repo.claim(sf, job_id, worker_id, settings.lease_seconds,
                      started_event=f"attempt {job.attempt + 1} started on {worker_id}"):
        log.info("job %s: not claimable (status %s); message ignored", job_id, job.status)
        return RunOutcome("skipped")
    bind_attempt(job.attempt + 1)

    progress = JobProgress(services, job_id, worker_id, preview_every=settings.preview_every,
                           interval=settings.progress_interval,
                           time_limit=settings.time_limits.get(kind.name, kind.time_limit_s))
    inputs = [StoredInput(role=f.role, name=f.name, content_type=f.content_type, key=f.path)
              for f in job.files if f.direction == "input"]
    ctx = StoredJobContext(services, job_id, job.params, inputs, progress, owner=job.owner)
    heartbeat = _Heartbeat(services, job_id, worker_id, progress)
    heartbeat.start()
    if job.webhook:  # rows for the job's webhook (start, progress, output); the worker node sends them
        progress.webhooks = WebhookEmitter(services, job)
        progress.emit("start", job.attempt + 1, worker_id)
    try:
        outcome = _execute(services, kind, ctx, progress, job_id, worker_id)
    finally:
        heartbeat.stopped.set()
        heartbeat.join(timeout=5)
        ctx.close()
        repo.touch_worker(sf, worker_id, state="online", current_job_id=None, jobs_done=Worker.jobs_done + 1)
    return outcome


def _execute(services: Services, kind: Any, ctx: StoredJobContext, progress: JobProgress, job_id: str,
             worker_id: str) -> RunOutcome:
    started = time.perf_counter()
    try:
        kind.run(ctx)
        # The kind's own wall time: what the job computed, as opposed to what the queue and the job
        # bookkeeping cost around it (bench/queue_bench.py subtracts it from submit -> finished).
        ctx.metrics["run_seconds"] = round(time.perf_counter() - started, 4)
    except TimeLimitExceeded:
        limit = _duration(progress.time_limit or 0)
        return _fail(services, progress, ctx, job_id, worker_id,
                     f"Time limit exceeded: the job ran for more than {limit}, the limit for {kind.title.lower()} "
                     "jobs on this service. Try a smaller size or fewer steps"
                     f"{'; a retry continues from the newest checkpoint' if kind.name.endswith('_train') else ''}.")
    except Cancelled:
        return _conclude(services, progress, ctx, job_id, worker_id, "canceled", "canceled at the user's request")
    except AtelierError as exc:
        return _fail(services, progress, ctx, job_id, worker_id, str(exc))
    except Exception as exc:  # the traceback is for operators; the user gets a sentence
        if _is_out_of_memory(exc):
            log.exception("job %s ran out of memory", job_id)
            return _fail(services, progress, ctx, job_id, worker_id, _out_of_memory_reason(exc, ctx.params))
        log.exception("job %s crashed", job_id)
        reason = (f"The job stopped because of an internal error ({exc.__class__.__name__}). "
                  "The worker log has the details; please report it if it happens again.")
        return _fail(services, progress, ctx, job_id, worker_id, reason)
    outcome = _conclude(services, progress, ctx, job_id, worker_id, "succeeded", "succeeded")
    if outcome.status == "succeeded":
        _record_speed(services, kind.name, ctx, progress, worker_id)
    return outcome


def _record_speed(services: Services, kind_name: str, ctx: StoredJobContext, progress: JobProgress,
                  worker_id: str) -> None:
    """The steady speed and fixed overhead of this attempt, for the next estimates (:mod:`core.estimates`).
    Best effort: an estimate is never worth a job."""
    from core import estimates

    rate = progress.rate.steady_rate()
    if rate is None:
        return
    steps = (progress.latest_step() or 0)
    overhead = max(0.0, (progress.clock() - progress.rate.started) - steps / rate)
    device = str(_merged(progress, ctx).get("device") or ctx.device or "cpu")
    if device == "auto":
        torch = sys.modules.get("torch")
        device = "cuda" if torch is not None and torch.cuda.is_available() else "cpu"
    try:
        estimates.record_speed(services.sessions, worker_id, kind_name, device, ctx.params, rate, overhead)
    except Exception:
        log.warning("job %s: could not record the measured speed", ctx.job_id, exc_info=True)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def _is_out_of_memory(exc: BaseException) -> bool:
    """Host memory (``MemoryError``) or a device's (``torch.OutOfMemoryError``, CUDA's included), told
    apart by type. torch is looked up only if the job already loaded it: this module stays torch-free."""
    if isinstance(exc, MemoryError):
        return True
    torch = sys.modules.get("torch")
    oom = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    return oom is not None and isinstance(exc, oom)


def _out_of_memory_reason(exc: BaseException, params: Mapping[str, Any]) -> str:
    where = "the worker's memory" if isinstance(exc, MemoryError) else "the device's memory"
    size = params.get("size")
    at = f" at size {size}" if isinstance(size, int) else ""
    return (f"The job ran out of {where}{at}. Try a smaller size"
            f"{' (or a smaller batch size)' if 'batch_size' in params else ''}.")


def _durably(services: Services, progress: JobProgress, what: str, fn: Callable[[], Any]) -> bool:
    """Run a job's final writes, waiting out a database outage shorter than the lease (the heartbeat
    keeps renewing it meanwhile) so that the attempt is not lost. False if it never got through."""
    deadline = time.monotonic() + services.settings.lease_seconds
    delay = RETRY_FIRST_SECONDS
    while True:
        progress.flush()
        try:
            if progress.database_ok:
                fn()
                return True
        except TRANSIENT_DB_ERRORS as exc:
            log.warning("job %s: %s failed (%s); retrying", progress.job_id, what, exc.__class__.__name__)
        if progress.lease_lost.is_set() or time.monotonic() + delay > deadline:
            log.error("job %s: could not record %s before the lease ran out", progress.job_id, what)
            return False
        time.sleep(delay)
        delay = min(delay * 2, RETRY_MAX_SECONDS)


def _conclude(services: Services, progress: JobProgress, ctx: StoredJobContext, job_id: str, worker_id: str,
              status: str, event: str) -> RunOutcome:
    """End a job that stopped normally (succeeded or canceled) unless another worker owns it by now."""
    def record() -> None:
        if progress.lease_lost.is_set():
            return
        repo.finish(services.sessions, job_id, worker_id, status, metrics=_merged(progress, ctx),
                    add_notices=ctx.warnings,
                    events=[*(("warning", f"warning: {w}") for w in ctx.warnings), ("info", event)])

    if not _durably(services, progress, f"the end of the job ({status})", record) or progress.lease_lost.is_set():
        _note_lost(services, job_id, worker_id)
        return RunOutcome("lost")
    return RunOutcome(status)


def _note_lost(services: Services, job_id: str, worker_id: str) -> None:
    """Every way an attempt ends leaves an event: this one lost its lease to another worker."""
    try:
        repo.add_event(services.sessions, job_id, f"the attempt on {worker_id} stopped: it lost its lease "
                       "(another worker took the job over, or the database was away for longer than the lease)",
                       level="warning")
    except Exception:
        log.warning("job %s: could not record the lost lease", job_id, exc_info=True)


def _merged(progress: JobProgress, ctx: StoredJobContext) -> dict[str, Any]:
    latest = progress.latest_metrics()
    latest.update(ctx.metrics)
    return latest


def _fail(services: Services, progress: JobProgress, ctx: StoredJobContext, job_id: str, worker_id: str,
          reason: str) -> RunOutcome:
    def record() -> None:
        repo.finish(services.sessions, job_id, worker_id, "failed", error=reason, metrics=_merged(progress, ctx),
                    events=[("error", f"failed: {reason}")])

    if not _durably(services, progress, "the failure", record):
        _note_lost(services, job_id, worker_id)
        return RunOutcome("lost", reason)
    return RunOutcome("failed", reason)
