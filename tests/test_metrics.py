"""``GET /metrics``: parsed with prometheus_client's own text parser, its numbers match the rows (on SQLite
and PostgreSQL), the request histogram is keyed by the URL rule, and under several web processes
(gunicorn) every scrape sums all processes' requests."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from core.models import Job, Worker, utcnow
from core.services import Services
from tests.conftest import REPO_ROOT, RecordingCelery
from tests.stack import Api, Proc, base_env, run_cli, wait_until

CONTENT = REPO_ROOT / "web/static/examples/content/chelsea.png"
STYLE = REPO_ROOT / "web/static/examples/styles/starry_night.jpg"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample as ``{(name, sorted labels): value}``."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(found: dict, name: str, **labels: str) -> float:
    return found[(name, tuple(sorted(labels.items())))]


@pytest.fixture()
def metrics_app(any_services: Services) -> Iterator[Any]:
    from web import create_app

    services = Services(any_services.settings.with_overrides(metrics_cache_seconds=0), any_services.engine,
                        any_services.sessions, any_services.storage)
    app = create_app(services=services, celery=RecordingCelery())
    app.config["TESTING"] = True
    yield app


def add_job(services: Services, kind: str, status: str, *, created_ago: float, wait: float | None = None,
            run: float | None = None, attempt: int = 0, priority: str = "normal") -> Job:
    now = utcnow()
    created = now - dt.timedelta(seconds=created_ago)
    started = created + dt.timedelta(seconds=wait) if wait is not None else None
    finished = started + dt.timedelta(seconds=run) if started is not None and run is not None else None
    job = Job(kind=kind, status=status, params={}, created_at=created, started_at=started, finished_at=finished,
              attempt=attempt, priority=priority)
    with services.sessions() as s:
        s.add(job)
        s.commit()
        s.refresh(job)
    return job


def add_worker(services: Services, wid: str, state: str, seen_ago: float) -> None:
    with services.sessions() as s:
        s.add(Worker(id=wid, hostname="h", pid=1, queues="gpu", device="cpu", state=state, info={},
                     started_at=utcnow(), last_seen_at=utcnow() - dt.timedelta(seconds=seen_ago)))
        s.commit()


def test_metrics_match_the_rows(metrics_app: Any) -> None:
    services = metrics_app.extensions["atelier"].services
    add_job(services, "style_transfer", "queued", created_ago=100)
    add_job(services, "style_transfer", "queued", created_ago=5, priority="high")
    add_job(services, "style_transfer", "running", created_ago=50, wait=3, attempt=1)
    add_job(services, "style_transfer", "succeeded", created_ago=600, wait=0.2, run=2, attempt=1)
    add_job(services, "style_transfer", "succeeded", created_ago=600, wait=20, run=40, attempt=2)
    add_job(services, "cyclegan_train", "failed", created_ago=9000, wait=0.01, run=7200, attempt=3)
    add_job(services, "cyclegan_train", "canceled", created_ago=10, attempt=0)  # canceled while queued
    add_worker(services, "w1@h:1", "online", 1)
    add_worker(services, "w1@h:2", "busy", 2)
    add_worker(services, "w2@h:3", "busy", 3600)  # no heartbeat for an hour: lost
    add_worker(services, "w3@h:4", "stopped", 3600)

    client = metrics_app.test_client()
    resp = client.get("/metrics")
    assert resp.status_code == 200 and resp.content_type.startswith("text/plain")
    found = samples(resp.get_data(as_text=True))

    assert value(found, "atelier_jobs", kind="style_transfer", status="queued") == 2
    assert value(found, "atelier_jobs", kind="style_transfer", status="running") == 1
    assert value(found, "atelier_jobs", kind="style_transfer", status="succeeded") == 2
    assert value(found, "atelier_jobs", kind="style_transfer", status="failed") == 0
    assert value(found, "atelier_jobs", kind="cyclegan_train", status="failed") == 1
    assert value(found, "atelier_queue_depth", queue="gpu", priority="normal") == 1
    assert value(found, "atelier_queue_depth", queue="gpu.high", priority="high") == 1
    assert 99 < value(found, "atelier_queue_oldest_seconds", queue="gpu", priority="normal") < 200

    # Run time: 2 s and 40 s for style transfer; 2 h for the failed training; the canceled never ran.
    d = "atelier_job_duration_seconds"
    assert value(found, f"{d}_count", kind="style_transfer", status="succeeded") == 2
    assert value(found, f"{d}_sum", kind="style_transfer", status="succeeded") == pytest.approx(42, abs=0.1)
    assert value(found, f"{d}_bucket", kind="style_transfer", status="succeeded", le="1.0") == 0
    assert value(found, f"{d}_bucket", kind="style_transfer", status="succeeded", le="5.0") == 1
    assert value(found, f"{d}_bucket", kind="style_transfer", status="succeeded", le="60.0") == 2
    assert value(found, f"{d}_bucket", kind="cyclegan_train", status="failed", le="3600.0") == 0
    assert value(found, f"{d}_bucket", kind="cyclegan_train", status="failed", le="14400.0") == 1
    assert (f"{d}_count", (("kind", "cyclegan_train"), ("status", "canceled"))) not in found
    # Queue wait: 0.2 s, 20 s and 3 s (running) for style transfer.
    w = "atelier_job_queue_wait_seconds"
    assert value(found, f"{w}_count", kind="style_transfer") == 3
    assert value(found, f"{w}_bucket", kind="style_transfer", le="0.25") == 1
    assert value(found, f"{w}_bucket", kind="style_transfer", le="5.0") == 2
    assert value(found, f"{w}_sum", kind="style_transfer") == pytest.approx(23.2, abs=0.1)
    a = "atelier_job_attempts"
    assert value(found, f"{a}_bucket", kind="style_transfer", status="succeeded", le="1.0") == 1
    assert value(found, f"{a}_bucket", kind="style_transfer", status="succeeded", le="2.0") == 2
    assert value(found, f"{a}_sum", kind="cyclegan_train", status="failed") == 3
    assert value(found, "atelier_workers", state="online") == 1
    assert value(found, "atelier_workers", state="busy") == 1
    assert value(found, "atelier_workers", state="lost") == 1
    assert value(found, "atelier_workers", state="stopped") == 1
    assert value(found, "atelier_metrics_table_read_ok") == 1

    # A job finishing shows at the next scrape (cache 0 here).
    add_job(services, "style_transfer", "succeeded", created_ago=10, wait=1, run=3, attempt=1)
    again = samples(client.get("/metrics").get_data(as_text=True))
    assert value(again, f"{d}_count", kind="style_transfer", status="succeeded") == 3


def test_request_latency_is_keyed_by_the_url_rule(metrics_app: Any) -> None:
    client = metrics_app.test_client()
    ids = ["0f7b8c1e-0000-4000-8000-000000000001", "0f7b8c1e-0000-4000-8000-000000000002"]
    for job_id in ids:
        assert client.get(f"/api/v1/jobs/{job_id}").status_code == 404
    health = client.get("/healthz").status_code
    client.get("/no/such/page")
    text = client.get("/metrics").get_data(as_text=True)
    found = samples(text)
    h = "atelier_http_request_duration_seconds"
    assert value(found, f"{h}_count", method="GET", route="/api/v1/jobs/<job_id>", status="404") == 2
    assert value(found, f"{h}_count", method="GET", route="/healthz", status=str(health)) == 1
    assert value(found, f"{h}_count", method="GET", route="(unmatched)", status="404") == 1
    assert not any(job_id in text for job_id in ids) and "/no/such/page" not in text


def test_table_reads_are_cached(any_services: Services) -> None:
    from web.metrics import TableCollector

    collector = TableCollector(any_services, "gpu", cache_seconds=60)
    first = {m.name: m for m in collector.collect()}
    add_job(any_services, "style_transfer", "queued", created_ago=1)
    cached = {m.name: m for m in collector.collect()}
    depth = "atelier_queue_depth"
    assert [s.value for s in cached[depth].samples] == [s.value for s in first[depth].samples] == [0, 0]
    fresh = {m.name: m for m in TableCollector(any_services, "gpu", cache_seconds=0).collect()}
    assert sum(s.value for s in fresh[depth].samples) == 1  # a fresh read sees the job


@pytest.mark.integration
@pytest.mark.slow
def test_several_web_processes_report_the_same_counts(tmp_path: Path, fresh_pg_url: str, redis_url: str) -> None:
    """`atelier serve --workers 3` (gunicorn): after jobs ran on a real worker, every scrape, whichever
    process answers it, has the table's counts and the requests of all processes."""
    env = base_env(tmp_path, ATELIER_DATABASE_URL=fresh_pg_url, ATELIER_BROKER_URL=redis_url,
                   ATELIER_METRICS_CACHE_SECONDS="0")
    assert run_cli(["db", "upgrade"], env).returncode == 0
    procs = [Proc(["serve", "--workers", "3", "--threads", "4"], env, tmp_path / "serve.log"),
             Proc(["worker", "--name", "wm@%h"], env, tmp_path / "worker.log")]
    api = Api(int(env["ATELIER_PORT"]))
    try:
        wait_until(lambda: api.healthz()["workers"]["live"] == 1, 90, "a live worker", procs)
        files = [("content", ("c.png", CONTENT.read_bytes(), "image/png")),
                 ("style", ("s.jpg", STYLE.read_bytes(), "image/jpeg"))]
        jobs = [api.submit("style_transfer", {"size": 32, "steps": 2, "seed": i}, files) for i in range(3)]
        for final, _ in api.follow_all([j["id"] for j in jobs], 120, procs).values():
            assert final["status"] == "succeeded", final

        def scrape() -> dict:
            resp = requests.get(f"{api.base}/metrics", timeout=10)
            assert resp.status_code == 200
            return samples(resp.text)

        status_route = dict(method="GET", route="/api/v1/jobs/<job_id>", status="200")
        h = "atelier_http_request_duration_seconds_count"
        before = value(scrape(), h, **status_route)
        for _ in range(30):  # a new connection each: they spread over the processes
            assert requests.get(f"{api.base}/api/v1/jobs/{jobs[0]['id']}", timeout=10).status_code == 200
        for _ in range(6):  # whichever process answers, the same totals
            found = scrape()
            assert value(found, h, **status_route) == before + 30
            assert value(found, "atelier_jobs", kind="style_transfer", status="succeeded") == 3
            assert value(found, "atelier_job_duration_seconds_count", kind="style_transfer", status="succeeded") == 3
            assert value(found, "atelier_job_queue_wait_seconds_count", kind="style_transfer") == 3
            assert value(found, "atelier_workers", state="online") == 1
            assert value(found, "atelier_queue_depth", queue="gpu", priority="normal") == 0
            assert value(found, "atelier_broker_messages_waiting", queue="gpu") == 0
        pids = {line.split("pid: ")[1].split(")")[0] for line in procs[0].output().splitlines()
                if "Booting worker with pid" in line}
        assert len(pids) == 3, procs[0].output()[-2000:]
    finally:
        for p in procs:
            p.stop()
