"""Celery application factory.

JSON only (no pickle ever crosses the broker), late acks and a prefetch of one (a worker holds at most
the job it runs), every job on the ``gpu`` queue. The message carries only a job id: the table is the
source of truth, so a lost or duplicated message does no harm. The same factory serves the embedded mode
(kombu's filesystem transport under the data directory, no server) and the distributed mode (Redis).
"""

from __future__ import annotations

from celery import Celery

from core.settings import Settings

TASK_NAME = "atelier.run_job"


def queue_for(queue: str, priority: str) -> str:
    """The queue a job of ``priority`` goes to: ``<queue>.high`` for high, which workers serve first."""
    return f"{queue}.high" if priority == "high" else queue


def worker_queues(queue: str) -> list[str]:
    """What a worker consumes, in the order it serves them."""
    return [queue_for(queue, "high"), queue]


#: Seconds before Redis hands an unacknowledged message to another worker (see worker.dispatch).
VISIBILITY_TIMEOUT_S = 6 * 3600


def celery_config(settings: Settings) -> dict[str, object]:
    conf: dict[str, object] = {
        "broker_url": settings.resolved_broker_url,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "event_serializer": "json",
        "task_ignore_result": True,
        "result_backend": None,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": settings.queue,
        "task_routes": {TASK_NAME: {"queue": settings.queue}},  # normal priority; high is sent explicitly
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
        "worker_concurrency": settings.worker_concurrency,
        # A pool child whose resident memory grew past the limit during a job (a big decode, a leak in a
        # library) is replaced once that job ends, so memory held after a job is given back.
        "worker_max_memory_per_child": settings.worker_max_memory_mb * 1024 or None,
        # Task events (sent, received, started, succeeded...) let Flower and `celery events` watch the
        # workers. They go to the broker's event exchange (a Redis pub/sub channel: nothing is stored when
        # no monitor listens) and are not job messages: the one-message-per-job count is unaffected.
        "worker_send_task_events": not settings.embedded_broker,
        "task_send_sent_event": not settings.embedded_broker,
        "enable_utc": True,
    }
    if settings.embedded_broker:
        folder = str(settings.broker_dir / "queue")
        conf["broker_transport_options"] = {
            "data_folder_in": folder,
            "data_folder_out": folder,
            "control_folder": str(settings.broker_dir / "control"),
            "store_processed": False,
        }
    else:
        # Long jobs outlive Redis' default visibility timeout (1 h); a redelivery is harmless (the claim
        # fails), but we avoid it for the common case. "priority" order: a worker's BRPOP lists its
        # queues in the order given (high first), so a waiting high-priority job is always taken first.
        conf["broker_transport_options"] = {"visibility_timeout": VISIBILITY_TIMEOUT_S,
                                            "queue_order_strategy": "priority"}
    return conf


def create_celery(settings: Settings) -> Celery:
    if settings.embedded_broker:
        for sub in ("queue", "control"):
            (settings.broker_dir / sub).mkdir(parents=True, exist_ok=True)
    app = Celery("atelier", set_as_current=True)
    app.conf.update(celery_config(settings))
    app.conf.atelier_settings = settings
    app.autodiscover_tasks(["worker"], related_name="tasks", force=True)
    return app
