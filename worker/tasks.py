"""The one Celery task: run a job by id (everything else comes from the row)."""

from __future__ import annotations

import logging
import os

from celery import shared_task

from core.jobs.runner import run_job
from core.services import Services, build_services
from core.settings import load_settings
from worker.lifecycle import node_name, process_id

log = logging.getLogger(__name__)

_services: tuple[int, Services] | None = None


def worker_services() -> Services:
    """Services for this process, built on first use *in* the process (a forked pool child must not
    reuse its parent's database connections)."""
    global _services
    if _services is None or _services[0] != os.getpid():
        _services = (os.getpid(), build_services(load_settings()))
    return _services[1]


def configure_torch(threads: int) -> int:
    """Per-task torch set-up; imported here so the worker's parent process never loads CUDA. Returns
    the number of threads torch will use."""
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


@shared_task(name="atelier.run_job", ignore_result=True, acks_late=True, bind=True)
def run_job_task(self, job_id: str) -> str:  # type: ignore[no-untyped-def]
    services = worker_services()
    configure_torch(services.settings.torch_threads)
    # Each pool child is its own worker: "<node>:<pid>" on the lease and every guarded write.
    worker_id = process_id(self.request.hostname or node_name())
    outcome = run_job(services, job_id, worker_id)
    log.info("job %s: %s%s", job_id, outcome.status, f" ({outcome.error})" if outcome.error else "")
    return outcome.status
