"""The ``atelier`` command line.

Service commands (``up``, ``serve``, ``worker``, ``db``) live here; engine commands
(``style-transfer``, ``translate``, ``cyclegan train``, ``pix2pix train``) live in their own modules and
are listed explicitly below. This package is the composition root: it is the only place that knows
about core, web and worker together.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import logging
import os
import signal
import subprocess
import sys

from core.errors import ConfigError
from core.settings import Settings, load_settings

log = logging.getLogger("atelier")


def _setup_logging(settings: Settings) -> None:
    from core.logging_setup import configure

    configure(settings.log_level, settings.log_format)


# -- db -------------------------------------------------------------------------------------------
def cmd_db(args: argparse.Namespace, settings: Settings) -> int:
    from core import db

    url = settings.resolved_database_url
    if args.db_command == "upgrade":
        db.upgrade(url)
        print(f"database at revision {db.head_revision()}")
        return 0
    engine = db.make_engine(url)
    try:
        print(db.current_revision(engine) or "(not migrated)")
    finally:
        engine.dispose()
    return 0


# -- serve ----------------------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from waitress import serve

    from core.auth import require_safe_bind
    from web import create_app

    require_safe_bind(settings)  # auth off on a non-loopback address is refused before anything starts
    workers = getattr(args, "workers", None) or settings.web_workers
    if workers > 1:  # several processes: gunicorn (see atelier/multiprocess_server.py)
        from atelier.multiprocess_server import serve_multiprocess

        return serve_multiprocess(settings, workers=workers, threads=args.threads + settings.max_streams)
    app = create_app(settings)
    log.info("serving on http://%s:%d", settings.host, settings.port)
    if not settings.host_allow_list:
        log.warning("bound to %s with no host allow-list: any Host name is answered (DNS rebinding); set "
                    "ATELIER_ALLOWED_HOSTS to the names clients use", settings.host)
    # Event streams and `Prefer: wait` hold a thread each while open: they get ATELIER_MAX_STREAMS threads
    # of their own on top of --threads (web.stream refuses more), so ordinary requests never queue behind
    # them. The lookahead lets a stream notice a closed connection between its reads (web.stream).
    serve(app, host=settings.host, port=settings.port, threads=args.threads + settings.max_streams, ident="atelier",
          connection_limit=max(100, 2 * (args.threads + settings.max_streams)), channel_request_lookahead=1,
          max_request_body_size=settings.max_upload_mb * 1024 * 1024 + 1024 * 1024, _quiet=True)
    return 0


# -- webhook-secret -------------------------------------------------------------------------------
def cmd_webhook_secret(args: argparse.Namespace, settings: Settings) -> int:
    """Print the key webhook deliveries are signed with: the server's (jobs without an owner), or with
    ``--owner NAME`` that owner's token's."""
    from core import webhooks
    from core.auth import webhook_secret_for
    from core.services import build_services

    if args.owner is None:
        print(webhooks.server_secret(settings))
        return 0
    services = build_services(settings)
    try:
        secret = webhook_secret_for(services.sessions, args.owner)
    finally:
        services.close()
    if secret is None:
        print(f"atelier: no live token named {args.owner!r}", file=sys.stderr)
        return 1
    print(secret)
    return 0


# -- worker ---------------------------------------------------------------------------------------
def worker_argv(settings: Settings, concurrency: int | None = None, name: str | None = None) -> list[str]:
    from worker.celery_app import worker_queues

    argv = ["worker", "-Q", ",".join(worker_queues(settings.queue)), "-n", name or f"atelier-{os.getpid()}@%h",
            "-c", str(concurrency or settings.worker_concurrency), "-P", "prefork",
            "--loglevel", settings.log_level.upper()]
    if settings.embedded_broker:
        argv += ["--without-mingle", "--without-gossip", "--without-heartbeat"]
    if settings.log_format == "json":
        argv = ["--quiet", *argv]  # no start-up banner: every line on stdout/stderr is a JSON object
    return argv


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from core.services import build_services
    from worker import lifecycle
    from worker.celery_app import create_celery

    build_services(settings).close()  # refuses to start on an unmigrated database
    app = create_celery(settings)
    lifecycle.install(app, settings)
    app.worker_main(worker_argv(settings, args.concurrency, args.name))
    return 0


# -- up -------------------------------------------------------------------------------------------
def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    """Embedded mode: migrate, start one worker process, serve the web app; Ctrl-C stops both."""
    from core import db
    from core.auth import require_safe_bind

    require_safe_bind(settings)  # before the worker starts: nothing to stop when the bind is refused
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db.upgrade(settings.resolved_database_url)
    env = dict(os.environ, ATELIER_DATA_DIR=str(settings.data_dir.resolve()))
    worker = subprocess.Popen([sys.executable, "-m", "atelier", "worker"], env=env, start_new_session=True)
    log.info("worker started (pid %d); web on http://%s:%d", worker.pid, settings.host, settings.port)

    def stop_worker() -> None:
        if worker.poll() is not None:
            return
        worker.send_signal(signal.SIGTERM)  # warm shutdown: an idle worker exits at once
        try:
            worker.wait(timeout=5)
        except subprocess.TimeoutExpired:
            # A job is running: cold shutdown. The worker hands the job back to the queue on its way out
            # (or its lease expires), and the next start continues it.
            os.killpg(worker.pid, signal.SIGQUIT)
            try:
                worker.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()

    def on_term(_sig: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    try:
        return cmd_serve(args, settings)
    except KeyboardInterrupt:
        return 0
    finally:
        # A second signal (a supervisor and its child both forwarding one) must not break the shutdown
        # halfway; stopping the worker is bounded (5 s warm, then 15 s cold) anyway.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        log.info("stopping the worker")
        stop_worker()


# -- engine commands ------------------------------------------------------------------------------
def resolve_model_id(model_id: str, settings: Settings):  # type: ignore[no-untyped-def]
    """``atelier translate --model ID``: a registered model's directory, from the configured database."""
    from core import resources
    from core.services import build_services

    services = build_services(settings)
    try:  # a local copy (a download on an object store) that lasts until the command exits
        copies = contextlib.ExitStack()
        atexit.register(copies.close)
        return copies.enter_context(resources.local_copy(services, "models", model_id))
    finally:
        services.close()


# -- retention ------------------------------------------------------------------------------------
def cmd_gc(args: argparse.Namespace, settings: Settings) -> int:
    """``atelier gc``: remove finished jobs' files, orphans and stale temporary files (see core.retention)."""
    import datetime as dt
    import json

    from core import retention
    from core.services import build_services
    from core.settings import parse_duration

    try:
        older_than = parse_duration(args.older_than) if args.older_than else settings.gc_older_than
    except ValueError:
        print(f"atelier gc: --older-than {args.older_than!r} is not a duration (e.g. 30d, 12h, 90m, 3600)",
              file=sys.stderr)
        return 2
    services = build_services(settings)
    try:
        with retention.gc_lock(services) as mine:
            if not mine:
                print("atelier gc: another retention run is in progress; try again later", file=sys.stderr)
                return 1
            report = retention.collect(services, dt.timedelta(seconds=older_than), dry_run=args.dry_run)
    finally:
        services.close()
    if args.json:
        print(json.dumps({"dry_run": report.dry_run, "cutoff": report.cutoff.isoformat(), "bytes": report.bytes,
                          "removals": [vars(r) for r in report.removals]}))
    else:
        print("\n".join(report.lines()))
    return 0


# -- parser ---------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from atelier import cli_gan, cli_style_transfer, cli_tokens

    parser = argparse.ArgumentParser(prog="atelier", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("up", help="embedded mode: web + one worker, SQLite and a file broker under ATELIER_DATA_DIR")
    p.add_argument("--threads", type=int, default=8, help="web server threads")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("serve", help="the web app and API (distributed mode)")
    p.add_argument("--threads", type=int, default=8, help="web server threads")
    p.add_argument("--workers", type=int, default=None,
                   help="web processes (default ATELIER_WEB_WORKERS, 1); more than 1 runs gunicorn")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("worker", help="a worker: one per GPU")
    p.add_argument("--concurrency", type=int, default=None, help="jobs at once (default ATELIER_WORKER_CONCURRENCY)")
    p.add_argument("--name", default=None, help="Celery node name (default atelier-PID@HOST)")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("webhook-secret", help="print the secret that signs webhook deliveries")
    p.add_argument("--owner", default=None, help="a token's name: its secret (default: the server's, for jobs "
                   "submitted with auth off)")
    p.set_defaults(func=cmd_webhook_secret)

    p = sub.add_parser("gc", help="retention: remove finished jobs' files, orphans and stale temporary files")
    p.add_argument("--older-than", default=None, metavar="AGE",
                   help="files of jobs finished longer ago than this (30d, 12h, 90m, seconds; default "
                        "ATELIER_GC_OLDER_THAN, 30d)")
    p.add_argument("--dry-run", action="store_true", help="list what would be removed; remove nothing")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_gc)

    p = sub.add_parser("db", help="database migrations")
    p.add_argument("db_command", choices=["upgrade", "current"])
    p.set_defaults(func=cmd_db)

    cli_tokens.add_parser(sub)
    cli_style_transfer.add_parser(sub)
    cli_gan.add_parsers(sub, resolve_model=resolve_model_id)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"atelier: configuration error: {exc}", file=sys.stderr)
        return 2
    _setup_logging(settings)
    try:
        return int(args.func(args, settings) or 0)
    except ConfigError as exc:
        print(f"atelier: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
