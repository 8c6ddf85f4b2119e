"""The thin functions through which web (and the workers' monitors) hand work to the broker."""

from __future__ import annotations

import logging

from celery import Celery

from core.models import Job

from worker.celery_app import TASK_NAME, queue_for

log = logging.getLogger(__name__)


def enqueue_job(app: Celery, job_id: str, priority: str = "normal") -> bool:
    """Send "job X has work" to the queue of its priority. Returns False when the broker is unreachable:
    the job stays ``queued`` in the table (never marked as dispatched) and a worker's monitor sends it."""
    try:
        app.send_task(TASK_NAME, args=[job_id], queue=queue_for(app.conf.task_default_queue, priority), retry=True,
                      retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5})
        return True
    except Exception:
        log.exception("could not enqueue job %s; it stays queued and will be sent by a worker", job_id)
        return False


def dispatch_new_job(app: Celery, sessions, job_id: str, priority: str = "normal") -> bool:  # type: ignore[no-untyped-def]
    """Send a just-submitted job's message and record it in the row (the monitors' bookkeeping)."""
    from core.jobs import repository as repo

    if not enqueue_job(app, job_id, priority):
        return False
    try:
        repo.mark_dispatched(sessions, job_id)
    except Exception:  # the message is out; a missing mark costs at most one harmless duplicate
        log.exception("job %s: sent, but could not record it", job_id)
    return True


def send_submitted(app: Celery, sessions, job: Job) -> bool:  # type: ignore[no-untyped-def]
    """Send the message of a job inserted with it already counted (``submit_job(..., dispatching=True)``):
    one write per submit instead of two. When the broker is unreachable the count is undone (the job is
    "never sent" again, which a worker's monitor sends) and False is returned."""
    from core.jobs import repository as repo

    if enqueue_job(app, job.id, job.priority):
        return True
    repo.forget_dispatch(sessions, job.id)
    job.dispatched_at, job.dispatch_count = None, max(0, job.dispatch_count - 1)
    return False
