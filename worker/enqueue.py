"""The thin functions through which web (and the workers' monitors) hand work to the broker."""

from __future__ import annotations

import logging

from celery import Celery

from core.models import Job

from worker.celery_app import TASK_NAME, queue_for

log = logging.getLogger(__name__)


def enqueue_job(app: Celery, job_id: str, priority: str = "normal") -> bool:
    """Send "job X has work" to the queue of its priority. Returns False when the broker is unreachable;
    the job stays ``queued`` in the table (see :func:`send_counted`) and a worker's monitor sends it."""
    try:
        app.send_task(TASK_NAME, args=[job_id], queue=queue_for(app.conf.task_default_queue, priority), retry=True,
                      retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5})
        return True
    except Exception:
        log.exception("could not enqueue job %s; it stays queued and will be sent by a worker", job_id)
        return False


def send_counted(app: Celery, sessions, job_id: str, priority: str = "normal") -> bool:  # type: ignore[no-untyped-def]
    """Send a message that the job's row already counts (taken with ``claim_dispatch``, or inserted with
    ``submit_job(..., dispatching=True)``). When the broker is unreachable the count is undone, so the job
    is "never sent" again, which a worker's monitor sends, and False is returned. Counting before sending
    is what keeps two senders (a web process and a monitor's sweep) from both sending one job."""
    from core.jobs import repository as repo

    if enqueue_job(app, job_id, priority):
        return True
    repo.forget_dispatch(sessions, job_id)
    return False


def dispatch_new_job(app: Celery, sessions, job_id: str, priority: str = "normal") -> bool:  # type: ignore[no-untyped-def]
    """Send the message of a queued job that has none (a retried job): counted first, then sent. False when
    another sender counted it first or the broker is unreachable."""
    from core.jobs import repository as repo

    if not repo.claim_dispatch(sessions, job_id, sent_before=None):
        return False
    return send_counted(app, sessions, job_id, priority)


def send_submitted(app: Celery, sessions, job: Job) -> bool:  # type: ignore[no-untyped-def]
    """:func:`send_counted` for a job just inserted with its message counted: one write per submit instead
    of two; a failed send is undone on the caller's copy of the row too."""
    if send_counted(app, sessions, job.id, job.priority):
        return True
    job.dispatched_at, job.dispatch_count = None, max(0, job.dispatch_count - 1)
    return False
