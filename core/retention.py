"""Retention: ``atelier gc`` and the periodic run in a worker's monitor.

What goes (and nothing else):

- **finished jobs' files**: every key under ``jobs/<id>/`` of a job that succeeded, failed or was
  canceled before the cut-off (``finished_at`` older than ``--older-than``). The row stays, with
  ``artifacts_removed_at`` set (the job page says so); it is marked with a guarded update *before* the
  files go, so a job that is not finished any more is never touched.
- **orphans**: ``jobs/<id>/``, ``datasets/<id>/`` and ``models/<id>/`` prefixes with no row (a crash
  between storing files and inserting the row, rows removed by hand). Rows are written after their
  files, so an orphan must also be older than :data:`ORPHAN_GRACE`: a submission or registration in
  progress is never mistaken for one.
- **stale uploads**: files a form kept across a validation error (:mod:`core.uploads`) that no
  submission took up within :data:`core.uploads.KEEP_SECONDS`.
- **stale temporary files**: the local backend's ``.<name>.<random>.tmp`` files of atomic writes that a
  crash interrupted, an object store's incomplete multipart uploads, and this host's scratch
  directories (uploads being ingested, local copies) left by a killed process; all older than the grace
  (scratch: older than :data:`SCRATCH_GRACE` as well, longer than any job may run).

What is protected: a queued or running job is never "finished", so its inputs, previews and checkpoints
stay; registered datasets and models are removed only with their rows (``DELETE``), never by age, so one
a queued job references is always there. A dry run reports the same plan and changes nothing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import func, select, update

from core import db, uploads
from core.models import TERMINAL_STATUSES, Dataset, Job, Model, as_utc, utcnow
from core.services import Services
from core.storage.base import ObjectInfo

log = logging.getLogger(__name__)

#: An unregistered prefix or a temporary file younger than this may belong to a write in progress.
ORPHAN_GRACE = dt.timedelta(hours=1)
#: Scratch directories are local copies of running jobs too: kept longer than any job may run (48 h).
SCRATCH_GRACE = dt.timedelta(days=3)
#: A PostgreSQL advisory lock key of its own ("atelier gc"), so one monitor collects at a time and the
#: dispatch sweep is never held up by it.
GC_LOCK_KEY = 0x6174_6763
#: The top-level prefixes whose second part is a row id.
ROW_PREFIXES = {"jobs": Job, "datasets": Dataset, "models": Model}


@dataclass
class Removal:
    what: str  # "job files" | "orphan" | "temporary file" | "incomplete upload" | "stale upload" | "scratch"
    target: str  # a key prefix, a key, or a local path
    size: int = 0
    objects: int = 0
    job_id: str | None = None
    upload_id: str | None = None  # for incomplete multipart uploads


@dataclass
class GcReport:
    cutoff: dt.datetime
    dry_run: bool
    removals: list[Removal] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return sum(r.size for r in self.removals)

    def of(self, what: str) -> list[Removal]:
        return [r for r in self.removals if r.what == what]

    def lines(self) -> list[str]:
        verb = "would remove" if self.dry_run else "removed"
        out = [f"{verb} {r.what}: {r.target} ({r.objects} object{'s' if r.objects != 1 else ''}, {_size(r.size)})"
               for r in self.removals]
        out.append(f"{'dry run: ' if self.dry_run else ''}{len(self.removals)} item(s), {_size(self.bytes)} "
                   f"{verb} (finished before {self.cutoff:%Y-%m-%d %H:%M:%S} UTC)")
        return out


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"  # pragma: no cover


def _group(infos: Iterator[ObjectInfo]) -> dict[str, list[ObjectInfo]]:
    """Objects by their ``<top>/<id>`` prefix (only under :data:`ROW_PREFIXES`)."""
    groups: dict[str, list[ObjectInfo]] = {}
    for info in infos:
        parts = info.key.split("/")
        if len(parts) >= 3 and parts[0] in ROW_PREFIXES:
            groups.setdefault(f"{parts[0]}/{parts[1]}", []).append(info)
    return groups


def _is_temp(key: str) -> bool:
    name = key.rsplit("/", 1)[-1]
    return name.startswith(".") and name.endswith(".tmp")


def collect(services: Services, older_than: dt.timedelta, *, dry_run: bool = False,
            now: dt.datetime | None = None, grace: dt.timedelta = ORPHAN_GRACE) -> GcReport:
    """Plan (and unless ``dry_run``, carry out) one retention run; see the module docstring."""
    now = now or utcnow()
    report = GcReport(cutoff=now - older_than, dry_run=dry_run)
    storage, sf = services.storage, services.sessions

    # 1. finished jobs' files
    with sf() as s:
        finished = list(s.execute(
            select(Job.id).where(Job.status.in_(TERMINAL_STATUSES), Job.finished_at < report.cutoff,
                                 Job.artifacts_removed_at.is_(None), Job.deleted_at.is_(None))
            .order_by(Job.finished_at)).scalars())
    for job_id in finished:
        objects = list(storage.list(f"jobs/{job_id}"))
        if not dry_run:
            with sf.begin() as s:  # guarded: only a job that is still finished (a retry may have won)
                res = s.execute(update(Job).where(Job.id == job_id, Job.status.in_(TERMINAL_STATUSES),
                                                  Job.artifacts_removed_at.is_(None))
                                .values(artifacts_removed_at=now).execution_options(synchronize_session=False))
            if res.rowcount != 1:
                continue
            storage.delete_prefix(f"jobs/{job_id}")
        if objects or not dry_run:
            report.removals.append(Removal("job files", f"jobs/{job_id}", sum(o.size for o in objects), len(objects),
                                           job_id=job_id))

    # 2. orphans and 3a. temporary files in storage (one listing of the store)
    listing = list(storage.list())
    temps = [info for info in listing if _is_temp(info.key)]
    groups = _group(info for info in listing if not _is_temp(info.key))
    known = _known_ids(services, {p.split("/")[0] for p in groups})
    young = now - grace
    for prefix, objects in sorted(groups.items()):
        top, row_id = prefix.split("/")
        if row_id in known.get(top, set()):
            continue
        if max(as_utc(o.modified) for o in objects) > young:  # a write in progress, or just done
            continue
        if not dry_run:
            with _rows_locked(services, top, row_id) as still_orphan:
                if not still_orphan:
                    continue
                storage.delete_prefix(prefix)
        report.removals.append(Removal("orphan", prefix, sum(o.size for o in objects), len(objects)))
    for info in temps:
        if as_utc(info.modified) <= young:
            if not dry_run:
                storage.delete(info.key)
            report.removals.append(Removal("temporary file", info.key, info.size, 1))

    # 3b. incomplete multipart uploads (object stores)
    for key, upload_id, started in getattr(storage, "incomplete_uploads", lambda: iter(()))():
        if as_utc(started) <= young:
            if not dry_run:
                storage.abort_upload(key, upload_id)  # type: ignore[attr-defined]
            report.removals.append(Removal("incomplete upload", key, 0, 1, upload_id=upload_id))

    # 3c. form uploads kept across a validation error that no submission took up (core.uploads)
    for token in uploads.stale_tokens(services, now):
        objects = list(storage.list(f"{uploads.PREFIX}/{token}"))
        if not dry_run:
            uploads.discard(services, token)
        report.removals.append(Removal("stale upload", f"{uploads.PREFIX}/{token}", sum(o.size for o in objects),
                                       len(objects)))

    # 3d. this host's scratch directories left by killed processes
    scratch_cutoff = now - max(grace, SCRATCH_GRACE)
    for entry in _scratch_entries(services.scratch_dir):
        newest, size, count = _tree_stats(entry)
        if newest <= scratch_cutoff:
            if not dry_run:
                shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
            report.removals.append(Removal("scratch", str(entry), size, count))
    if not dry_run and report.removals:
        log.info("retention: removed %d item(s), %s", len(report.removals), _size(report.bytes))
    return report


def _known_ids(services: Services, tops: set[str]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    with services.sessions() as s:
        for top in tops:
            cls = ROW_PREFIXES[top]
            out[top] = set(s.scalars(select(cls.id)))
    return out


@contextlib.contextmanager
def _rows_locked(services: Services, top: str, row_id: str) -> Iterator[bool]:
    """Re-check, just before deleting, that the prefix still has no row (it may have been registered
    since the listing)."""
    cls = ROW_PREFIXES[top]
    with services.sessions() as s:
        exists = s.scalar(select(func.count()).select_from(cls).where(cls.id == row_id))
    yield not exists


def _scratch_entries(scratch: Path) -> list[Path]:
    """Top-level entries of the scratch dir, and of its ``work`` folder (object-store work dirs)."""
    if not scratch.is_dir():
        return []
    entries = [p for p in scratch.iterdir() if p.name != "work"]
    if (scratch / "work").is_dir():
        entries += list((scratch / "work").iterdir())
    return sorted(entries)


def _tree_stats(entry: Path) -> tuple[dt.datetime, int, int]:
    """(newest modification, bytes, files) of a file or folder."""
    newest, size, count = entry.lstat().st_mtime, 0, 0
    for f in [entry, *entry.rglob("*")] if entry.is_dir() else [entry]:
        try:
            st = f.lstat()
        except OSError:
            continue
        newest = max(newest, st.st_mtime)
        if f.is_file():
            size, count = size + st.st_size, count + 1
    return dt.datetime.fromtimestamp(newest, dt.timezone.utc), size, count


def gc_lock(services: Services) -> contextlib.AbstractContextManager[bool]:
    """One retention run at a time across all workers (yields False when another process holds it)."""
    return db.advisory_lock(services.engine, GC_LOCK_KEY)


class PeriodicGc:
    """Runs :func:`collect` from a worker's monitor every ``ATELIER_GC_INTERVAL`` seconds (never when 0),
    under :func:`gc_lock`. :meth:`maybe_run` is cheap when it is not time yet."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self._next: dt.datetime | None = None
        self._thread: threading.Thread | None = None

    def maybe_run(self, now: dt.datetime | None = None) -> GcReport | None:
        s = self.services.settings
        if s.gc_interval <= 0:
            return None
        now = now or utcnow()
        if self._next is None:  # the first run waits one interval: a restart loop does not collect each time
            self._next = now + dt.timedelta(seconds=s.gc_interval)
            return None
        if now < self._next:
            return None
        self._next = now + dt.timedelta(seconds=s.gc_interval)
        with gc_lock(self.services) as mine:
            if not mine:
                return None
            return collect(self.services, dt.timedelta(seconds=s.gc_older_than), now=now)

    def tick(self) -> None:
        """Called on every monitor sweep: a due run goes to a thread of its own, so a long listing of a
        big bucket never holds up lease recovery and dispatch. At most one run at a time per process."""
        if self.services.settings.gc_interval <= 0 or (self._thread is not None and self._thread.is_alive()):
            return
        self._thread = threading.Thread(target=self._run_logged, name="atelier-gc", daemon=True)
        self._thread.start()

    def _run_logged(self) -> None:
        try:
            self.maybe_run()
        except Exception:
            log.exception("retention run failed; it runs again at the next interval")
