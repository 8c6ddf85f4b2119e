"""``atelier serve --workers N`` (N > 1): the web app in N gunicorn processes of ``--threads`` threads.

One waitress process is GIL-bound: submissions and status reads top out at one core. gunicorn's
``gthread`` workers run the same WSGI app in several processes on one port. Each process builds its own
app (and database pool) after the fork (no ``preload_app``), so no connection crosses a fork.

Request-latency metrics must add up over the processes, whichever one a scrape reaches: before any
worker starts, prometheus_client's multiprocess mode is switched on with a fresh directory private to
this server (a local temporary directory, never the shared data volume: two hosts' processes must not
mix), and a worker that exits is marked dead so its live gauges go. The directory is removed on exit.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from typing import Any

from core.settings import Settings

log = logging.getLogger("atelier")

#: Seconds a request may take before gunicorn replaces its worker (uploads of 50 MB on a slow link).
REQUEST_TIMEOUT_S = 300


def serve_multiprocess(settings: Settings, *, workers: int, threads: int) -> int:
    from gunicorn.app.base import BaseApplication

    if "prometheus_client" in sys.modules:  # its mode is fixed at import; nothing here imported it yet
        raise RuntimeError("prometheus_client was imported before the multiprocess server set it up")
    metrics_dir = tempfile.mkdtemp(prefix="atelier-metrics-")
    # prometheus_client reads this variable itself (not an Atelier setting): the workers inherit it.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir

    def child_exit(_server: Any, worker: Any) -> None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid, metrics_dir)

    def on_exit(_server: Any) -> None:
        shutil.rmtree(metrics_dir, ignore_errors=True)

    options = {
        "bind": f"[{settings.host}]:{settings.port}" if ":" in settings.host else f"{settings.host}:{settings.port}",
        "workers": workers,
        "threads": threads,
        "worker_class": "gthread",
        "timeout": REQUEST_TIMEOUT_S,
        "graceful_timeout": 30,
        "keepalive": 5,
        "proc_name": "atelier-web",
        "accesslog": None,
        "loglevel": settings.log_level.lower(),
        "child_exit": child_exit,
        "on_exit": on_exit,
    }

    class AtelierServer(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            from web import create_app

            return create_app(settings, metrics_dir=metrics_dir)

    log.info("serving on http://%s:%d with %d processes x %d threads (gunicorn)", settings.host, settings.port,
             workers, threads)
    AtelierServer().run()
    return 0
