"""Adapts the engine :class:`~core.engines.progress.Progress` interface to job rows and files.

Engines report every step; the database sees at most about one progress write per
``progress_interval`` seconds (metric points are buffered and written with it), and previews are
rendered only when they will be stored. An attempt's first metric points replace whatever an earlier
attempt had recorded from that step on (a job resumed from a checkpoint continues its curves).
Cancellation is read from the row at most every 0.1 s, so a cancelled job stops within one step of
noticing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from core.engines.progress import Progress
from core.images import thumbnail_jpeg
from core.jobs import repository as repo

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from core.services import Services

log = logging.getLogger(__name__)

PREVIEW_KEY = "jobs/{job_id}/preview.jpg"
CANCEL_POLL_SECONDS = 0.1


class JobProgress(Progress):
    def __init__(self, services: "Services", job_id: str, worker_id: str, *, preview_every: int,
                 interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.services = services
        self.job_id = job_id
        self.worker_id = worker_id
        self.preview_every = preview_every
        self.interval = interval
        self.clock = clock
        self._last_write = float("-inf")
        self._last_preview = float("-inf")
        self._last_cancel_poll = float("-inf")
        self._points: list[tuple[str, int, float]] = []
        self._first_points = True  # this attempt's first points replace any later ones of an earlier attempt
        self._latest: tuple[int, int, dict[str, float]] | None = None
        self._pending_preview: tuple[int, Callable[[], "Image.Image"]] | None = None
        self._cancelled = False
        self.lease_lost = threading.Event()  # set by the heartbeat when another worker owns the job
        self.cancel_seen = threading.Event()  # set by the heartbeat or by polling

    # -- Progress interface ---------------------------------------------------------------------
    def report(self, step: int, total: int, metrics: Mapping[str, float]) -> None:
        clean = {k: float(v) for k, v in metrics.items()}
        self._latest = (step, total, clean)
        self._points.extend((name, step, value) for name, value in clean.items())
        if self.clock() - self._last_write >= self.interval or step >= total:
            self.flush_progress()

    def preview(self, step: int, render: Callable[[], "Image.Image"]) -> None:
        self._pending_preview = (step, render)
        if self.clock() - self._last_preview >= self.interval:
            self.flush_preview()

    def log(self, message: str) -> None:
        log.info("job %s: %s", self.job_id, message)
        repo.add_event(self.services.sessions, self.job_id, message)

    def is_cancelled(self) -> bool:
        if self.cancel_seen.is_set() or self.lease_lost.is_set():
            return True
        now = self.clock()
        if now - self._last_cancel_poll >= CANCEL_POLL_SECONDS:
            self._last_cancel_poll = now
            if repo.is_cancel_requested(self.services.sessions, self.job_id):
                self.cancel_seen.set()
        return self.cancel_seen.is_set()

    def latest_metrics(self) -> dict[str, float]:
        return dict(self._latest[2]) if self._latest else {}

    # -- writes ---------------------------------------------------------------------------------
    def flush_progress(self) -> None:
        if self._latest is None:
            return
        step, total, metrics = self._latest
        points, self._points = self._points, []
        replace_from = None
        if points and self._first_points:
            replace_from, self._first_points = min(p[1] for p in points), False
        ok = repo.update_progress(self.services.sessions, self.job_id, self.worker_id, step=step, total=total,
                                  metrics=metrics, points=points, replace_from=replace_from)
        if not ok:
            self.lease_lost.set()
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
        repo.set_preview(self.services.sessions, self.job_id, key, step)
        self._last_preview = self.clock()

    def flush(self) -> None:
        """Write whatever is buffered: the newest progress and the newest preview."""
        self.flush_preview()
        self.flush_progress()
