"""Send each queued job's message once, and again only when it can really have been lost.

The table is the source of truth and the broker only carries "job X has work", so a lost message
leaves a job queued forever and a duplicate costs one failed claim. Re-sending every old queued job on
every sweep (as before) kept jobs moving but flooded the broker: 336 re-sends for 50 jobs in 3 minutes
with 2 workers. Here a message is re-sent only when one is missing:

- **never sent**: the broker was down at submit (``dispatched_at`` is NULL);
- **recovered**: a dead worker's job went back to ``queued`` (its message was consumed);
- **missing**: fewer messages wait in the broker than there are queued jobs that were sent a while ago
  (a broker restarted without persistence, a worker died holding a message it had not claimed yet).
  The deficit must be seen on two sweeps in a row, so a message in the hands of a worker that is
  claiming it right now is not mistaken for a lost one, unless the broker itself says it restarted
  (Redis's ``run_id`` changed): then the deficit is re-sent at once, within one heartbeat. The
  oldest-sent jobs are re-sent, since FIFO queues serve those first and a job left behind is the
  likeliest to have lost its message;
- **backstop**: a message older than the broker's visibility timeout.

Each re-send first takes the job with one guarded UPDATE (:func:`core.jobs.repository.claim_dispatch`)
and the whole sweep runs under a PostgreSQL advisory lock, so several workers' monitors never send the
same job twice. Every message is counted in ``dispatch_count``.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

from celery import Celery

from core.jobs import repository as repo
from core.models import utcnow
from core.services import Services
from worker.celery_app import VISIBILITY_TIMEOUT_S, worker_queues
from worker.enqueue import send_counted

log = logging.getLogger(__name__)


@dataclass
class SweepReport:
    recovered: list[str] = field(default_factory=list)
    never_sent: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)

    @property
    def sent(self) -> int:
        return len(self.recovered) + len(self.never_sent) + len(self.missing) + len(self.expired)


class Dispatcher:
    def __init__(self, app: Celery, services: Services) -> None:
        self.app, self.services = app, services
        self._previous_deficit = 0
        self._broker_run: str | None = None

    @property
    def grace(self) -> dt.timedelta:
        """How old a message must be before it can count as missing (two heartbeats, at least 5 s)."""
        return dt.timedelta(seconds=max(5.0, 2 * self.services.settings.heartbeat_seconds))

    def broker_restarted(self) -> bool:
        """True when the broker is a new process since the last look (Redis ``run_id``): whatever was
        queued in it before is gone. Other brokers cannot tell; they rely on the confirmed deficit."""
        try:
            with self.app.connection_for_read() as conn:
                client = getattr(conn.default_channel, "client", None)
                run = str(client.info("server")["run_id"]) if client is not None else None
        except Exception:
            return False
        previous, self._broker_run = self._broker_run, run
        return run is not None and previous is not None and run != previous

    def waiting_messages(self) -> int | None:
        """Messages waiting in the broker for the workers' queues, or None if the broker cannot tell."""
        try:
            with self.app.connection_for_read() as conn:
                channel = conn.default_channel
                total = 0
                for queue in worker_queues(self.services.settings.queue):
                    try:
                        total += int(channel.queue_declare(queue=queue, passive=True).message_count)
                    except Exception as exc:  # a queue the broker does not know (yet) holds nothing
                        if "NOT_FOUND" not in str(exc) and "404" not in str(exc):
                            raise
                return total
        except Exception:
            log.warning("could not count the broker's waiting messages", exc_info=True)
            return None

    def send(self, job_id: str, sent_before: dt.datetime | None, now: dt.datetime) -> bool:
        """(Re-)send one job's message if this monitor wins the right to."""
        sf = self.services.sessions
        if not repo.claim_dispatch(sf, job_id, sent_before=sent_before, now=now):
            return False
        job = repo.get_job(sf, job_id)
        return send_counted(self.app, sf, job_id, job.priority if job is not None else "normal")

    def sweep(self, recovered: list[str], now: dt.datetime | None = None) -> SweepReport:
        sf = self.services.sessions
        now = now or utcnow()
        report = SweepReport()
        with repo.sweep_lock(sf) as mine:
            if not mine:  # another monitor is sweeping right now
                return report
            report.recovered = [j for j in recovered if self.send(j, now, now)]
            for job_id in repo.never_dispatched(sf, created_before=now - dt.timedelta(seconds=2)):
                if self.send(job_id, None, now):
                    report.never_sent.append(job_id)
            restarted = self.broker_restarted()
            waiting = self.waiting_messages()  # first: messages consumed after this only lower the deficit
            cutoff = now if restarted else now - self.grace
            if waiting is not None:
                deficit = max(0, repo.count_dispatched_queued(sf, sent_before=cutoff) - waiting)
                confirmed = deficit if restarted else min(deficit, self._previous_deficit)
                self._previous_deficit = deficit
                if confirmed:
                    for job_id in repo.dispatched_queued(sf, sent_before=cutoff, limit=confirmed):
                        if self.send(job_id, cutoff, now):
                            report.missing.append(job_id)
            expired = now - dt.timedelta(seconds=VISIBILITY_TIMEOUT_S)
            for job_id in repo.dispatched_queued(sf, sent_before=expired, limit=500):
                if self.send(job_id, expired, now):
                    report.expired.append(job_id)
        for what, ids in (("re-sending recovered job", report.recovered), ("sending never-sent job", report.never_sent),
                          ("re-sending job whose message is missing", report.missing),
                          ("re-sending job past the visibility timeout", report.expired)):
            for job_id in ids:
                log.info("%s %s", what, job_id)
        return report
