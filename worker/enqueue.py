"""The thin function through which web (and the worker's own recovery loop) hands work to the broker."""

from __future__ import annotations

import logging

from celery import Celery

from worker.celery_app import TASK_NAME

log = logging.getLogger(__name__)


def enqueue_job(app: Celery, job_id: str) -> bool:
    """Send "job X has work". Returns False when the broker is unreachable: the job stays ``queued`` in
    the table and a worker's recovery loop re-sends it, so the caller need not fail the request."""
    try:
        app.send_task(TASK_NAME, args=[job_id], queue=app.conf.task_default_queue, retry=True,
                      retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5})
        return True
    except Exception:
        log.exception("could not enqueue job %s; it stays queued and will be re-sent", job_id)
        return False
