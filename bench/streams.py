"""Open event streams against a real ``atelier serve``: does the server still answer?

Starts ``atelier serve`` (PostgreSQL by default, as distributed; ``--database sqlite`` for the embedded
database), submits one job and plays its worker from this process (claims it, then writes progress and
metric points every 0.2 s and a log line every second, as a running job does, without computing
anything), then measures the latency of ``GET /api/v1/jobs/{id}`` and of the job page:

1. with no stream open;
2. with ``--streams`` (50) clients each holding ``GET /api/v1/jobs/{id}/stream`` open and reading it.

It also counts the events the streams received, and checks that one stream more than the server's slots
(``ATELIER_MAX_STREAMS``, set to ``--streams``) is refused with a 503 instead of queueing::

    python bench/streams.py                  # 50 streams, 100 requests of each kind per phase
    python bench/streams.py --streams 20 --requests 30 --database sqlite --json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.stack import Proc, base_env, run_cli  # noqa: E402

PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def cpu_model() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def summary(seconds: list[float]) -> dict[str, float]:
    return {"p50_ms": round(pct(seconds, 50) * 1000, 1), "p95_ms": round(pct(seconds, 95) * 1000, 1),
            "max_ms": round(max(seconds) * 1000, 1), "mean_ms": round(statistics.fmean(seconds) * 1000, 1)}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed_gets(base: str, paths: list[str], n: int) -> dict[str, dict[str, float]]:
    """``n`` sequential GETs of each path (one keep-alive session), latency summaries by path."""
    out: dict[str, list[float]] = {p: [] for p in paths}
    with requests.Session() as s:
        for _ in range(n):
            for p in paths:
                started = time.perf_counter()
                resp = s.get(base + p, timeout=30)
                out[p].append(time.perf_counter() - started)
                assert resp.status_code == 200, (p, resp.status_code)
    return {p: summary(v) for p, v in out.items()}


class FakeRun(threading.Thread):
    """The job's worker, without the work: progress and points every 0.2 s, a log line every second."""

    def __init__(self, env: dict[str, str], job_id: str) -> None:
        super().__init__(daemon=True)
        from core.services import build_services
        from core.settings import load_settings

        self.services = build_services(load_settings({k: v for k, v in env.items() if k.startswith("ATELIER_")}))
        self.job_id, self.stopped = job_id, threading.Event()

    def run(self) -> None:
        from core.jobs import repository as repo

        sf = self.services.sessions
        assert repo.claim(sf, self.job_id, "bench-worker:1", 3600)
        step, total = 0, 1_000_000
        while not self.stopped.wait(0.2):
            step += 1
            repo.update_progress(sf, self.job_id, "bench-worker:1", step=step, total=total,
                                 metrics={"loss": 1.0 / step}, points=[("loss", step, 1.0 / step)])
            if step % 5 == 0:
                repo.add_event(sf, self.job_id, f"step {step}")

    def stop(self) -> None:
        self.stopped.set()
        self.join(5)
        self.services.close()


def hold_stream(url: str, stop: threading.Event, counts: list[int], statuses: list[int]) -> None:
    try:
        with requests.get(url, stream=True, timeout=60) as resp:
            statuses.append(resp.status_code)
            if resp.status_code != 200:
                return
            for line in resp.iter_lines(decode_unicode=True):
                if line.startswith("event:"):
                    counts.append(1)
                if stop.is_set():
                    return
    except requests.RequestException:
        statuses.append(-1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=50)
    ap.add_argument("--requests", type=int, default=100, help="GETs of each kind per phase")
    ap.add_argument("--database", choices=["postgresql", "sqlite"], default="postgresql")
    ap.add_argument("--threads", type=int, default=8, help="atelier serve --threads (ordinary requests)")
    ap.add_argument("--json", action="store_true", help="print only the JSON summary")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="atelier-streams-"))
    db_name = f"atelier_bench_{uuid.uuid4().hex[:8]}"
    extra = {"ATELIER_MAX_STREAMS": str(args.streams), "ATELIER_BROKER_URL": "filesystem://"}
    admin = None
    if args.database == "postgresql":
        from sqlalchemy import create_engine, text

        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{db_name}"'))
        extra["ATELIER_DATABASE_URL"] = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{db_name}"
    env = base_env(tmp, **extra)
    env.pop("ATELIER_BROKER_URL")  # the default file broker: no worker consumes in this bench
    serve = None
    fake = None
    stop = threading.Event()
    threads: list[threading.Thread] = []
    try:
        assert run_cli(["db", "upgrade"], env).returncode == 0
        serve = Proc(["serve", "--threads", str(args.threads)], env, tmp / "serve.log")
        base = f"http://127.0.0.1:{env['ATELIER_PORT']}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(base + "/api/v1/kinds", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, serve.output()[-2000:]
            time.sleep(0.2)
        content = (REPO / "web/static/examples/content/chelsea.png").read_bytes()
        style = (REPO / "web/static/examples/styles/starry_night.jpg").read_bytes()
        files = [("content", ("c.png", content, "image/png")), ("style", ("s.jpg", style, "image/jpeg"))]
        job = requests.post(base + "/api/v1/jobs", data={"kind": "style_transfer", "params": '{"size": 32}'},
                            files=files, timeout=30).json()
        fake = FakeRun(env, job["id"])
        fake.start()
        time.sleep(1.0)
        paths = [f"/api/v1/jobs/{job['id']}", f"/jobs/{job['id']}"]
        timed_gets(base, paths, 5)  # warm up
        idle = timed_gets(base, paths, args.requests)

        counts: list[int] = []
        statuses: list[int] = []
        url = f"{base}/api/v1/jobs/{job['id']}/stream"
        threads = [threading.Thread(target=hold_stream, args=(url, stop, counts, statuses), daemon=True)
                   for _ in range(args.streams)]
        opened_at = time.monotonic()
        for t in threads:
            t.start()
        while len(statuses) < args.streams and time.monotonic() - opened_at < 60:
            time.sleep(0.05)
        all_open_s = time.monotonic() - opened_at
        events_before, cpu_before = len(counts), cpu_seconds(serve.popen.pid)
        time.sleep(5)  # the streams alone: what holding them costs the server
        idle_streams_cpu = (cpu_seconds(serve.popen.pid) - cpu_before) / 5
        busy_started = time.monotonic()
        busy = timed_gets(base, paths, args.requests)
        busy_s = time.monotonic() - busy_started
        events_rate = (len(counts) - events_before) / (busy_s + 5) / max(1, args.streams)
        one_more = requests.get(url, stream=True, timeout=10)
        refused = {"status": one_more.status_code, "retry_after": one_more.headers.get("Retry-After")}
        one_more.close()
        result = {
            "cpu": cpu_model(), "cpus": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()],
            "database": args.database, "serve_threads": f"{args.threads} + {args.streams} for streams",
            "streams": args.streams, "streams_answered_200": statuses.count(200),
            "seconds_to_open_all": round(all_open_s, 2),
            "events_per_stream_per_s": round(events_rate, 2),
            "serve_cpu_with_streams_only": f"{idle_streams_cpu:.0%} of one core",
            "idle": {"api_job": idle[paths[0]], "job_page": idle[paths[1]]},
            "with_streams": {"api_job": busy[paths[0]], "job_page": busy[paths[1]]},
            "one_stream_more": refused,
        }
    finally:
        stop.set()
        if fake is not None:
            fake.stop()
        for t in threads:
            t.join(timeout=20)
        if serve is not None:
            serve.stop()
        if admin is not None:
            from sqlalchemy import text

            with admin.connect() as conn:
                conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                  f"WHERE datname = '{db_name}'"))
                conn.execute(text(f'DROP DATABASE IF EXISTS "{db_name}"'))
            admin.dispose()
    if not args.json:
        print(f"CPU: {result['cpu']} ({result['cpus']} CPUs), load {result['load_average']}, {args.database}")
        for phase in ("idle", "with_streams"):
            for what in ("api_job", "job_page"):
                r = result[phase][what]
                print(f"{phase:>12} {what:>8}: p50 {r['p50_ms']} ms, p95 {r['p95_ms']} ms, max {r['max_ms']} ms")
        print(f"{result['streams_answered_200']} streams open in {result['seconds_to_open_all']} s, "
              f"{result['events_per_stream_per_s']} events/s each, serving them takes "
              f"{result['serve_cpu_with_streams_only']}; one more: {refused}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
