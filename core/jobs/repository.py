"""Every read and write of job rows.

Each state transition is one guarded ``UPDATE ... WHERE status = ...`` whose row count says whether
this actor won, so two workers (or a worker and a user cancelling) can never both win. Functions take a
``sessionmaker`` and open short transactions of their own: no caller holds a transaction across an
engine step.

Functions that compare with the current time take ``now`` (default: the wall clock), so lease expiry
and re-send periods are tested by passing a later time instead of sleeping.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select, update
from sqlalchemy.orm import Session, joinedload, selectinload, sessionmaker

from core import db
from core.models import TERMINAL_STATUSES, Job, JobEvent, JobFile, JobMetricPoint, Worker, as_utc, utcnow

SessionFactory = sessionmaker[Session]
#: The advisory lock key of the dispatch sweep (any constant; "atelier" in ASCII).
SWEEP_LOCK_KEY = 0x6174656C696572


# -- creating and reading ---------------------------------------------------------------------------
def create_job(sf: SessionFactory, job: Job, files: Sequence[JobFile]) -> Job:
    """Insert a job and its input files in one transaction. The returned job is complete as stored (its
    files attached, every default filled in), so a caller answers with it without reading it back.

    Two Core INSERTs rather than the ORM's unit of work, which was a fifth of a submit's CPU time for
    three rows; the defaults come from the same column definitions the ORM would have used."""
    for f in files:
        f.job_id = job.id
    with sf.begin() as s:  # parameters passed apart from the statement: it is compiled once per process
        s.execute(insert(Job.__table__), [_with_defaults(job)])
        if files:
            s.execute(insert(JobFile.__table__), [_with_defaults(f) for f in files])
    job.files = list(files)
    return job


def _with_defaults(row: Any) -> dict[str, Any]:
    """A new ORM object's column values, its unset columns given their Python-side defaults (set on the
    object too, as a flush would); an unset autoincrement key is left to the database."""
    values = {}
    for column in row.__table__.columns:
        value = getattr(row, column.key)
        if value is None and column.default is not None:
            default = column.default
            value = default.arg(None) if default.is_callable else default.arg  # type: ignore[attr-defined]
            setattr(row, column.key, value)
        if value is None and column.primary_key and column.autoincrement in (True, "auto"):
            continue
        values[column.key] = value
    return values


def get_job(sf: SessionFactory, job_id: str) -> Job | None:
    """One job with its files, in one round trip (a join: a status poll is the most frequent request)."""
    with sf() as s:
        return s.execute(select(Job).options(joinedload(Job.files)).where(Job.id == job_id)).unique().scalar()


def job_by_idempotency_key(sf: SessionFactory, key: str) -> Job | None:
    with sf() as s:
        return s.scalars(select(Job).options(selectinload(Job.files)).where(Job.idempotency_key == key)).first()


#: What :func:`retry` answers for a job whose files retention removed.
FILES_REMOVED = "files-removed"


def retry(sf: SessionFactory, job_id: str) -> str | None:
    """``failed|canceled -> queued`` for another run: attempts start over, the error and the cancel flag
    are cleared; what the job kept in its work directory (a training's checkpoints) is kept. Returns the
    status the job had (the caller tells a 409 from a success by it), None if there is no such job, or
    :data:`FILES_REMOVED` when retention removed its inputs (nothing left to run)."""
    now = utcnow()
    with sf.begin() as s:
        row = s.execute(select(Job.status, Job.artifacts_removed_at).where(Job.id == job_id)).first()
        status = row.status if row else None
        if row is not None and row.artifacts_removed_at is not None:
            return FILES_REMOVED
        if status in ("failed", "canceled"):
            res = s.execute(update(Job).where(Job.id == job_id, Job.status == status, Job.deleted_at.is_(None),
                                              Job.artifacts_removed_at.is_(None))
                            .values(status="queued", attempt=0, error=None, cancel_requested=False,
                                    worker_id=None, lease_expires_at=None, finished_at=None, updated_at=now,
                                    dispatched_at=None)
                            .execution_options(synchronize_session=False))
            if res.rowcount == 1:
                s.add(JobEvent(job_id=job_id, message=f"retried after it {status}: back in the queue"))
        return status


def encode_cursor(job: Job) -> str:
    created = as_utc(job.created_at)
    assert created is not None
    raw = f"{created.isoformat()}|{job.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[dt.datetime, str]:
    """Raise ``ValueError`` on a cursor we did not make."""
    padded = cursor + "=" * (-len(cursor) % 4)
    created, job_id = base64.urlsafe_b64decode(padded.encode()).decode().split("|", 1)
    return dt.datetime.fromisoformat(created), job_id


def search_condition(text: str, kinds: Sequence[str] = ()) -> Any:
    """Jobs a search box's ``text`` finds: a name containing it (any case), an id starting with it, the
    status it names, or a kind whose name or title contains it (``kinds``: the caller resolves titles,
    which live in the kind registry, not in rows). LIKE wildcards in the text are taken literally."""
    needle = text.strip().lower()
    like = needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    conditions = [func.lower(Job.name).like(f"%{like}%", escape="\\"), Job.id.like(f"{like}%", escape="\\"),
                  Job.status == needle, Job.kind.like(f"%{like}%", escape="\\")]
    if kinds:
        conditions.append(Job.kind.in_(list(kinds)))
    return or_(*conditions)


def list_jobs(sf: SessionFactory, *, status: str | None = None, kind: str | None = None,
              limit: int = 20, cursor: str | None = None, search: str | None = None,
              search_kinds: Sequence[str] = (), owner: str | None = None) -> tuple[list[Job], str | None]:
    """Newest first, keyset-paginated on ``(created_at, id)``; returns the page and the next cursor.
    ``search``: see :func:`search_condition`."""
    q = (select(Job).options(selectinload(Job.files)).where(Job.deleted_at.is_(None))
         .order_by(Job.created_at.desc(), Job.id.desc()))
    if owner is not None:  # ``owner``: only that owner's jobs (a non-admin token); deleted jobs are never listed
        q = q.where(Job.owner == owner)
    if status:
        q = q.where(Job.status == status)
    if kind:
        q = q.where(Job.kind == kind)
    if search and search.strip():
        q = q.where(search_condition(search, search_kinds))
    if cursor:
        created, job_id = decode_cursor(cursor)
        created_naive = created.astimezone(dt.timezone.utc)
        q = q.where(or_(Job.created_at < created_naive, and_(Job.created_at == created_naive, Job.id < job_id)))
    with sf() as s:
        rows = list(s.scalars(q.limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (encode_cursor(rows[-1]) if more and rows else None)


def rename_job(sf: SessionFactory, job_id: str, name: str | None) -> bool:
    """Set (or clear, with ``None``) a job's name; False when there is no such job."""
    with sf.begin() as s:
        res = s.execute(update(Job).where(Job.id == job_id).values(name=name)
                        .execution_options(synchronize_session=False))
        return res.rowcount == 1


def count_by_status(sf: SessionFactory, owner: str | None = None) -> dict[str, int]:
    """Jobs per status, deleted ones left out; ``owner``: only that owner's."""
    q = select(Job.status, func.count()).where(Job.deleted_at.is_(None)).group_by(Job.status)
    if owner is not None:
        q = q.where(Job.owner == owner)
    with sf() as s:
        return {st: n for st, n in s.execute(q)}


def mark_deleted(sf: SessionFactory, job_id: str) -> str | None:
    """``deleted_at = now`` for a finished job, one guarded update (a job retried at the same moment is
    either deleted first, and then not retried, or queued first, and then not deleted). Returns the
    job's status (a terminal one: deleted now), ``"deleted"`` if it already was, None if no such job;
    its files are the caller's to remove (:mod:`core.deletion`). The row stays as a tombstone."""
    now = utcnow()
    with sf.begin() as s:
        res = s.execute(update(Job).where(Job.id == job_id, Job.status.in_(TERMINAL_STATUSES),
                                          Job.deleted_at.is_(None))
                        .values(deleted_at=now, updated_at=now, preview_path=None, preview_step=None)
                        .execution_options(synchronize_session=False))
        row = s.execute(select(Job.status, Job.deleted_at).where(Job.id == job_id)).first()
        if row is None:
            return None
        if res.rowcount == 1:
            s.execute(delete(JobFile).where(JobFile.job_id == job_id))
            s.add(JobEvent(job_id=job_id, message="deleted: its inputs, outputs, previews and checkpoints are removed"))
            return row.status
        return "deleted" if row.deleted_at is not None else row.status


def active_jobs(sf: SessionFactory, kinds: Sequence[str]) -> list[Job]:
    """Queued and running jobs of ``kinds`` (to see which datasets/models they reference)."""
    if not kinds:
        return []
    with sf() as s:
        return list(s.scalars(select(Job).where(Job.status.in_(("queued", "running")), Job.kind.in_(list(kinds)))
                              .order_by(Job.created_at)))


# -- claiming and leases ----------------------------------------------------------------------------
def claim(sf: SessionFactory, job_id: str, worker_id: str, lease_seconds: float, *,
          now: dt.datetime | None = None, started_event: str | None = None) -> bool:
    """Take the job for ``worker_id`` if it is queued, or running under an expired lease (its worker is
    gone). Each is one guarded UPDATE, so exactly one claimant wins; taking over from a gone worker
    writes the same "attempt ended" event as the monitor's recovery, so every attempt's end is on the
    job page whichever comes first (a re-delivered message or the monitor).

    ``started_event``: when the claim wins, the same transaction also marks the worker busy with the job
    and records this event (one commit where a job's start used to take three)."""
    now = now or utcnow()
    values = dict(status="running", worker_id=worker_id, lease_expires_at=now + dt.timedelta(seconds=lease_seconds),
                  attempt=Job.attempt + 1, started_at=func.coalesce(Job.started_at, now), updated_at=now, error=None)
    claimable = (Job.id == job_id, Job.cancel_requested.is_(False), Job.attempt < Job.max_attempts)
    with sf.begin() as s:
        res = s.execute(update(Job).where(*claimable, Job.status == "queued").values(**values)
                        .execution_options(synchronize_session=False))
        if res.rowcount != 1:
            res = s.execute(update(Job).where(*claimable, Job.status == "running", Job.lease_expires_at < now)
                            .values(**values).execution_options(synchronize_session=False))
            if res.rowcount != 1:
                return False
            attempt, max_attempts = s.execute(select(Job.attempt, Job.max_attempts).where(Job.id == job_id)).one()
            s.add(JobEvent(job_id=job_id, level="warning",
                           message=f"attempt {attempt - 1} of {max_attempts} ended: its worker stopped responding; "
                                   f"{worker_id} took the job over"))
        if started_event is not None:
            s.execute(_touch(worker_id, now, state="busy", current_job_id=job_id))
            s.add(_event(job_id, started_event))
        return True


def renew_lease(sf: SessionFactory, job_id: str, worker_id: str, lease_seconds: float, *,
                now: dt.datetime | None = None) -> tuple[bool, bool]:
    """Extend the lease. Returns ``(still_ours, cancel_requested)``."""
    now = now or utcnow()
    with sf.begin() as s:
        res = s.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == "running", Job.worker_id == worker_id)
            .values(lease_expires_at=now + dt.timedelta(seconds=lease_seconds))
            .execution_options(synchronize_session=False)
        )
        if res.rowcount != 1:
            return False, False
        return True, bool(s.scalar(select(Job.cancel_requested).where(Job.id == job_id)))


def is_cancel_requested(sf: SessionFactory, job_id: str) -> bool:
    with sf() as s:
        return bool(s.scalar(select(Job.cancel_requested).where(Job.id == job_id)))


def update_progress(sf: SessionFactory, job_id: str, worker_id: str, *, step: int, total: int,
                    metrics: Mapping[str, Any] | None = None,
                    points: Iterable[tuple[str, int, float]] = (), replace_from: int | None = None) -> bool:
    """Write progress (and buffered metric points) if the job is still ours.

    ``replace_from``: first drop this job's points at that step and later. An attempt that starts over
    (from zero, or from a checkpoint) passes its first step, so the plots show the run that counts and
    not, twice, the steps a dead worker had done past its last checkpoint.
    """
    now = utcnow()
    values: dict[str, Any] = {"step": step, "total_steps": total, "updated_at": now,
                              "progress": min(1.0, step / total) if total else 0.0}
    if metrics is not None:
        values["metrics"] = dict(metrics)
    with sf.begin() as s:
        res = s.execute(update(Job).where(Job.id == job_id, Job.status == "running", Job.worker_id == worker_id)
                        .values(**values).execution_options(synchronize_session=False))
        if res.rowcount != 1:
            return False
        if replace_from is not None:
            s.execute(delete(JobMetricPoint).where(JobMetricPoint.job_id == job_id,
                                                   JobMetricPoint.step >= replace_from))
        rows = [{"job_id": job_id, "name": n, "step": st, "value": v} for n, st, v in points]
        if rows:
            s.execute(JobMetricPoint.__table__.insert(), rows)
        return True


def set_preview(sf: SessionFactory, job_id: str, key: str, step: int) -> None:
    with sf.begin() as s:
        s.execute(update(Job).where(Job.id == job_id).values(preview_path=key, preview_step=step)
                  .execution_options(synchronize_session=False))


def finish(sf: SessionFactory, job_id: str, worker_id: str, status: str, *, error: str | None = None,
           metrics: Mapping[str, Any] | None = None, add_notices: Sequence[str] = (),
           events: Sequence[tuple[str, str]] = ()) -> bool:
    """``running -> succeeded|failed|canceled``, only by the worker that holds the job. ``add_notices``
    are appended to the job's notices (warnings found while it ran). ``events``: ``(level, message)``
    rows recorded in the same transaction (the job's last words, in one commit)."""
    assert status in ("succeeded", "failed", "canceled")
    now = utcnow()
    values: dict[str, Any] = {"status": status, "error": error, "finished_at": now, "updated_at": now,
                              "lease_expires_at": None}
    if status == "succeeded":
        values["progress"] = 1.0
    if metrics is not None:
        values["metrics"] = dict(metrics)
    with sf.begin() as s:
        if add_notices:
            current = s.scalar(select(Job.notices).where(Job.id == job_id)) or []
            values["notices"] = [*current, *(n for n in add_notices if n not in current)]
        res = s.execute(update(Job).where(Job.id == job_id, Job.status == "running", Job.worker_id == worker_id)
                        .values(**values).execution_options(synchronize_session=False))
        for level, message in events:
            s.add(_event(job_id, message, level))
        return res.rowcount == 1


def fail_unclaimable(sf: SessionFactory, job_id: str, reason: str) -> bool:
    """Fail a queued job that can never run (e.g. unknown kind after a downgrade)."""
    now = utcnow()
    with sf.begin() as s:
        res = s.execute(update(Job).where(Job.id == job_id, Job.status == "queued")
                        .values(status="failed", error=reason, finished_at=now, updated_at=now)
                        .execution_options(synchronize_session=False))
        return res.rowcount == 1


def request_cancel(sf: SessionFactory, job_id: str) -> str | None:
    """Cancel a job: a queued one at once; a running one is flagged and its worker stops within a step.
    Returns the resulting status, or ``None`` if there is no such job."""
    now = utcnow()
    with sf.begin() as s:
        res = s.execute(update(Job).where(Job.id == job_id, Job.status == "queued")
                        .values(status="canceled", cancel_requested=True, finished_at=now, updated_at=now)
                        .execution_options(synchronize_session=False))
        if res.rowcount == 1:
            return "canceled"
        s.execute(update(Job).where(Job.id == job_id, Job.status == "running")
                  .values(cancel_requested=True, updated_at=now).execution_options(synchronize_session=False))
        return s.scalar(select(Job.status).where(Job.id == job_id))


def cancel_abandoned(sf: SessionFactory, job_id: str, *, now: dt.datetime | None = None) -> bool:
    """A running job whose cancel was requested but whose worker is gone (lease expired): cancel it."""
    now = now or utcnow()
    with sf.begin() as s:
        res = s.execute(update(Job).where(Job.id == job_id, Job.status == "running", Job.cancel_requested.is_(True),
                                          Job.lease_expires_at < now)
                        .values(status="canceled", finished_at=now, updated_at=now, lease_expires_at=None)
                        .execution_options(synchronize_session=False))
        return res.rowcount == 1


def recover_expired(sf: SessionFactory, *, now: dt.datetime | None = None) -> tuple[list[str], list[str]]:
    """Find running jobs whose lease expired (their worker died). Jobs with attempts left go back to
    ``queued`` (the caller re-sends their message); the rest fail with a reason. Returns
    ``(requeued_ids, failed_ids)``."""
    now = now or utcnow()
    requeued: list[str] = []
    failed: list[str] = []
    with sf() as s:
        expired = list(s.execute(select(Job.id, Job.attempt, Job.max_attempts, Job.cancel_requested)
                                 .where(Job.status == "running", Job.lease_expires_at < now)))
    for job_id, attempt, max_attempts, cancel_requested in expired:
        if cancel_requested:
            cancel_abandoned(sf, job_id, now=now)
            continue
        with sf.begin() as s:
            if attempt >= max_attempts:
                res = s.execute(update(Job).where(Job.id == job_id, Job.status == "running", Job.lease_expires_at < now)
                                .values(status="failed", finished_at=now, updated_at=now, lease_expires_at=None,
                                        error=f"The worker running this job stopped responding {attempt} times; "
                                              "giving up. Try a smaller size or fewer steps, or check the workers.")
                                .execution_options(synchronize_session=False))
                if res.rowcount == 1:
                    failed.append(job_id)
                    s.add(JobEvent(job_id=job_id, level="error",
                                   message=f"attempt {attempt} of {max_attempts} ended: its worker stopped responding; "
                                           "no attempts are left, so the job failed"))
            else:
                res = s.execute(update(Job).where(Job.id == job_id, Job.status == "running", Job.lease_expires_at < now)
                                .values(status="queued", worker_id=None, lease_expires_at=None, updated_at=now)
                                .execution_options(synchronize_session=False))
                if res.rowcount == 1:
                    requeued.append(job_id)
                    s.add(JobEvent(job_id=job_id, level="warning",
                                   message=f"attempt {attempt} of {max_attempts} ended: its worker stopped responding; "
                                           "the job is back in the queue"))
    return requeued, failed


# -- dispatch bookkeeping (see worker.dispatch) ----------------------------------------------------
def claim_dispatch(sf: SessionFactory, job_id: str, *, sent_before: dt.datetime | None,
                   now: dt.datetime | None = None) -> bool:
    """Take the right to (re-)send a queued job's message: one guarded UPDATE, so of several monitors
    looking at the same job exactly one sends. ``sent_before``: only if its last message is older than
    that (None: only if it was never sent)."""
    now = now or utcnow()
    last = Job.dispatched_at.is_(None) if sent_before is None else or_(Job.dispatched_at.is_(None),
                                                                        Job.dispatched_at < sent_before)
    with sf.begin() as s:
        res = s.execute(update(Job).where(Job.id == job_id, Job.status == "queued", last)
                        .values(dispatched_at=now, dispatch_count=Job.dispatch_count + 1)
                        .execution_options(synchronize_session=False))
        return res.rowcount == 1


def forget_dispatch(sf: SessionFactory, job_id: str) -> None:
    """Undo a :func:`claim_dispatch` whose message could not be sent (the job counts as never sent)."""
    with sf.begin() as s:
        s.execute(update(Job).where(Job.id == job_id, Job.status == "queued")
                  .values(dispatched_at=None, dispatch_count=Job.dispatch_count - 1)
                  .execution_options(synchronize_session=False))


def sweep_lock(sf: SessionFactory) -> contextlib.AbstractContextManager[bool]:
    """One dispatch sweep at a time across all workers (yields False when another monitor holds it)."""
    return db.advisory_lock(sf.kw["bind"], SWEEP_LOCK_KEY)


def never_dispatched(sf: SessionFactory, *, created_before: dt.datetime, limit: int = 500) -> list[str]:
    """Queued jobs whose message could not be sent at all (the broker was down at submit)."""
    with sf() as s:
        return list(s.scalars(select(Job.id).where(Job.status == "queued", Job.dispatched_at.is_(None),
                                                   Job.created_at < created_before)
                              .order_by(Job.created_at).limit(limit)))


def dispatched_queued(sf: SessionFactory, *, sent_before: dt.datetime, limit: int) -> list[str]:
    """Queued jobs whose newest message is older than ``sent_before``, oldest first (FIFO queues serve
    the oldest messages first, so these are the ones most likely to have lost theirs)."""
    with sf() as s:
        return list(s.scalars(select(Job.id).where(Job.status == "queued", Job.dispatched_at < sent_before)
                              .order_by(Job.dispatched_at, Job.id).limit(limit)))


def count_dispatched_queued(sf: SessionFactory, *, sent_before: dt.datetime) -> int:
    with sf() as s:
        return int(s.scalar(select(func.count()).select_from(Job)
                            .where(Job.status == "queued", Job.dispatched_at < sent_before)) or 0)


# -- files, metrics and events ----------------------------------------------------------------------
def put_output(sf: SessionFactory, job_id: str, *, role: str, name: str, key: str, content_type: str,
               size: int, sha256: str) -> None:
    """Attach an output file, replacing an earlier attempt's file of the same name."""
    with sf.begin() as s:
        s.execute(delete(JobFile).where(JobFile.job_id == job_id, JobFile.direction == "output", JobFile.name == name))
        s.add(JobFile(job_id=job_id, direction="output", role=role, name=name, path=key,
                      content_type=content_type, size=size, sha256=sha256))


def metric_series(sf: SessionFactory, job_id: str, max_points: int = 2000) -> dict[str, list[list[float]]]:
    """``{name: [[step, value], ...]}``, evenly thinned to at most ``max_points`` per series."""
    with sf() as s:
        rows = s.execute(select(JobMetricPoint.name, JobMetricPoint.step, JobMetricPoint.value)
                         .where(JobMetricPoint.job_id == job_id).order_by(JobMetricPoint.name, JobMetricPoint.step,
                                                                           JobMetricPoint.id))
        series: dict[str, list[list[float]]] = {}
        for name, step, value in rows:
            series.setdefault(name, []).append([step, value])
    for name, pts in series.items():
        if len(pts) > max_points:
            stride = len(pts) / max_points
            series[name] = [pts[int(i * stride)] for i in range(max_points - 1)] + [pts[-1]]
    return series


def add_event(sf: SessionFactory, job_id: str, message: str, level: str = "info") -> None:
    with sf.begin() as s:
        s.add(_event(job_id, message, level))


def _event(job_id: str, message: str, level: str = "info") -> JobEvent:
    """An event row for a job, its message cut to what a page shows (4,000 characters)."""
    return JobEvent(job_id=job_id, message=message[:4000], level=level)


def events(sf: SessionFactory, job_id: str, limit: int = 200) -> list[JobEvent]:
    with sf() as s:
        rows = list(s.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id.desc()).limit(limit)))
    return rows[::-1]


# -- workers ----------------------------------------------------------------------------------------
def register_worker(sf: SessionFactory, worker: Worker) -> None:
    with sf.begin() as s:
        s.merge(worker)


def touch_worker(sf: SessionFactory, worker_id: str, **values: Any) -> None:
    with sf.begin() as s:
        s.execute(_touch(worker_id, utcnow(), **values))


def _touch(worker_id: str, now: dt.datetime, **values: Any) -> Any:
    """The UPDATE that marks a worker seen at ``now`` (and sets ``values``)."""
    return (update(Worker).where(Worker.id == worker_id).values(last_seen_at=now, **values)
            .execution_options(synchronize_session=False))


def list_workers(sf: SessionFactory) -> list[Worker]:
    with sf() as s:
        return list(s.scalars(select(Worker).order_by(Worker.last_seen_at.desc())))


def _of_node(column: Any, node: str) -> Any:
    """``worker_id`` is the node itself or one of its processes (``<node>:<pid>``)."""
    return or_(column == node, column.startswith(node + ":", autoescape=True))


def stop_node_workers(sf: SessionFactory, node: str) -> None:
    """Mark every process row of a node that is shutting down as stopped."""
    with sf.begin() as s:
        s.execute(update(Worker).where(_of_node(Worker.id, node), Worker.state != "stopped")
                  .values(state="stopped", current_job_id=None, last_seen_at=utcnow())
                  .execution_options(synchronize_session=False))


def release_worker_jobs(sf: SessionFactory, worker_id: str) -> list[str]:
    """A worker (a node: all of its processes; or one process) shutting down hands its running jobs back
    to the queue at once instead of making them wait for the lease to expire. The interrupted attempt is
    not counted against the job, and each job's events say so."""
    now = utcnow()
    with sf.begin() as s:
        ids = list(s.scalars(select(Job.id).where(Job.status == "running", _of_node(Job.worker_id, worker_id))))
        if ids:
            s.execute(update(Job).where(Job.id.in_(ids), Job.status == "running", _of_node(Job.worker_id, worker_id))
                      .values(status="queued", worker_id=None, lease_expires_at=None, updated_at=now,
                              attempt=func.max(Job.attempt - 1, 0) if s.bind.dialect.name == "sqlite"
                              else func.greatest(Job.attempt - 1, 0))
                      .execution_options(synchronize_session=False))
            for job_id in ids:
                s.add(JobEvent(job_id=job_id, level="warning",
                               message=f"{worker_id} stopped; the job is back in the queue (this attempt is not "
                                       "counted)"))
        return ids
