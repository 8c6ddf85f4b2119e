"""What a worker's main process does besides consuming messages.

- Registers itself in the ``workers`` table and refreshes ``last_seen_at`` (the worker view and
  ``/healthz`` read it).
- Recovers jobs whose lease expired (their worker died): back to ``queued`` and re-sent, or failed after
  too many attempts.
- Re-sends queued jobs whose message may have been lost.
- On shutdown, hands its running jobs back to the queue.

All of this runs in a thread of the worker's *parent* process, which never imports an engine or
touches CUDA.
"""

from __future__ import annotations

import logging
import os
import socket
import threading

from celery import Celery
from celery.signals import worker_ready, worker_shutdown

from core.jobs import repository as repo
from core.models import Worker, utcnow
from core.services import Services, build_services
from core.settings import Settings
from worker.enqueue import enqueue_job

log = logging.getLogger(__name__)


def weights_report(settings: Settings) -> dict[str, object]:
    """Whether the style-transfer weights are usable, checked without downloading anything."""
    try:
        from core.engines.vgg import weights_status

        ok, message = weights_status(settings.vgg19_weights)
    except Exception as exc:  # the check must never stop a worker from starting
        ok, message = False, f"could not check the VGG-19 weights: {exc}"
    return {"vgg19_weights_ok": ok, "vgg19_weights": message}


class WorkerMonitor(threading.Thread):
    def __init__(self, app: Celery, services: Services, worker_id: str) -> None:
        super().__init__(name="atelier-monitor", daemon=True)
        self.app, self.services, self.worker_id = app, services, worker_id
        self.stopped = threading.Event()

    def register(self) -> None:
        s = self.services.settings
        info = weights_report(s)
        level = logging.INFO if info["vgg19_weights_ok"] else logging.WARNING
        log.log(level, "VGG-19 weights: %s", info["vgg19_weights"])
        repo.register_worker(self.services.sessions, Worker(
            id=self.worker_id, hostname=socket.gethostname(), pid=os.getpid(), queues=s.queue, device=s.device,
            state="online", info=info, started_at=utcnow(), last_seen_at=utcnow(), current_job_id=None))

    def sweep(self, resend_older_than: float) -> None:
        sf = self.services.sessions
        requeued, failed = repo.recover_expired(sf)
        for job_id in failed:
            log.warning("job %s failed: its worker stopped responding too many times", job_id)
        for job_id in requeued + repo.stale_queued(sf, resend_older_than):
            log.info("re-sending job %s", job_id)
            enqueue_job(self.app, job_id)

    def run(self) -> None:
        s = self.services.settings
        first = True
        while True:
            try:
                repo.touch_worker(self.services.sessions, self.worker_id)
                self.sweep(0 if first else max(30.0, 2 * s.lease_seconds))
                first = False
            except Exception:
                log.exception("worker monitor sweep failed; retrying")
            if self.stopped.wait(s.heartbeat_seconds):
                return

    def shutdown(self) -> None:
        self.stopped.set()
        try:
            released = repo.release_worker_jobs(self.services.sessions, self.worker_id)
            repo.touch_worker(self.services.sessions, self.worker_id, state="stopped", current_job_id=None)
            for job_id in released:
                log.info("handing job %s back to the queue", job_id)
                enqueue_job(self.app, job_id)
        except Exception:
            log.exception("could not release jobs at shutdown; their leases will expire")


def install(app: Celery, settings: Settings) -> None:
    """Connect the lifecycle hooks for a worker started from this process."""
    state: dict[str, WorkerMonitor] = {}

    def on_ready(sender, **_kw):  # type: ignore[no-untyped-def]
        services = build_services(settings)
        monitor = WorkerMonitor(app, services, sender.hostname)
        monitor.register()
        monitor.start()
        state["monitor"] = monitor
        log.info("worker %s ready on queue %s (device %s)", sender.hostname, settings.queue, settings.device)

    def on_shutdown(**_kw):  # type: ignore[no-untyped-def]
        monitor = state.get("monitor")
        if monitor is not None:
            monitor.shutdown()

    worker_ready.connect(on_ready, weak=False)
    worker_shutdown.connect(on_shutdown, weak=False)
