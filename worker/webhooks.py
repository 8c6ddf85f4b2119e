"""The webhook sender: a thread in each worker node's main process (beside the monitor) that POSTs the
pending rows of ``webhook_deliveries`` (:mod:`core.webhooks` writes them; no web request ever sends).

Every ``PERIOD_S`` it (1) adds a ``completed`` delivery for each job that ended since its last one,
(2) takes the due deliveries one guarded UPDATE each (several nodes never send the same one; a node that
dies mid-send lets it fall due again a minute later) and (3) sends them, the deliveries of one job in
order and different jobs in parallel (a slow receiver delays only its own jobs), each with a short
timeout, no redirects followed and the signature of :func:`core.webhooks.signed_headers`. The outcome of
every attempt is stored on the row; :func:`core.webhooks.record` decides whether another comes.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import threading
import urllib.error
import urllib.request
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor, wait
from urllib.parse import urlsplit

from sqlalchemy import select

from core import webhooks
from core.jobs.progress import TRANSIENT_DB_ERRORS
from core.models import Job, WebhookDelivery
from core.services import Services
from core.settings import is_loopback

log = logging.getLogger(__name__)

PERIOD_S = 0.5
TIMEOUT_S = 5.0
PARALLEL = 4
#: Bytes of a receiver's answer read (and kept in ``error`` for a refusal).
READ_BYTES = 512


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A 3xx is the receiver's answer, not a place to go: following it could lead anywhere."""

    def redirect_request(self, *_a, **_kw):  # type: ignore[no-untyped-def]
        return None


#: Loopback receivers are reached directly; others through the environment's proxy settings, if any.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirects)
_PROXIED = urllib.request.build_opener(_NoRedirects)


def unsafe_target(url: str) -> str | None:
    """Why ``url``'s host must not be contacted now (it resolves to a link-local, multicast or unspecified
    address, such as a cloud metadata service), or None. Checked at send time because a name can change."""
    host = urlsplit(url).hostname or ""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return None  # the POST reports the resolution failure (and it is retried)
    for info in infos:
        ip = ipaddress.ip_address(info[4][0].split("%", 1)[0])
        if ip.is_link_local or ip.is_multicast or ip.is_unspecified:
            return f"{host} resolves to {ip}, which webhooks may not reach"
    return None


def post(url: str, body: bytes, headers: dict[str, str], timeout: float = TIMEOUT_S) -> tuple[int | None, str | None]:
    """``(response code or None, error or None)`` of one POST."""
    opener = _DIRECT if is_loopback(urlsplit(url).hostname or "") else _PROXIED
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with opener.open(req, timeout=timeout) as resp:
            resp.read(READ_BYTES)
            return int(resp.status), None
    except urllib.error.HTTPError as exc:
        text = exc.read(READ_BYTES).decode("utf-8", "replace") if exc.fp is not None else ""
        return int(exc.code), f"HTTP {exc.code}" + (f": {text.strip()[:200]}" if text.strip() else "")
    except urllib.error.URLError as exc:
        return None, f"could not connect: {exc.reason}"
    except (TimeoutError, socket.timeout):
        return None, f"no answer within {timeout:g} s"
    except OSError as exc:
        return None, f"connection failed: {exc}"


class WebhookSender(threading.Thread):
    def __init__(self, services: Services, period: float = PERIOD_S, timeout: float = TIMEOUT_S) -> None:
        super().__init__(name="atelier-webhooks", daemon=True)
        self.services, self.period, self.timeout = services, period, timeout
        self.stopped = threading.Event()
        self.pool = ThreadPoolExecutor(PARALLEL, thread_name_prefix="atelier-webhook")

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                self.sweep()
            except TRANSIENT_DB_ERRORS as exc:
                log.warning("webhook sweep failed (%s); retrying", exc.__class__.__name__)
            except Exception:
                log.exception("webhook sweep failed; retrying")
            self.stopped.wait(self.period)

    def stop(self) -> None:
        self.stopped.set()
        self.pool.shutdown(wait=False, cancel_futures=True)

    def sweep(self) -> int:
        """One round: completions, then every due delivery. Returns how many were attempted."""
        webhooks.enqueue_completions(self.services)
        by_job: OrderedDict[str, list[int]] = OrderedDict()
        for delivery_id, job_id in webhooks.due(self.services.sessions):
            by_job.setdefault(job_id, []).append(delivery_id)
        futures = [self.pool.submit(self._send_all, ids) for ids in by_job.values()]
        wait(futures)
        sent = 0
        for f in futures:
            if f.exception() is not None:
                log.error("webhook delivery failed", exc_info=f.exception())
            else:
                sent += f.result()
        return sent

    def _send_all(self, ids: list[int]) -> int:
        """One job's deliveries in order, each taken just before it is sent (a slow receiver cannot make
        a later one outlive its hold and be sent twice by another node)."""
        sent = 0
        for delivery_id in ids:
            if self.stopped.is_set():
                break
            d = webhooks.claim(self.services.sessions, delivery_id)
            if d is not None:
                self.send(d)
                sent += 1
        return sent

    def send(self, d: WebhookDelivery) -> str:
        """Attempt one delivery and record the outcome; returns the row's new status."""
        sf = self.services.sessions
        with sf() as s:
            owner = s.scalar(select(Job.owner).where(Job.id == d.job_id))
        secret = webhooks.secret_for(self.services, owner)
        if secret is None:
            return webhooks.record(sf, d, response_code=None, give_up=True,
                                   error=f"not sent: the job's owner {owner!r} has no live token to sign with")
        problem = unsafe_target(d.url)
        if problem:
            return webhooks.record(sf, d, response_code=None, give_up=True, error=f"not sent: {problem}")
        body = json.dumps(d.payload, separators=(",", ":")).encode()
        code, error = post(d.url, body, webhooks.signed_headers(secret, str(d.id), body), self.timeout)
        status = webhooks.record(sf, d, response_code=code, error=error)
        log.info("webhook %s of job %s (delivery %d, attempt %d): %s%s", d.event, d.job_id, d.id, d.attempts + 1,
                 code or error, "" if status != "pending" else "; will retry")
        return status
