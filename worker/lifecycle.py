"""What a worker does besides consuming messages.

Identity: every process that runs jobs is ``<node>:<pid>`` (``w1@host:4242``): a Celery node with
``ATELIER_WORKER_CONCURRENCY > 1`` has several pool children, and the guarded writes of the job table
(claim, lease renewal, progress, finish) must tell them apart. Each pool child registers its own row in
``workers`` when it starts, keeps it fresh (a small thread), and marks it stopped when it exits; the
workers page and ``/healthz`` list these rows.

The node's main process (which never imports an engine or touches CUDA) runs the monitor thread:
- recovers jobs whose lease expired (their process died): back to ``queued`` and re-sent, or failed
  after too many attempts;
- sends queued jobs whose message was never sent or is missing (:mod:`worker.dispatch`);
- sends webhook deliveries (:mod:`worker.webhooks`, its own thread);
- on its way out, warm or cold (a second Ctrl-C, SIGQUIT, SIGTERM after the grace period: Celery's
  ``worker_shutdown`` does not fire then, so an ``atexit`` hook does the same), hands the jobs of its
  processes back to the queue without spending their attempt, and marks its processes stopped.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import threading

from celery import Celery
from celery.signals import (
    celeryd_init,
    task_postrun,
    task_prerun,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)

from core.jobs import repository as repo
from core.jobs.progress import TRANSIENT_DB_ERRORS
from core.logging_setup import job_log_context, set_process_worker
from core.models import Worker, utcnow
from core.retention import PeriodicGc
from core.services import Services, build_services
from core.settings import Settings
from worker.dispatch import Dispatcher
from worker.threads import prefer_passive_waiting
from worker.webhooks import WebhookSender

log = logging.getLogger(__name__)

#: This node's name (``w1@host``), set in the main process before the pool forks its children.
_node: dict[str, str] = {}


def process_id(node: str, pid: int | None = None) -> str:
    """The identity of one job-running process: ``<node>:<pid>``."""
    return f"{node}:{pid or os.getpid()}"


def node_name() -> str:
    return _node.get("name") or f"atelier-{os.getppid()}@{socket.gethostname()}"


def weights_report(settings: Settings) -> dict[str, object]:
    """Whether the style-transfer weights are usable, checked without downloading anything."""
    try:
        from core.engines.vgg import weights_status

        ok, message = weights_status(settings.vgg19_weights)
    except Exception as exc:  # the check must never stop a worker from starting
        ok, message = False, f"could not check the VGG-19 weights: {exc}"
    return {"vgg19_weights_ok": ok, "vgg19_weights": message}


class ProcessPresence(threading.Thread):
    """A pool child's row in ``workers``: registered at start, refreshed every heartbeat, stopped at exit."""

    def __init__(self, services: Services, worker_id: str) -> None:
        super().__init__(name="atelier-presence", daemon=True)
        self.services, self.worker_id = services, worker_id
        self.stopped = threading.Event()

    def register(self) -> None:
        s = self.services.settings
        info = weights_report(s)
        level = logging.INFO if info["vgg19_weights_ok"] else logging.WARNING
        log.log(level, "VGG-19 weights: %s", info["vgg19_weights"])
        repo.register_worker(self.services.sessions, Worker(
            id=self.worker_id, hostname=socket.gethostname(), pid=os.getpid(), queues=s.queue, device=s.device,
            state="online", info=info, started_at=utcnow(), last_seen_at=utcnow(), current_job_id=None))

    def run(self) -> None:
        while not self.stopped.wait(self.services.settings.heartbeat_seconds):
            try:
                repo.touch_worker(self.services.sessions, self.worker_id)
            except Exception:  # the database may be briefly away; the next beat retries
                log.warning("could not refresh worker %s", self.worker_id, exc_info=True)

    def stop(self) -> None:
        self.stopped.set()
        try:
            repo.touch_worker(self.services.sessions, self.worker_id, state="stopped", current_job_id=None)
        except Exception:
            log.warning("could not mark worker %s stopped", self.worker_id, exc_info=True)


class WorkerMonitor(threading.Thread):
    """The node's recovery and dispatch loop (in the main process)."""

    def __init__(self, app: Celery, services: Services, node: str) -> None:
        super().__init__(name="atelier-monitor", daemon=True)
        self.app, self.services, self.node = app, services, node
        self.stopped = threading.Event()
        self.dispatcher = Dispatcher(app, services)
        self.gc = PeriodicGc(services)  # retention every ATELIER_GC_INTERVAL (off by default)
        self._shut_down = threading.Lock()
        self._done = False

    def sweep(self) -> None:
        sf = self.services.sessions
        requeued, failed = repo.recover_expired(sf)
        for job_id in failed:
            log.warning("job %s failed: its worker stopped responding too many times", job_id)
        self.dispatcher.sweep(requeued)
        self.gc.tick()

    def run(self) -> None:
        while True:
            try:
                self.sweep()
            except TRANSIENT_DB_ERRORS as exc:  # an outage: one line per sweep, not a traceback
                log.warning("worker monitor sweep failed (%s); retrying", exc.__class__.__name__)
            except Exception:
                log.exception("worker monitor sweep failed; retrying")
            if self.stopped.wait(self.services.settings.heartbeat_seconds):
                return

    def shutdown(self) -> None:
        """Hand this node's running jobs back to the queue (their attempt not counted) and mark its
        processes stopped. Idempotent: called by ``worker_shutdown`` and again by ``atexit``."""
        with self._shut_down:
            if self._done:
                return
            self._done = True
        self.stopped.set()
        try:
            released = repo.release_worker_jobs(self.services.sessions, self.node)
            repo.stop_node_workers(self.services.sessions, self.node)
            now = utcnow()
            for job_id in released:
                log.info("handing job %s back to the queue", job_id)
                self.dispatcher.send(job_id, now, now)
        except Exception:
            log.exception("could not release jobs at shutdown; their leases will expire")


def install(app: Celery, settings: Settings) -> None:
    """Connect the lifecycle hooks for a worker started from this process."""
    state: dict[str, object] = {}
    # Before the pool forks and before any import of torch: see worker.threads.
    applied = prefer_passive_waiting()
    if applied:
        log.info("OpenMP: %s (a busy neighbour core does not stall the job's threads)",
                 ", ".join(f"{k}={v}" for k, v in applied.items()))

    def on_init(sender=None, **_kw):  # type: ignore[no-untyped-def]
        _node["name"] = str(sender)  # before the pool forks: the children inherit it
        set_process_worker(str(sender))

    def on_ready(sender, **_kw):  # type: ignore[no-untyped-def]
        monitor = WorkerMonitor(app, build_services(settings), _node.get("name") or sender.hostname)
        monitor.start()
        state["monitor"] = monitor
        hooks = WebhookSender(monitor.services)  # webhooks go out from here, never from a web request
        hooks.start()
        state["webhooks"] = hooks
        atexit.register(hooks.stop)
        atexit.register(monitor.shutdown)  # cold shutdowns skip worker_shutdown
        log.info("worker %s ready on queues %s (device %s)", monitor.node, settings.queue, settings.device)

    def on_shutdown(**_kw):  # type: ignore[no-untyped-def]
        hooks = state.get("webhooks")
        if isinstance(hooks, WebhookSender):
            hooks.stop()
        monitor = state.get("monitor")
        if isinstance(monitor, WorkerMonitor):
            monitor.shutdown()

    def on_process_init(**_kw):  # type: ignore[no-untyped-def]
        from worker.tasks import worker_services

        set_process_worker(process_id(node_name()))
        presence = ProcessPresence(worker_services(), process_id(node_name()))
        try:
            presence.register()
        except Exception:
            log.exception("could not register worker %s", presence.worker_id)
        presence.start()
        state["presence"] = presence

    def on_process_shutdown(**_kw):  # type: ignore[no-untyped-def]
        presence = state.get("presence")
        if isinstance(presence, ProcessPresence):
            presence.stop()

    def on_task_prerun(task_id=None, args=None, **_kw):  # type: ignore[no-untyped-def]
        # Celery's own lines about the task (its "succeeded in" line) carry the job too; the runner
        # adds the attempt once it has claimed the job.
        if args:
            scope = job_log_context(str(args[0]), worker=process_id(node_name()))
            scope.__enter__()
            task_scopes[task_id] = scope

    def on_task_postrun(task_id=None, **_kw):  # type: ignore[no-untyped-def]
        scope = task_scopes.pop(task_id, None)
        if scope is not None:
            scope.__exit__(None, None, None)

    task_scopes: dict[str, object] = {}
    celeryd_init.connect(on_init, weak=False)
    task_prerun.connect(on_task_prerun, weak=False)
    task_postrun.connect(on_task_postrun, weak=False)
    worker_ready.connect(on_ready, weak=False)
    worker_shutdown.connect(on_shutdown, weak=False)
    worker_process_init.connect(on_process_init, weak=False)
    worker_process_shutdown.connect(on_process_shutdown, weak=False)
