"""Adapts the engine :class:`~core.engines.progress.Progress` interface to job rows and files.

Engines report every step; the database sees at most about one progress write per
``progress_interval`` seconds (metric points are buffered and written with it), and previews are
rendered only when they will be stored. An attempt's first metric points replace whatever an earlier
attempt had recorded from that step on (a job resumed from a checkpoint continues its curves).
Cancellation is read from the row at most once a second (the heartbeat also brings it), and a job
stops within one step of noticing.

A database outage shorter than the lease must not cost the attempt: a write that fails keeps its data
buffered and is retried with backoff (0.5 s doubling to 8 s) while the engine goes on; a cancel poll
that fails counts as "not cancelled". The runner makes the job's final write wait out the outage.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from sqlalchemy.exc import InterfaceError, OperationalError

from core.engines.progress import Progress, TimeLimitExceeded
from core.estimates import RateMeter
from core.images import thumbnail_jpeg
from core.jobs import repository as repo

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from core.services import Services
    from core.webhooks import WebhookEmitter

log = logging.getLogger(__name__)

PREVIEW_KEY = "jobs/{job_id}/preview.jpg"
CANCEL_POLL_SECONDS = 1.0
#: Database errors a job rides out (the server restarting, the network dropping), not bugs.
TRANSIENT_DB_ERRORS = (OperationalError, InterfaceError)
RETRY_FIRST_SECONDS, RETRY_MAX_SECONDS = 0.5, 8.0


class JobProgress(Progress):
    def __init__(self, services: "Services", job_id: str, worker_id: str, *, preview_every: int,
                 interval: float, clock: Callable[[], float] = time.monotonic,
                 time_limit: float | None = None) -> None:
        self.services = services
        self.job_id = job_id
        self.worker_id = worker_id
        self.preview_every = preview_every
        self.interval = interval
        self.clock = clock
        self.time_limit = time_limit
        self.deadline = clock() + time_limit if time_limit else None
        self._last_write = float("-inf")
        self._last_preview = float("-inf")
        self._last_cancel_poll = float("-inf")
        self._points: list[tuple[str, int, float]] = []
        self._first_points = True  # this attempt's first points replace any later ones of an earlier attempt
        self._latest: tuple[int, int, dict[str, float]] | None = None
        self._pending_preview: tuple[int, Callable[[], "Image.Image"]] | None = None
        self._cancelled = False
        self._retry_at = float("-inf")  # while the database is unreachable: when to try writing again
        self._backoff = RETRY_FIRST_SECONDS
        self._pending_events: list[tuple[str, str]] = []
        self.lease_lost = threading.Event()  # set by the heartbeat when another worker owns the job
        self.cancel_seen = threading.Event()  # set by the heartbeat or by polling
        self.webhooks: "WebhookEmitter | None" = None  # set by the runner for a job with a webhook
        self.rate = RateMeter(clock())  # steps per second after warm-up: the ETA and the worker's speed record

    # -- Progress interface ---------------------------------------------------------------------
    def report(self, step: int, total: int, metrics: Mapping[str, float]) -> None:
        clean = {k: float(v) for k, v in metrics.items()}
        self._latest = (step, total, clean)
        self._points.extend((name, step, value) for name, value in clean.items())
        now = self.clock()
        self.rate.add(step, now)
        if now >= self._retry_at and (now - self._last_write >= self.interval or step >= total):
            self.flush_progress()

    def preview(self, step: int, render: Callable[[], "Image.Image"]) -> None:
        self._pending_preview = (step, render)
        if self.clock() >= self._retry_at and self.clock() - self._last_preview >= self.interval:
            self.flush_preview()

    def log(self, message: str, level: str = "info") -> None:
        log.info("job %s: %s", self.job_id, message)
        self._pending_events.append((message, level))
        if self.clock() >= self._retry_at:
            self._write(self._flush_events)

    def is_cancelled(self) -> bool:
        if self.cancel_seen.is_set() or self.lease_lost.is_set():
            return True
        now = self.clock()
        if now - self._last_cancel_poll >= CANCEL_POLL_SECONDS and now >= self._retry_at:
            self._last_cancel_poll = now
            if self._write(lambda: repo.is_cancel_requested(self.services.sessions, self.job_id)):
                self.cancel_seen.set()
        return self.cancel_seen.is_set()

    def check_cancel(self) -> None:
        """Stop the engine when the user cancelled, the lease was lost, or the attempt's time is up."""
        if self.deadline is not None and self.clock() > self.deadline:
            raise TimeLimitExceeded()
        super().check_cancel()

    def timing(self, step: int, total: int) -> dict[str, float | None]:
        """What the job page's ETA and the queue's estimates read (``metrics.timing``; a mapping, so the
        page's table of values skips it): the smoothed rate over recent steps and the seconds left."""
        rate, eta = self.rate.rate, self.rate.eta(step, total)
        return {"steps_per_s": None if rate is None else round(rate, 4),
                "eta_s": None if eta is None else round(eta, 1)}

    def latest_step(self) -> int | None:
        return self._latest[0] if self._latest else None

    def latest_metrics(self) -> dict[str, float]:
        return dict(self._latest[2]) if self._latest else {}

    # -- writes ---------------------------------------------------------------------------------
    @property
    def database_ok(self) -> bool:
        """False while the last write failed for a transient database error."""
        return self._retry_at == float("-inf")

    def _write(self, fn: Callable[[], object]) -> object:
        """Run one database operation; on a transient error, log it, schedule a retry with backoff and
        return None instead of raising into the engine."""
        try:
            result = fn()
        except TRANSIENT_DB_ERRORS as exc:
            if self.database_ok:
                log.warning("job %s: database unavailable (%s); buffering progress and retrying", self.job_id,
                            exc.__class__.__name__)
            self._retry_at = self.clock() + self._backoff
            self._backoff = min(self._backoff * 2, RETRY_MAX_SECONDS)
            return None
        if not self.database_ok:
            log.info("job %s: database reachable again", self.job_id)
        self._retry_at, self._backoff = float("-inf"), RETRY_FIRST_SECONDS
        return result

    def _flush_events(self) -> None:
        while self._pending_events:
            message, level = self._pending_events[0]
            repo.add_event(self.services.sessions, self.job_id, message, level=level)
            self._pending_events.pop(0)

    def flush_progress(self) -> None:
        self._write(self._flush_events)
        if self._latest is None or not self.database_ok:
            return
        step, total, metrics = self._latest
        stored = {**metrics, "timing": self.timing(step, total)}  # the row's; webhooks get the engine's values
        points = list(self._points)
        replace_from = None
        if points and self._first_points:
            replace_from = min(p[1] for p in points)
        ok = self._write(lambda: repo.update_progress(
            self.services.sessions, self.job_id, self.worker_id, step=step, total=total, metrics=stored,
            points=points, replace_from=replace_from))
        if ok is None:  # not written: the points stay buffered for the next try
            return
        del self._points[:len(points)]
        if replace_from is not None:
            self._first_points = False
        if not ok:
            self.lease_lost.set()
        else:
            self.emit("progress", step, total, metrics)
        self._last_write = self.clock()

    def flush_preview(self) -> None:
        if self._pending_preview is None:
            return
        step, render = self._pending_preview
        self._pending_preview = None
        try:
            image = render()
        except Exception:  # a preview must never kill a job
            log.exception("job %s: preview render failed", self.job_id)
            return
        key = PREVIEW_KEY.format(job_id=self.job_id)
        self.services.storage.put_bytes(key, thumbnail_jpeg(image, longest=max(image.size), quality=90))
        if self._write(lambda: repo.set_preview(self.services.sessions, self.job_id, key, step) or True) is None:
            self._pending_preview = (step, lambda: image)  # stored; its row is written on a later try
            return
        self._last_preview = self.clock()

    def emit(self, event: str, *args: object) -> None:
        """Queue a webhook delivery of ``event`` (a row; :mod:`core.webhooks`). Failing to write it is
        logged and never reaches the engine: a subscriber's event is not worth the job."""
        if self.webhooks is None or not self.webhooks.wants(event):
            return
        try:
            getattr(self.webhooks, event)(*args)
        except Exception:
            log.warning("job %s: could not queue the %s webhook", self.job_id, event, exc_info=True)

    def flush(self) -> None:
        """Write whatever is buffered: the newest progress and the newest preview."""
        self.flush_preview()
        self.flush_progress()
