"""Requests that stay open while a job runs: ``Prefer: wait=N`` and ``GET /api/v1/jobs/{id}/stream``.

Both read the job table (the source of truth) on a short period with a fresh, short session each time, so
no database connection is held while they sleep; nothing here needs the broker or a notification channel.

Each open request holds one web server thread for as long as it is open. They share a budget of
``ATELIER_MAX_STREAMS`` slots (:class:`LongRequests`), and ``atelier serve`` runs that many threads on top
of its ordinary ones, so ordinary requests always keep their threads. When every slot is taken, a stream
is refused with a 503 and ``Retry-After`` (the job page then falls back to polling) and a ``Prefer: wait``
is answered at once without waiting (the preference is simply not applied, as RFC 7240 allows).

The stream is server-sent events (text/event-stream). Event types:

- ``status``: the job's state (sent first, then on every change);
- ``progress``: step, total, fraction and latest metrics (when the step changes);
- ``preview``: the newest preview's URL and step;
- ``metrics``: new metric points ``[[name, step, value], ...]``;
- ``log``: new log lines;
- ``completed``: the finished job, as ``GET /api/v1/jobs/{id}`` gives it; the stream ends after it.

Every event has an ``id:`` ``<log cursor>.<metric cursor>`` (the newest log line and metric point sent);
a client that reconnects with ``Last-Event-ID`` (EventSource does so on its own) gets the current state
and only the log lines and points it has not seen. A comment line every 15 s of silence keeps proxies
from closing the connection; a stream ends after ``ATELIER_STREAM_MAX_SECONDS`` (the client reconnects).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request, stream_with_context
from sqlalchemy import select

from core.models import TERMINAL_STATUSES, Job, JobEvent, JobMetricPoint
from web import deps

bp = Blueprint("stream", __name__, url_prefix="/api/v1")

#: The hard cap of ``Prefer: wait`` (seconds), whatever the setting says.
MAX_WAIT_S = 60
#: Polling of a waiting request: 0.2 s growing to 1 s (a fast job answers quickly, a slow one costs little).
WAIT_FIRST_S, WAIT_MAX_S = 0.2, 1.0
#: Polling of a stream without change notifications (SQLite): twice a second while the job runs, once a
#: second while it waits in the queue. With them (PostgreSQL) these only bound how long a quiet job goes unread.
STREAM_RUNNING_S, STREAM_QUEUED_S = 0.5, 1.0
KEEPALIVE_S = 15.0
#: Metric points in one ``metrics`` event at most (a long training resumed from scratch sends several).
POINTS_PER_EVENT = 2000
RETRY_MS = 2000


class LongRequests:
    """The slots of requests that stay open (streams and waits): at most ``limit`` at once."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._free = threading.BoundedSemaphore(limit)
        self._lock = threading.Lock()
        self.open = 0

    def try_acquire(self) -> bool:
        if not self._free.acquire(blocking=False):
            return False
        with self._lock:
            self.open += 1
        return True

    def release(self) -> None:
        with self._lock:
            self.open -= 1
        self._free.release()


def long_requests() -> LongRequests:
    ext = current_app.extensions
    slots = ext.get("atelier.long_requests")
    if slots is None:
        slots = ext.setdefault("atelier.long_requests", LongRequests(deps.services().settings.max_streams))
    return slots


def client_gone() -> Callable[[], bool]:
    """A check for a closed connection: waitress offers one (with ``channel_request_lookahead``); elsewhere
    a closed connection is noticed at the next write."""
    check = request.environ.get("waitress.client_disconnected")
    return check if callable(check) else (lambda: False)


# -- Prefer: wait ---------------------------------------------------------------------------------
def prefer_wait(header: str | None) -> int | None:
    """The ``wait`` preference of a ``Prefer`` header (RFC 7240), or None. A value that is not a
    non-negative integer is ignored, as the RFC says a preference the server cannot use is."""
    for pref in (header or "").split(","):
        token, _, value = pref.split(";", 1)[0].strip().partition("=")
        if token.strip().lower() != "wait":
            continue
        value = value.strip().strip('"')
        return int(value) if value.isascii() and value.isdigit() and len(value) <= 9 else None
    return None


def job_status(job_id: str) -> str | None:
    with deps.services().sessions() as s:
        return s.scalar(select(Job.status).where(Job.id == job_id))


def wait_for_end(job_id: str, seconds: float, gone: Callable[[], bool] = lambda: False) -> None:
    """Return when the job has ended, ``seconds`` have passed or the client has gone away. With
    PostgreSQL the job's change notification wakes the wait (:mod:`web.job_cache`), so the answer leaves
    within milliseconds of the job's end; otherwise the status is polled with a growing delay."""
    deadline = time.monotonic() + seconds
    delay = WAIT_FIRST_S
    with deps.job_cache().watch(job_id) as changed:
        while True:
            if changed is not None:
                changed.clear()
            status = job_status(job_id)
            left = deadline - time.monotonic()
            if status is None or status in TERMINAL_STATUSES or left <= 0 or gone():
                return
            if changed is not None:  # woken by a change, or after WAIT_MAX_S to notice a client gone away
                changed.wait(min(WAIT_MAX_S, left))
            else:
                time.sleep(min(delay, left))
                delay = min(WAIT_MAX_S, delay * 1.5)


def waited(job: Any, reload: Callable[[str], Any]) -> tuple[Any, str | None]:
    """Apply the request's ``Prefer: wait=N`` to ``job``: ``(the job as it is now, Preference-Applied value
    or None)``. N is capped at 60 s and ``ATELIER_MAX_WAIT_SECONDS``."""
    wanted = prefer_wait(request.headers.get("Prefer"))
    if wanted is None:
        return job, None
    seconds = min(wanted, MAX_WAIT_S, deps.services().settings.max_wait_seconds)
    if job.status in TERMINAL_STATUSES or seconds == 0:
        return job, f"wait={seconds}"
    slots = long_requests()
    if not slots.try_acquire():
        return job, None  # every slot is busy: answered at once, the preference not applied
    try:
        wait_for_end(job.id, seconds, client_gone())
    finally:
        slots.release()
    return reload(job.id), f"wait={seconds}"


# -- the event stream -----------------------------------------------------------------------------
def sse(event: str, data: Any, event_id: str | None = None) -> str:
    lines = [f"event: {event}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines += [f"data: {line}" for line in json.dumps(data, separators=(",", ":")).split("\n")]
    return "\n".join(lines) + "\n\n"


def parse_cursor(raw: str | None) -> tuple[int, int]:
    """``Last-Event-ID`` → (log cursor, metric cursor); anything unreadable starts from the beginning."""
    log_id, _, metric_id = (raw or "").strip().partition(".")
    if log_id.isdigit() and metric_id.isdigit() and len(raw or "") < 40:
        return int(log_id), int(metric_id)
    return 0, 0


def _snapshot(job_id: str, log_after: int, metric_after: int, seen_update: Any) -> tuple[Any, list[Any], list[Any]]:
    """One short read: the job's state, its log lines after ``log_after`` and, when the row changed since
    ``seen_update`` (points are written with progress), its metric points after ``metric_after``. The
    session is closed before the caller sleeps."""
    with deps.services().sessions() as s:
        row = s.execute(select(Job.status, Job.step, Job.total_steps, Job.progress, Job.metrics, Job.error,
                               Job.attempt, Job.worker_id, Job.cancel_requested, Job.preview_path, Job.preview_step,
                               Job.updated_at).where(Job.id == job_id)).first()
        if row is None:
            return None, [], []
        logs = list(s.execute(select(JobEvent.id, JobEvent.created_at, JobEvent.level, JobEvent.message)
                              .where(JobEvent.job_id == job_id, JobEvent.id > log_after)
                              .order_by(JobEvent.id).limit(500)))
        pts = list(s.execute(select(JobMetricPoint.id, JobMetricPoint.name, JobMetricPoint.step, JobMetricPoint.value)
                             .where(JobMetricPoint.job_id == job_id, JobMetricPoint.id > metric_after)
                             .order_by(JobMetricPoint.id).limit(POINTS_PER_EVENT))) \
            if row.updated_at != seen_update else []
    return row, logs, pts


def events_for(job_id: str, base_url: str, cursor: tuple[int, int], max_seconds: float,
               gone: Callable[[], bool], finished: Callable[[], Any]) -> Iterator[str]:
    """The stream's text: events as the job changes, ending with ``completed`` (or after ``max_seconds``)."""
    from web.serialize import iso

    log_after, metric_after = cursor
    yield f"retry: {RETRY_MS}\n\n"
    started = last_sent = time.monotonic()
    sent: dict[str, Any] = {}
    seen_update: Any = None
    # Woken by the job's change notification (PostgreSQL), so an event leaves within milliseconds of
    # the write that made it; the pauses below only bound how long a quiet job is not looked at.
    with deps.job_cache().watch(job_id) as changed:
        while True:
            row, logs, pts = _snapshot(job_id, log_after, metric_after, seen_update)
            if row is None:
                return
            seen_update = row.updated_at if len(pts) < POINTS_PER_EVENT else None
            chunks: list[str] = []
            if logs:
                log_after = logs[-1].id
            if pts:
                metric_after = pts[-1].id
            eid = f"{log_after}.{metric_after}"
            status = {"status": row.status, "attempt": row.attempt, "worker": row.worker_id, "error": row.error,
                      "cancel_requested": row.cancel_requested}
            if status != sent.get("status"):
                sent["status"] = status
                chunks.append(sse("status", status, eid))
            progress = {"step": row.step, "total_steps": row.total_steps, "progress": round(row.progress, 6),
                        "metrics": row.metrics or {}}
            if progress != sent.get("progress"):
                sent["progress"] = progress
                chunks.append(sse("progress", progress, eid))
            if row.preview_path and row.preview_step != sent.get("preview"):
                sent["preview"] = row.preview_step
                chunks.append(sse("preview", {"url": f"{base_url}/preview?step={row.preview_step}",
                                              "step": row.preview_step}, eid))
            if pts:
                chunks.append(sse("metrics", {"points": [[p.name, p.step, p.value] for p in pts]}, eid))
            if logs:
                chunks.append(sse("log", {"events": [{"at": iso(e.created_at), "level": e.level, "message": e.message}
                                                     for e in logs]}, eid))
            terminal = row.status in TERMINAL_STATUSES
            if terminal and len(pts) < POINTS_PER_EVENT and len(logs) < 500:
                try:
                    final = finished()
                except Exception:  # deleted or no longer visible meanwhile: the stream still ends cleanly
                    final = {"id": job_id, "status": row.status}
                chunks.append(sse("completed", final, eid))
            if chunks:
                last_sent = time.monotonic()
                yield "".join(chunks)
                if terminal and chunks[-1].startswith("event: completed"):
                    return
            elif time.monotonic() - last_sent >= KEEPALIVE_S:
                last_sent = time.monotonic()
                yield ": keep-alive\n\n"
            if time.monotonic() - started >= max_seconds or gone():
                return
            if not (terminal or pts or len(logs) == 500):
                pause = STREAM_RUNNING_S if row.status == "running" else STREAM_QUEUED_S
                if changed is None:
                    time.sleep(pause)
                else:
                    changed.wait(pause)
                    changed.clear()  # before the next look, so a change after it wakes the one after


@bp.get("/jobs/<job_id>/stream")
def job_stream(job_id: str):  # type: ignore[no-untyped-def]
    """Server-sent events of a job: status, progress, preview, metric points, log lines, then completed.

    Resume with ``Last-Event-ID`` (EventSource does it by itself). 503 with ``Retry-After`` when the
    server has no free slot for another open request; poll ``GET /api/v1/jobs/{id}`` then."""
    from web.api import _job_or_404
    from web.serialize import job_json

    job = _job_or_404(job_id)
    slots = long_requests()
    if not slots.try_acquire():
        resp = jsonify({"error": f"the server holds {slots.limit} open streams and waits already "
                                 "(ATELIER_MAX_STREAMS); poll GET /api/v1/jobs/{id} or retry later", "field": None})
        resp.status_code = 503
        resp.headers["Retry-After"] = "5"
        return resp
    cursor = parse_cursor(request.headers.get("Last-Event-ID") or request.args.get("last_event_id"))
    settings = deps.services().settings
    gone = client_gone()
    base_url = f"/api/v1/jobs/{job.id}"

    def finished() -> Any:
        return job_json(_job_or_404(job.id))

    body = stream_with_context(events_for(job.id, base_url, cursor, settings.stream_max_seconds, gone, finished))
    resp = Response(body, mimetype="text/event-stream")
    resp.headers["Cache-Control"] = "no-cache"
    resp.headers["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
    resp.call_on_close(slots.release)
    return resp
