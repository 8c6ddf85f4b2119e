"""Webhooks: what a job's subscriber is sent, how it is signed, and the rows that carry it.

A job may carry ``webhook`` (an https URL, or http to a loopback host) and ``webhook_events`` (a subset
of :data:`EVENTS`, default ``["completed"]``). Each event the job wants becomes one row in
``webhook_deliveries`` (``pending → delivered | failed``); this module only writes and reads those rows,
it never opens a connection. The sender is :mod:`worker.webhooks`, in the worker node's main process:
no web request thread ever waits on a subscriber.

Where the rows come from:

- ``start``, ``progress``, ``output``: the job's running attempt (:class:`WebhookEmitter`, used by the
  runner and :class:`core.jobs.progress.JobProgress`); ``progress`` at most every
  :data:`PROGRESS_SPACING_S` seconds per job;
- ``completed``: :func:`enqueue_completions`, a sweep over finished jobs that have no ``completed``
  delivery since they finished. One place covers every way a job ends (a worker finishing it, a cancel
  of a queued job in a web request, the monitor failing a job whose workers kept dying), and a retried
  job that ends again gets a new one.

Signing follows the Standard Webhooks convention (https://www.standardwebhooks.com): headers
``webhook-id``, ``webhook-timestamp`` (Unix seconds) and ``webhook-signature: v1,<base64 HMAC-SHA256 of
"{id}.{timestamp}.{body}">``. The key is the job owner's token secret (``api_tokens.webhook_secret``);
jobs without an owner (auth off) use the server's secret (``ATELIER_WEBHOOK_SECRET``, else generated
once into ``<data dir>/webhook_secret``; ``atelier webhook-secret`` prints it). A secret written
``whsec_<base64>`` (as Standard Webhooks libraries make them) is used as the key it encodes.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import os
import secrets
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sqlalchemy import exists, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from core.errors import UserError, quote
from core.models import TERMINAL_STATUSES, Job, WebhookDelivery, as_utc, utcnow
from core.settings import Settings, is_loopback

if TYPE_CHECKING:  # pragma: no cover
    from core.services import Services

SessionFactory = sessionmaker[Session]

EVENTS = ("start", "progress", "output", "completed")
DEFAULT_EVENTS = ("completed",)
MAX_URL_LENGTH = 2048
#: A job's subscriber hears about progress at most this often.
PROGRESS_SPACING_S = 2.0
#: ``completed`` is retried (429, 5xx, timeouts, connection errors) for up to this long after the job ended.
COMPLETED_RETRY_WINDOW_S = 3600.0
#: Attempts for the other events: progress is stale by the next one; start and output get a few tries.
MAX_ATTEMPTS = {"progress": 1, "start": 3, "output": 3}
#: Backoff between attempts: 1 s doubling, at most 5 min (about 20 attempts in the hour).
BACKOFF_FIRST_S, BACKOFF_MAX_S = 1.0, 300.0
#: Finished jobs older than this are not looked at by the completion sweep (all workers down longer).
COMPLETION_LOOKBACK = dt.timedelta(hours=6)
#: The advisory lock of the completion sweep on PostgreSQL ("webhook" in ASCII): one inserter at a time.
SWEEP_LOCK_KEY = 0x776562686F6F6B
SECRET_FILE = "webhook_secret"


# -- what a submit may ask for ----------------------------------------------------------------------
def parse_events(raw: Any) -> list[str] | None:
    """``webhook_events`` as a client may send it: a JSON list, or in a form a comma-separated string or
    a JSON list string. ``None``/empty: the default. Unknown or repeated names are a 422 naming the field."""
    if raw is None or raw == "" or raw == []:
        return None
    if isinstance(raw, str):
        text = raw.strip()
        if text.startswith("["):
            try:
                raw = json.loads(text)
            except ValueError:
                raise UserError("webhook_events is not a valid JSON list", "webhook_events", 422) from None
        else:
            raw = [p.strip() for p in text.split(",") if p.strip()]
    if not isinstance(raw, list) or not all(isinstance(e, str) for e in raw):
        raise UserError(f"webhook_events must be a list of event names ({', '.join(EVENTS)})", "webhook_events", 422)
    unknown = [e for e in raw if e not in EVENTS]
    if unknown:
        raise UserError(f"webhook_events: unknown event {quote(unknown[0])}; the events are {', '.join(EVENTS)}",
                        "webhook_events", 422)
    if not raw:
        return None
    return [e for e in EVENTS if e in raw]  # one of each, in the order they happen


def validate_url(url: Any) -> str:
    """A webhook URL a worker may POST to, or a 422 naming ``webhook``: https (to a host name or a public,
    private or loopback address, not a link-local one such as a cloud metadata service), or plain http
    only to this machine (127.0.0.0/8, ::1, localhost); no credentials in it; at most 2048 characters."""
    if not isinstance(url, str):
        raise UserError("webhook must be a URL string", "webhook", 422)
    url = url.strip()
    if len(url) > MAX_URL_LENGTH:
        raise UserError(f"webhook is {len(url)} characters long; at most {MAX_URL_LENGTH} are allowed", "webhook", 422)
    if any(ord(c) <= 32 or ord(c) == 127 for c in url):
        raise UserError("webhook must not contain spaces or control characters", "webhook", 422)
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise UserError(f"webhook is not a valid URL: {quote(url)}", "webhook", 422) from None
    if parts.scheme not in ("https", "http") or not host:
        raise UserError("webhook must be an https:// URL (or http:// to a loopback address)", "webhook", 422)
    if parts.username is not None or parts.password is not None:
        raise UserError("webhook must not carry credentials (user:password@); the deliveries are signed instead",
                        "webhook", 422)
    if parts.scheme == "http" and not is_loopback(host):
        raise UserError("webhook must use https:// unless it points at this machine (127.0.0.1, ::1, localhost)",
                        "webhook", 422)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is not None and (ip.is_link_local or ip.is_multicast or ip.is_unspecified or
                           (ip.is_reserved and not ip.is_loopback)):
        raise UserError(f"webhook points at {host}, an address that is not a web server (link-local, multicast "
                        "or reserved)", "webhook", 422)
    return url


def validate_webhook(url: Any, events: Any) -> tuple[str | None, list[str]]:
    """``(webhook, webhook_events)`` as stored on a job. Events without a URL are a 422 (they would go
    nowhere); a URL without events gets ``["completed"]``."""
    wanted = parse_events(events)
    if url is None or url == "":
        if wanted is not None:
            raise UserError("webhook_events needs a webhook URL to send them to", "webhook", 422)
        return None, []
    return validate_url(url), wanted or list(DEFAULT_EVENTS)


# -- signing ----------------------------------------------------------------------------------------
def signing_key(secret: str) -> bytes:
    """The HMAC key of a secret: a ``whsec_<base64>`` secret is the bytes it encodes, any other the
    secret's UTF-8 bytes."""
    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret[len("whsec_"):], validate=True)
        except ValueError:
            pass
    return secret.encode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 of "{msg_id}.{timestamp}.{body}">``."""
    mac = hmac.new(signing_key(secret), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def signed_headers(secret: str, msg_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    ts = int(time.time()) if timestamp is None else timestamp
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": sign(secret, msg_id, ts, body),
            "Content-Type": "application/json", "User-Agent": "atelier-webhooks/1"}


def verify(secret: str, headers: Mapping[str, str], body: bytes, *, tolerance_s: float = 300,
           now: float | None = None) -> bool:
    """What a receiver does: recompute the signature and compare in constant time; refuse a timestamp
    more than ``tolerance_s`` away (a replayed delivery). Any of several ``v1,`` signatures may match."""
    lower = {k.lower(): v for k, v in headers.items()}
    msg_id, ts, sigs = lower.get("webhook-id"), lower.get("webhook-timestamp"), lower.get("webhook-signature", "")
    if not msg_id or not ts or not ts.isdigit():
        return False
    if abs((time.time() if now is None else now) - int(ts)) > tolerance_s:
        return False
    expected = sign(secret, msg_id, int(ts), body)
    return any(hmac.compare_digest(expected, s) for s in sigs.split())


def server_secret(settings: Settings) -> str:
    """The secret for jobs without an owner: ``ATELIER_WEBHOOK_SECRET``, else ``<data dir>/webhook_secret``
    (created once, mode 0600, by whichever process needs it first; web and workers share the data dir)."""
    if settings.webhook_secret:
        return settings.webhook_secret
    path = Path(settings.data_dir) / SECRET_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    return secret


def secret_for(services: "Services", owner: str | None) -> str | None:
    """The key a job's deliveries are signed with: its owner's token secret, or the server's for a job
    without an owner. ``None``: the owner has no live token (revoked), so nothing is sent."""
    if owner is None:
        return server_secret(services.settings)
    from core.auth import webhook_secret_for

    return webhook_secret_for(services.sessions, owner)


# -- payloads ---------------------------------------------------------------------------------------
def _iso(value: dt.datetime | None) -> str | None:
    value = as_utc(value)
    return value.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z") if value else None


def public_base(settings: Settings) -> str:
    return settings.public_url.rstrip("/") if settings.public_url else f"http://{settings.host}:{settings.port}"


def job_summary(job: Job, settings: Settings, **state: Any) -> dict[str, Any]:
    """What every payload says about the job (``state`` overrides the row's progress fields)."""
    base = f"{public_base(settings)}/api/v1/jobs/{job.id}"
    data: dict[str, Any] = {
        "id": job.id, "kind": job.kind, "name": job.name, "status": job.status, "progress": round(job.progress, 6),
        "step": job.step, "total_steps": job.total_steps, "attempt": job.attempt, "error": job.error,
        "created_at": _iso(job.created_at), "started_at": _iso(job.started_at), "finished_at": _iso(job.finished_at),
        "metrics": job.metrics or {},
        "urls": {"self": base, "page": f"{public_base(settings)}/jobs/{job.id}", "stream": f"{base}/stream"},
    }
    data.update(state)
    return data


def outputs_of(job: Job, settings: Settings) -> list[dict[str, Any]]:
    from urllib.parse import quote as q

    base = f"{public_base(settings)}/api/v1/jobs/{job.id}/outputs"
    return [{"name": f.name, "url": f"{base}/{q(f.name, safe='')}", "content_type": f.content_type, "size": f.size,
             "sha256": f.sha256} for f in job.files if f.direction == "output"]


def envelope(event: str, data: Mapping[str, Any], at: dt.datetime | None = None) -> dict[str, Any]:
    """The body of a delivery: ``{"type": "job.<event>", "timestamp": when it happened, "data": ...}``."""
    return {"type": f"job.{event}", "timestamp": _iso(at or utcnow()), "data": dict(data)}


# -- rows -------------------------------------------------------------------------------------------
def enqueue(sf: SessionFactory, job_id: str, url: str, event: str, payload: Mapping[str, Any],
            now: dt.datetime | None = None) -> int:
    """Store one delivery to send; returns its id."""
    now = now or utcnow()
    row = WebhookDelivery(job_id=job_id, event=event, url=url, payload=dict(payload), status="pending", attempts=0,
                          created_at=now, next_attempt_at=now)
    with sf.begin() as s:
        s.add(row)
        s.flush()
        return int(row.id)


class WebhookEmitter:
    """The ``start``/``progress``/``output`` deliveries of one running attempt (rows only; cheap no-ops
    for a job without a webhook). ``progress`` rows are at least :data:`PROGRESS_SPACING_S` apart."""

    def __init__(self, services: "Services", job: Job, clock: Any = time.monotonic) -> None:
        self.services, self.job, self.clock = services, job, clock
        self.url = job.webhook
        self.events = set(job.webhook_events or ()) if job.webhook else set()
        self._last_progress = float("-inf")

    def wants(self, event: str) -> bool:
        return bool(self.url) and event in self.events

    def _put(self, event: str, data: Mapping[str, Any]) -> None:
        assert self.url is not None
        enqueue(self.services.sessions, self.job.id, self.url, event, envelope(event, data))

    def start(self, attempt: int, worker_id: str) -> None:
        if self.wants("start"):
            self._put("start", job_summary(self.job, self.services.settings, status="running", attempt=attempt,
                                           worker=worker_id))

    def progress(self, step: int, total: int, metrics: Mapping[str, float]) -> None:
        if not self.wants("progress"):
            return
        now = self.clock()
        if now - self._last_progress < PROGRESS_SPACING_S:
            return  # the last step too: ``completed`` follows anyway
        self._last_progress = now
        self._put("progress", job_summary(self.job, self.services.settings, status="running", step=step,
                                          total_steps=total, progress=round(min(1.0, step / total) if total else 0, 6),
                                          metrics=dict(metrics)))

    def output(self, name: str, content_type: str, size: int, sha256: str) -> None:
        if self.wants("output"):
            from urllib.parse import quote as q

            url = f"{public_base(self.services.settings)}/api/v1/jobs/{self.job.id}/outputs/{q(name, safe='')}"
            self._put("output", job_summary(self.job, self.services.settings, status="running", output={
                "name": name, "url": url, "content_type": content_type, "size": size, "sha256": sha256}))


def _sweep_lock(s: Session) -> bool:
    """One completion sweep at a time across worker nodes (PostgreSQL, held to the commit); SQLite serves
    one node, whose single sender needs no lock."""
    if s.get_bind().dialect.name != "postgresql":
        return True
    return bool(s.scalar(select(func.pg_try_advisory_xact_lock(SWEEP_LOCK_KEY))))


def enqueue_completions(services: "Services", now: dt.datetime | None = None) -> list[int]:
    """A ``completed`` delivery for every finished job that wants one and has none since it finished."""
    from sqlalchemy.orm import selectinload

    now = now or utcnow()
    made: list[int] = []
    with services.sessions.begin() as s:
        if not _sweep_lock(s):
            return made
        done = exists().where(WebhookDelivery.job_id == Job.id, WebhookDelivery.event == "completed",
                              WebhookDelivery.created_at >= Job.finished_at)
        jobs = list(s.scalars(select(Job).options(selectinload(Job.files))
                              .where(Job.webhook.is_not(None), Job.status.in_(TERMINAL_STATUSES),
                                     Job.finished_at >= now - COMPLETION_LOOKBACK, Job.deleted_at.is_(None), ~done)
                              .order_by(Job.finished_at).limit(200)))
        for job in jobs:
            if "completed" not in (job.webhook_events or ()):
                continue
            data = job_summary(job, services.settings)
            data["outputs"] = outputs_of(job, services.settings)
            row = WebhookDelivery(job_id=job.id, event="completed", url=job.webhook, payload=envelope(
                "completed", data, job.finished_at), status="pending", attempts=0, created_at=now, next_attempt_at=now)
            s.add(row)
            s.flush()
            made.append(int(row.id))
    return made


def due(sf: SessionFactory, now: dt.datetime | None = None, limit: int = 50) -> list[tuple[int, str]]:
    """``(delivery id, job id)`` of pending deliveries whose time has come, oldest first."""
    now = now or utcnow()
    with sf() as s:
        return [(int(i), j) for i, j in s.execute(select(WebhookDelivery.id, WebhookDelivery.job_id).where(
            WebhookDelivery.status == "pending",
            or_(WebhookDelivery.next_attempt_at.is_(None), WebhookDelivery.next_attempt_at <= now))
            .order_by(WebhookDelivery.id).limit(limit))]


def claim(sf: SessionFactory, delivery_id: int, now: dt.datetime | None = None,
          hold_s: float = 60.0) -> WebhookDelivery | None:
    """Take one due delivery for ``hold_s`` seconds (one guarded UPDATE: of several senders exactly one
    wins; if it dies, the delivery is due again afterwards). Returns the row, or None if another won."""
    now = now or utcnow()
    with sf.begin() as s:
        res = s.execute(update(WebhookDelivery).where(
            WebhookDelivery.id == delivery_id, WebhookDelivery.status == "pending",
            or_(WebhookDelivery.next_attempt_at.is_(None), WebhookDelivery.next_attempt_at <= now))
            .values(next_attempt_at=now + dt.timedelta(seconds=hold_s)).execution_options(synchronize_session=False))
        if res.rowcount != 1:
            return None
        return s.get(WebhookDelivery, delivery_id)


def backoff_s(attempts: int) -> float:
    return min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** max(0, attempts - 1))


def retryable(response_code: int | None) -> bool:
    """Worth another try: no answer (timeout, connection refused...), 408, 429 or a 5xx."""
    return response_code is None or response_code in (408, 429) or response_code >= 500


def record(sf: SessionFactory, delivery: WebhookDelivery, *, response_code: int | None, error: str | None,
           now: dt.datetime | None = None, give_up: bool = False) -> str:
    """Store the outcome of one attempt; returns the delivery's new status (``pending`` = another try is
    scheduled). ``give_up``: no further attempt whatever the outcome (nothing to sign with, say)."""
    now = now or utcnow()
    attempts = delivery.attempts + 1
    ok = response_code is not None and 200 <= response_code < 300
    values: dict[str, Any] = {"attempts": attempts, "response_code": response_code,
                              "error": None if ok else (error or f"HTTP {response_code}")[:2000]}
    if ok:
        values.update(status="delivered", finished_at=now, next_attempt_at=None)
    else:
        delay = backoff_s(attempts)
        created = delivery.created_at if delivery.created_at.tzinfo else delivery.created_at.replace(
            tzinfo=dt.timezone.utc)
        if delivery.event == "completed":
            more = (now - created).total_seconds() + delay <= COMPLETED_RETRY_WINDOW_S
        else:
            more = attempts < MAX_ATTEMPTS.get(delivery.event, 1)
        if retryable(response_code) and more and not give_up:
            values.update(status="pending", next_attempt_at=now + dt.timedelta(seconds=delay))
        else:
            values.update(status="failed", finished_at=now, next_attempt_at=None)
    with sf.begin() as s:
        s.execute(update(WebhookDelivery).where(WebhookDelivery.id == delivery.id).values(**values)
                  .execution_options(synchronize_session=False))
    return str(values["status"])


def deliveries(sf: SessionFactory, job_id: str, limit: int = 200) -> list[WebhookDelivery]:
    """A job's deliveries, newest first."""
    with sf() as s:
        return list(s.scalars(select(WebhookDelivery).where(WebhookDelivery.job_id == job_id)
                              .order_by(WebhookDelivery.id.desc()).limit(limit)))


def delivery_json(d: WebhookDelivery) -> dict[str, Any]:
    return {"id": d.id, "event": d.event, "url": d.url, "status": d.status, "attempts": d.attempts,
            "response_code": d.response_code, "error": d.error, "created_at": _iso(d.created_at),
            "next_attempt_at": _iso(d.next_attempt_at) if d.status == "pending" else None,
            "finished_at": _iso(d.finished_at)}
