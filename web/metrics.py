"""``GET /metrics``: Prometheus text format, every name prefixed ``atelier_``.

Two sources, chosen so that the numbers are right however many web processes answer scrapes:

- **What the job table knows** (jobs by kind and status, queue depth and age, job duration, queue wait
  and attempts, workers online and busy) is read from PostgreSQL/SQLite by :class:`TableCollector` at
  scrape time: every web process reads the same rows, so any process answers with the same numbers, and
  jobs finished by workers (which no web process sees) are counted. The histograms are cumulative over
  the whole table (rows are never deleted: a deleted job is a tombstone), so they only grow, as
  Prometheus expects of a histogram; each is one aggregate query (bucket counts are ``SUM(CASE ...)``),
  and the result is cached for ``ATELIER_METRICS_CACHE_SECONDS`` so that scrapes stay cheap.
- **What only a web process sees** (request latency by route) is a histogram observed per request. One
  process (``atelier serve``, waitress threads) keeps it in memory; several processes (``atelier serve
  --workers N``, gunicorn) use prometheus_client's multiprocess mode: each process writes its samples to
  a memory-mapped file in a directory private to that server, and a scrape of any process sums them
  all. The route label is the Flask URL rule (``/api/v1/jobs/<job_id>``), never the raw path, so the
  number of series is bounded by the routes.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import ColumnElement, case, func, select

from core.models import JOB_STATUSES, PRIORITIES, TERMINAL_STATUSES, Job, Worker, as_utc
from core.services import Services
from web.auth import is_admin

bp = Blueprint("metrics", __name__)

#: Request latency (seconds): a page or a status read takes milliseconds, an upload up to seconds.
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Job run time (first start to end): tiny test jobs take a fraction of a second, a training days.
DURATION_BUCKETS = (0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 12 * 3600, 48 * 3600)
#: Time from submit to the first start: milliseconds on an idle service, hours behind a backlog.
WAIT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600)
#: Claims a finished job took (1 = never retried; the default cap is 3).
ATTEMPT_BUCKETS = (1, 2, 3, 5, 10)
WORKER_STATES = ("online", "busy", "lost", "stopped")


def seconds_between(services: Services, start: Any, end: Any) -> ColumnElement[float]:
    """``end - start`` in seconds, as SQL the configured database understands."""
    if services.engine.dialect.name == "postgresql":
        return func.extract("epoch", end - start)
    return (func.julianday(end) - func.julianday(start)) * 86400.0


def _bucket_columns(value: ColumnElement[Any], buckets: Sequence[float]) -> list[ColumnElement[Any]]:
    return [func.sum(case((value <= b, 1), else_=0)) for b in buckets]


def _histogram(name: str, doc: str, labels: list[str], rows: Iterable[Sequence[Any]],
               buckets: Sequence[float], n_labels: int) -> HistogramMetricFamily:
    """A histogram family from rows ``(*label values, count, sum, *cumulative bucket counts)``."""
    family = HistogramMetricFamily(name, doc, labels=labels)
    for row in rows:
        label_values = [str(v) for v in row[:n_labels]]
        count, total = int(row[n_labels] or 0), float(row[n_labels + 1] or 0.0)
        counts = [int(c or 0) for c in row[n_labels + 2:]]
        family.add_metric(label_values, [(_le(b), c) for b, c in zip(buckets, counts)] + [("+Inf", count)],
                          sum_value=max(total, 0.0))
    return family


def _le(bound: float) -> str:
    return repr(float(bound))


class TableCollector(Collector):
    """Job and worker metrics read from the tables, cached for ``cache_seconds`` (one query set per
    scrape interval per process, whatever the number of scrapers)."""

    def __init__(self, services: Services, queue: str, cache_seconds: float, broker: Any = None) -> None:
        self.services, self.queue, self.cache_seconds, self.broker = services, queue, cache_seconds, broker
        self._lock = threading.Lock()
        self._cached: tuple[float, list[Metric]] | None = None

    def describe(self) -> list[Metric]:
        return []  # collected on demand: registering must not query the database

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] >= self.cache_seconds:
                self._cached = (now, self._read())
            return list(self._cached[1])

    # -- the queries ------------------------------------------------------------------------------
    def _read(self) -> list[Metric]:
        from worker.celery_app import queue_for

        out: list[Metric] = []
        up = GaugeMetricFamily("atelier_metrics_table_read_ok", "1 if the last read of the job tables worked")
        try:
            with self.services.sessions() as s:
                out += self._jobs(s)
                out += self._queue(s, queue_for)
                out += self._durations(s)
                out += self._workers(s)
            up.add_metric([], 1)
        except Exception:  # the database is away: say so, and keep serving the request metrics
            up.add_metric([], 0)
        out.append(up)
        out += self._broker(queue_for)
        return out

    def _jobs(self, s: Any) -> list[Metric]:
        counts = {(k, st): n for k, st, n in s.execute(
            select(Job.kind, Job.status, func.count()).where(Job.deleted_at.is_(None)).group_by(Job.kind, Job.status))}
        jobs = GaugeMetricFamily("atelier_jobs", "Jobs in the table by kind and status (deleted jobs excluded)",
                                 labels=["kind", "status"])
        for kind in sorted({k for k, _ in counts}):
            for status in JOB_STATUSES:
                jobs.add_metric([kind, status], counts.get((kind, status), 0))
        return [jobs]

    def _queue(self, s: Any, queue_for: Any) -> list[Metric]:
        rows = {p: (n, oldest) for p, n, oldest in s.execute(
            select(Job.priority, func.count(), func.min(Job.created_at))
            .where(Job.status == "queued", Job.deleted_at.is_(None)).group_by(Job.priority))}
        depth = GaugeMetricFamily("atelier_queue_depth", "Queued jobs by queue (the table's count)",
                                  labels=["queue", "priority"])
        age = GaugeMetricFamily("atelier_queue_oldest_seconds", "Age of the oldest queued job (0 when none)",
                                labels=["queue", "priority"])
        now = dt.datetime.now(dt.timezone.utc)
        for priority in PRIORITIES:
            n, oldest = rows.get(priority, (0, None))
            labels = [queue_for(self.queue, priority), priority]
            depth.add_metric(labels, n)
            oldest = as_utc(oldest)
            age.add_metric(labels, max((now - oldest).total_seconds(), 0.0) if oldest is not None else 0.0)
        return [depth, age]

    def _durations(self, s: Any) -> list[Metric]:
        sv = self.services
        run = seconds_between(sv, Job.started_at, Job.finished_at)
        durations = s.execute(
            select(Job.kind, Job.status, func.count(), func.sum(run), *_bucket_columns(run, DURATION_BUCKETS))
            .where(Job.finished_at.is_not(None), Job.started_at.is_not(None))
            .group_by(Job.kind, Job.status).order_by(Job.kind, Job.status)).all()
        wait = seconds_between(sv, Job.created_at, Job.started_at)
        waits = s.execute(
            select(Job.kind, func.count(), func.sum(wait), *_bucket_columns(wait, WAIT_BUCKETS))
            .where(Job.started_at.is_not(None)).group_by(Job.kind).order_by(Job.kind)).all()
        attempts = s.execute(
            select(Job.kind, Job.status, func.count(), func.sum(Job.attempt),
                   *_bucket_columns(Job.attempt, ATTEMPT_BUCKETS))
            .where(Job.status.in_(TERMINAL_STATUSES)).group_by(Job.kind, Job.status)
            .order_by(Job.kind, Job.status)).all()
        return [
            _histogram("atelier_job_duration_seconds", "Run time of finished jobs (first start to end)",
                       ["kind", "status"], durations, DURATION_BUCKETS, 2),
            _histogram("atelier_job_queue_wait_seconds", "Time from submit to the first start of started jobs",
                       ["kind"], waits, WAIT_BUCKETS, 1),
            _histogram("atelier_job_attempts", "Claims each finished job took (1 = never retried)",
                       ["kind", "status"], attempts, ATTEMPT_BUCKETS, 2),
        ]

    def _workers(self, s: Any) -> list[Metric]:
        stale = max(3 * self.services.settings.heartbeat_seconds, 30.0)
        cutoff = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=stale)
        state = case((Worker.state == "stopped", "stopped"), (Worker.last_seen_at >= cutoff, Worker.state),
                     else_="lost")
        counts = dict(s.execute(select(state, func.count()).group_by(state)).all())
        workers = GaugeMetricFamily("atelier_workers", "Worker processes by state (lost: no heartbeat lately)",
                                    labels=["state"])
        for st in WORKER_STATES:
            workers.add_metric([st], counts.get(st, 0))
        return [workers]

    def _broker(self, queue_for: Any) -> list[Metric]:
        """Messages waiting in the broker per queue (Redis/AMQP only; about equal to the queue depth)."""
        if self.broker is None:
            return []
        family = GaugeMetricFamily("atelier_broker_messages_waiting", "Messages waiting in the broker",
                                   labels=["queue"])
        try:
            with self.broker.connection_for_read() as conn:
                channel = conn.default_channel
                for priority in reversed(PRIORITIES):
                    name = queue_for(self.queue, priority)
                    try:
                        n = int(channel.queue_declare(queue=name, passive=True).message_count)
                    except Exception as exc:  # a queue never declared holds nothing
                        if "NOT_FOUND" not in str(exc) and "404" not in str(exc):
                            raise
                        n = 0
                    family.add_metric([name], n)
        except Exception:
            return []
        return [family]


class RequestMetrics:
    """Per-request latency by route, and the registry ``/metrics`` renders."""

    def __init__(self, multiprocess_dir: str | None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        if multiprocess_dir:
            from prometheus_client import multiprocess, values

            if values.ValueClass is values.MutexValue:  # the env var must be set before the import
                raise RuntimeError("prometheus_client was imported before multiprocess mode was set up")
            multiprocess.MultiProcessCollector(self.registry, path=multiprocess_dir)
            target = None  # values live in the files; the collector above reads every process's
        else:
            target = self.registry
        self._children: dict[tuple[str, str, int], Any] = {}
        self.latency = Histogram("atelier_http_request_duration_seconds",
                                 "HTTP request latency by route (the URL rule, not the path)",
                                 ["method", "route", "status"], buckets=REQUEST_BUCKETS, registry=target)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        child = self._children.get(key)
        if child is None:  # labels() validates and looks up its arguments on every call: once per key
            child = self._children[key] = self.latency.labels(method, route, str(status))
        child.observe(seconds)


def install_metrics(app: Flask, services: Services, celery: Any, multiprocess_dir: str | None = None) -> None:
    """Time every request, and serve ``/metrics``."""
    settings = services.settings
    metrics = RequestMetrics(multiprocess_dir)
    broker = None if settings.embedded_broker else celery
    metrics.registry.register(TableCollector(services, settings.queue, settings.metrics_cache_seconds, broker))
    app.extensions["atelier_metrics"] = metrics

    @app.before_request
    def _start_timer() -> None:
        g.atelier_request_started = time.perf_counter()

    @app.after_request
    def _observe(response: Response) -> Response:
        started = g.pop("atelier_request_started", None)
        if started is not None:
            rule = request.url_rule.rule if request.url_rule is not None else "(unmatched)"
            metrics.observe(request.method, rule, response.status_code, time.perf_counter() - started)
        return response

    app.register_blueprint(bp)


@bp.get("/metrics")
def metrics_endpoint() -> Response:
    """Counts over every owner: with auth on, for admin tokens only (a scraper's bearer token)."""
    if not is_admin():
        return Response("there is no such resource\n", status=404, content_type="text/plain")
    metrics: RequestMetrics = current_app.extensions["atelier_metrics"]
    return Response(generate_latest(metrics.registry), content_type=CONTENT_TYPE_PLAIN_0_0_4)
