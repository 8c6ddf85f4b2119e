"""What the queue itself costs, next to plain baselines, on real processes (one run, side by side).

Starts a private PostgreSQL cluster and a private Redis (the drills' harness, tests/drills.py), migrates,
and runs ``atelier serve`` and ``atelier worker`` processes on them:

a. **Queue overhead**: a tiny style-transfer job (16 px, 1 step) from the start of its submit (HTTP POST)
   to its row's ``finished_at``, minus what the job computed (its ``run_seconds`` metric: the kind's own
   wall time, measured in the worker). Next to it, a raw Celery round trip on the same Redis: a no-op
   task sent and its result read back (``send_task(...).get()``), with the same Celery settings (JSON,
   late acks, prefetch 1, prefork). Floors: overhead p50 at most 2x the raw round trip, and under 50 ms.
b. **API**: submissions/s (multipart, two tiny images) and status reads/s (``GET /api/v1/jobs/{id}``) on
   PostgreSQL against ``atelier serve --workers W``, next to a bare Flask JSON endpoint served the same
   way (same server, processes and threads), from a pool of client processes on keep-alive connections,
   each load counted after a warm-up (:data:`WARMUP_S`), in interleaved rounds (median round reported).
   No worker runs meanwhile: the web server has the machine (with PostgreSQL, Redis and the clients), as
   on a deployment's web host. Floors: status reads at least half the bare endpoint's rate; at least
   200 submissions/s.
c. **Scaling**: 1, 2 and 4 worker processes (one node, ``--concurrency N``, one torch thread each) drain
   a backlog of small jobs: jobs/s from the first start to the last finish, and broker messages sent
   per job (``dispatch_count``; it must stay near 1 whatever the backlog).

Prints the CPU (``lscpu``'s model name) and a JSON summary (the last line with ``--json``)::

    python bench/queue_bench.py            # the README's figures
    python bench/queue_bench.py --quick    # a smoke run (tests/test_bench.py)
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import multiprocessing as mp
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.drills import PrivatePostgres, PrivateRedis  # noqa: E402
from tests.stack import Proc, free_port, run_cli  # noqa: E402
from tests.stack import wait_until as stack_wait_until  # noqa: E402

TINY = {"size": 16, "steps": 1}
RAW_QUEUE = "bench.raw"
RAW_TASK = "bench.noop"


# -- machine -------------------------------------------------------------------------------------
def cpu_model() -> str:
    """``lscpu``'s model name (what the README quotes), /proc/cpuinfo's when lscpu is missing."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    from core.engines.device import cpu_model as from_cpuinfo

    return from_cpuinfo()


#: What the bench's predicates raise while a server is still starting (its plain http.client calls and
#: their status assertions), passed to tests.stack.wait_until.
STARTING_UP = (OSError, http.client.HTTPException, AssertionError, ValueError, KeyError)


def wait_until(predicate: Any, timeout: float, what: str, procs: list[Proc] = ()) -> Any:  # type: ignore[assignment]
    return stack_wait_until(predicate, timeout, what, procs, transient=STARTING_UP)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


# -- inputs --------------------------------------------------------------------------------------
def tiny_png(seed: int) -> bytes:
    from PIL import Image

    rng = random.Random(seed)
    img = Image.new("RGB", (16, 16))
    img.putdata([(rng.randrange(256), rng.randrange(256), rng.randrange(256)) for _ in range(256)])
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def multipart(params: dict[str, Any], seed: int = 0) -> tuple[bytes, str]:
    """The body of a style-transfer submit: ``kind``, ``params`` and two tiny PNGs."""
    boundary = uuid.uuid4().hex
    parts: list[bytes] = []
    for name, value in (("kind", "style_transfer"), ("params", json.dumps(params))):
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for field, data in (("content", tiny_png(seed)), ("style", tiny_png(seed + 1))):
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{field}.png"\r\n'
                     f"Content-Type: image/png\r\n\r\n".encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


class Http:
    """A keep-alive HTTP/1.1 connection (http.client: a light client leaves the cores to the server)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        for attempt in (1, 2):
            try:
                self.conn.request(method, path, body=body, headers=headers or {})
                resp = self.conn.getresponse()
                return resp.status, resp.read()
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def json(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
             expect: int = 200) -> Any:
        status, data = self.request(method, path, body, headers)
        assert status == expect, f"{method} {path}: {status} {data[:300]!r}"
        return json.loads(data)

    def submit(self, params: dict[str, Any], seed: int = 0) -> dict[str, Any]:
        body, ctype = multipart(params, seed)
        return self.json("POST", "/api/v1/jobs", body, {"Content-Type": ctype}, expect=202)


# -- the private stack ---------------------------------------------------------------------------
class Stack:
    """Private PostgreSQL + Redis, a migrated database, ``atelier serve`` and worker nodes."""

    def __init__(self, root: Path, web_workers: int, web_threads: int) -> None:
        self.root = root
        self.pg = PrivatePostgres(root / "pg")
        self.redis = PrivateRedis(root)
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("ATELIER_")}
        # Production timings (heartbeat 10 s, lease 60 s, progress every 1 s): the overhead is measured
        # as a deployment would see it, not with the tests' fast heartbeats.
        env.update({"ATELIER_DATA_DIR": str(root / "data"), "ATELIER_DATABASE_URL": self.pg.url,
                    "ATELIER_BROKER_URL": self.redis.url, "ATELIER_PORT": str(self.port),
                    "ATELIER_VGG19_WEIGHTS": "random", "ATELIER_DEVICE": "cpu", "ATELIER_TORCH_THREADS": "1",
                    "ATELIER_LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"})
        self.env = env
        migrated = run_cli(["db", "upgrade"], env)
        assert migrated.returncode == 0, migrated.stderr
        self.web = Proc(["serve", "--workers", str(web_workers), "--threads", str(web_threads)], env,
                        root / "serve.log")
        self.procs = [self.web]
        self.nodes: dict[int, Proc] = {}
        wait_until(lambda: self.http().request("GET", "/healthz")[0] == 200, 60, "atelier serve", self.procs)

    def http(self) -> Http:
        return Http(self.port)

    def worker(self, name: str, concurrency: int) -> Proc:
        proc = Proc(["worker", "--name", f"{name}@%h", "--concurrency", str(concurrency)], self.env,
                    self.root / f"{name}.log")
        self.procs.append(proc)
        client = self.http()
        wait_until(lambda: sum(1 for w in client.json("GET", "/api/v1/workers")["workers"]
                               if w["id"].startswith(f"{name}@") and w["state"] in ("online", "busy")) == concurrency,
                   90, f"worker {name}", self.procs)
        return proc

    def stop_nodes(self) -> None:
        """Stop every worker node (the API is measured on a web server with the machine to itself, as in a
        deployment where the workers run on their GPU hosts)."""
        self.node(0)

    def node(self, concurrency: int) -> Proc | None:
        """The worker node with ``concurrency`` processes, started if needed; any other node is stopped."""
        for n, proc in list(self.nodes.items()):
            if n != concurrency:
                proc.stop()
                self.procs.remove(proc)
                del self.nodes[n]
        if concurrency == 0:
            return None
        if concurrency not in self.nodes:
            self.nodes[concurrency] = self.worker(f"n{concurrency}", concurrency)
        return self.nodes[concurrency]

    def sql(self, query: str, **params: Any) -> list[Any]:
        import sqlalchemy as sa

        engine = sa.create_engine(self.pg.url)
        try:
            with engine.begin() as conn:
                result = conn.execute(sa.text(query), params)
                return list(result) if result.returns_rows else []
        finally:
            engine.dispose()

    def drop_backlog(self) -> None:
        """Cancel every queued job and empty the job queues (between parts)."""
        import redis

        self.sql("UPDATE jobs SET status = 'canceled', finished_at = now() WHERE status = 'queued'")
        client = redis.Redis.from_url(self.redis.url)
        for key in client.scan_iter("gpu*"):
            client.delete(key)
        client.close()

    def close(self) -> None:
        for p in list(self.procs):
            p.stop()
        self.redis.close()
        self.pg.close()


def follow(client: Http, job_id: str, timeout: float = 120) -> dict[str, Any]:
    """Wait for the job's end with ``Prefer: wait`` (the server answers when the job ends), as the raw
    Celery client waits on its result: polling every few milliseconds would spend the two cores the
    job's path needs. The overhead is read from the row's timestamps, not from this answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.json("GET", f"/api/v1/jobs/{job_id}", headers={"Prefer": "wait=30"})
        if job["status"] in ("succeeded", "failed", "canceled"):
            assert job["status"] == "succeeded", job
            return job
    raise AssertionError(f"job {job_id} did not finish in {timeout} s")


def parse_time(value: str) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


# -- a. queue overhead ---------------------------------------------------------------------------
def noop() -> float:
    return time.time()


def raw_worker_main(broker: str, backend: str) -> None:
    """A Celery worker with one no-op task and Atelier's Celery settings (``--raw-worker``)."""
    from celery import Celery

    app = Celery("bench", broker=broker, backend=backend, set_as_current=True)
    app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"],
                    task_acks_late=True, worker_prefetch_multiplier=1, worker_hijack_root_logger=False,
                    broker_connection_retry_on_startup=True, worker_send_task_events=True,
                    task_send_sent_event=True)
    app.task(name=RAW_TASK)(noop)
    app.worker_main(["worker", "-Q", RAW_QUEUE, "-c", "1", "-P", "prefork", "-n", "raw@%h", "--loglevel", "WARNING",
                     "--without-mingle", "--without-gossip"])


def start_raw_worker(stack: Stack) -> subprocess.Popen[bytes]:
    """The raw Celery worker, started early: it boots while the Atelier node does."""
    log = open(stack.root / "raw-worker.log", "wb")
    return subprocess.Popen([sys.executable, __file__, "--raw-worker", stack.redis.url, raw_backend(stack)], cwd=REPO,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def raw_backend(stack: Stack) -> str:
    return stack.redis.url.rsplit("/", 1)[0] + "/1"


def raw_round_trips(stack: Stack, proc: subprocess.Popen[bytes], n: int) -> list[float]:
    from celery import Celery

    backend = raw_backend(stack)
    app = Celery("bench-client", broker=stack.redis.url, backend=backend, set_as_current=False)
    app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"])
    try:
        deadline = time.monotonic() + 60
        while True:  # the worker is up when a task comes back
            try:
                app.send_task(RAW_TASK, queue=RAW_QUEUE).get(timeout=2)
                break
            except Exception:
                assert time.monotonic() < deadline and proc.poll() is None, "the raw Celery worker did not start"
        for _ in range(5):  # warm
            app.send_task(RAW_TASK, queue=RAW_QUEUE).get(timeout=10)
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            app.send_task(RAW_TASK, queue=RAW_QUEUE).get(timeout=10)
            out.append(time.perf_counter() - t0)
        return out
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def queue_overhead(stack: Stack, n: int, raw_n: int, warm: int = 3) -> dict[str, Any]:
    raw_worker = start_raw_worker(stack)
    stack.node(1)
    client = stack.http()
    for i in range(warm):  # warm: the pool child imports torch and builds the random VGG once
        follow(client, client.submit(TINY, seed=i)["id"])
    rows = []
    for i in range(n):
        t0 = time.time()
        job = client.submit(TINY, seed=100 + i)
        posted = time.time()
        final = follow(client, job["id"])
        [(created, dispatched, started, finished)] = stack.sql(
            "SELECT extract(epoch from created_at), extract(epoch from dispatched_at), extract(epoch from started_at), "
            "extract(epoch from finished_at) FROM jobs WHERE id = :id", id=job["id"])
        created, dispatched, started, finished = (float(x) for x in (created, dispatched, started, finished))
        run = float(final["metrics"]["run_seconds"])
        rows.append({"total": finished - t0, "run": run, "overhead": finished - t0 - run, "post": posted - t0,
                     "before_row": created - t0, "row_to_sent": dispatched - created,
                     "sent_to_claimed": started - dispatched, "claimed_to_finished": finished - started - run,
                     "queue": finished - created - run})
    raw = raw_round_trips(stack, raw_worker, raw_n)
    overhead = [r["overhead"] for r in rows]
    p50, raw_p50 = statistics.median(overhead), statistics.median(raw)
    return {
        "jobs": n, "job": TINY,
        "overhead_p50_ms": ms(p50), "overhead_p90_ms": ms(pct(overhead, 90)), "overhead_max_ms": ms(max(overhead)),
        "submit_to_finished_p50_ms": ms(statistics.median(r["total"] for r in rows)),
        "compute_p50_ms": ms(statistics.median(r["run"] for r in rows)),
        # Where it goes (medians): the whole HTTP submit; from the request to the row's INSERT (parsing,
        # checks, files); the row to its message sent; sent to claimed (broker delivery, the claim); claimed
        # to finished less the compute (inputs, outputs, events, the final write); the row to finished.
        "breakdown_p50_ms": {k: ms(statistics.median(r[k] for r in rows))
                             for k in ("post", "before_row", "row_to_sent", "sent_to_claimed", "claimed_to_finished",
                                       "queue")},
        "raw_celery_round_trips": raw_n, "raw_round_trip_p50_ms": ms(raw_p50),
        "raw_round_trip_p90_ms": ms(pct(raw, 90)),
        "ratio": round(p50 / raw_p50, 2),
        "floor": {"max_ratio": 2.0, "max_p50_ms": 50.0},
        "floor_met": bool(p50 <= 2 * raw_p50 and p50 < 0.050),
    }


# -- b. API --------------------------------------------------------------------------------------
def _client_loop(args: tuple[str, int, float, float, list[str], int]) -> list[float]:
    """One client process: requests back to back on one connection for ``warmup`` seconds (not counted:
    connections, server threads, per-process caches) and then ``duration`` seconds (counted)."""
    op, port, warmup, duration, ids, seed = args
    client = Http(port)
    rng = random.Random(seed)
    body, ctype = multipart(TINY, seed)
    latencies = []
    start = time.perf_counter()
    counted, end = start + warmup, start + warmup + duration
    while True:
        t0 = time.perf_counter()
        if t0 >= end:
            break
        if op == "submit":
            status, _ = client.request("POST", "/api/v1/jobs", body, {"Content-Type": ctype})
            ok = status == 202
        elif op == "status":
            status, _ = client.request("GET", f"/api/v1/jobs/{rng.choice(ids)}")
            ok = status == 200
        else:
            status, _ = client.request("GET", "/bare")
            ok = status == 200
        if not ok:
            raise AssertionError(f"{op}: HTTP {status}")
        if t0 >= counted:  # started after the warm-up
            latencies.append(time.perf_counter() - t0)
    return latencies


#: Seconds each load runs before it is counted (the same for the bare endpoint and for Atelier's).
WARMUP_S = 2.0


def load(port: int, op: str, clients: int, duration: float, ids: list[str] = ()) -> dict[str, Any]:  # type: ignore[assignment]
    warmup = min(WARMUP_S, duration / 2)
    with mp.get_context("fork").Pool(clients) as pool:
        results = pool.map(_client_loop, [(op, port, warmup, duration, list(ids), i) for i in range(clients)])
    latencies = [x for r in results for x in r]
    return {"per_s": round(len(latencies) / duration, 1), "requests": len(latencies),
            "p50_ms": ms(statistics.median(latencies)), "p99_ms": ms(pct(latencies, 99))}


def bare_app() -> Any:
    """The baseline: a Flask app whose one endpoint answers a JSON object the size of a job's."""
    from flask import Flask, jsonify

    app = Flask("bare")
    doc = {"id": str(uuid.uuid4()), "kind": "style_transfer", "status": "queued", "progress": 0.0, "step": 0,
           "total_steps": 1, "error": None, "params": dict(TINY), "metrics": {}, "outputs": [], "preview_url": None}

    @app.get("/bare")
    def bare():  # type: ignore[no-untyped-def]
        return jsonify(doc)

    return app


def serve_bare(port: int, workers: int, threads: int) -> None:
    """``--serve-bare``: the bare app under the server ``atelier serve`` uses for the same settings."""
    if workers <= 1:
        from waitress import serve

        serve(bare_app(), host="127.0.0.1", port=port, threads=threads, _quiet=True)
        return
    from gunicorn.app.base import BaseApplication

    class Bare(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for k, v in {"bind": f"127.0.0.1:{port}", "workers": workers, "threads": threads,
                         "worker_class": "gthread", "keepalive": 5, "loglevel": "warning"}.items():
                self.cfg.set(k, v)

        def load(self) -> Any:
            return bare_app()

    Bare().run()


def median_load(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median rate (its latencies with it), and every round's rate."""
    ordered = sorted(results, key=lambda r: r["per_s"])
    return {**ordered[(len(ordered) - 1) // 2], "rounds_per_s": [r["per_s"] for r in results]}


def api_rates(stack: Stack, clients: int, duration: float, web_workers: int, web_threads: int,
              rounds: int) -> dict[str, Any]:
    """Submissions, status reads (queued and finished jobs) and the bare endpoint, in ``rounds``
    interleaved rounds of ``duration / rounds`` seconds each, both servers up throughout: on a shared
    machine whose speed drifts by tens of percent from minute to minute (neighbours), measuring one
    side a minute after the other compared the minutes, not the servers. Each figure is the median round."""
    # The web server alone: a worker computing the submitted jobs on these two cores would measure how
    # the cores are shared, not the API (in a deployment the workers are on their GPU hosts).
    stack.stop_nodes()
    port = free_port()
    log = open(stack.root / "bare.log", "wb")
    proc = subprocess.Popen([sys.executable, __file__, "--serve-bare", str(port), str(web_workers), str(web_threads)],
                            cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    each = duration / rounds
    runs: dict[str, list[dict[str, Any]]] = {"submit": [], "status": [], "status_finished": [], "bare": []}
    # Status reads of queued jobs (what a client polls while it waits: the answer includes the queue
    # position and estimated start) and of finished ones (part a's).
    finished = [row[0] for row in stack.sql("SELECT id FROM jobs WHERE status = 'succeeded' LIMIT 500")]
    try:
        wait_until(lambda: Http(port).request("GET", "/bare")[0] == 200, 30, "the bare server")
        for _ in range(rounds):
            runs["submit"].append(load(stack.port, "submit", clients, each))
            queued = [row[0] for row in stack.sql("SELECT id FROM jobs WHERE status = 'queued' "
                                                  "ORDER BY created_at DESC LIMIT 500")]
            runs["status"].append(load(stack.port, "status", clients, each, queued))
            if finished:
                runs["status_finished"].append(load(stack.port, "status", clients, each, finished))
            runs["bare"].append(load(port, "bare", clients, each))
    finally:
        proc.terminate()
        proc.wait(15)
        log.close()
    backlog = stack.sql("SELECT count(*) FROM jobs WHERE status = 'queued'")[0][0]
    stack.drop_backlog()
    submit, status, bare = (median_load(runs[k]) for k in ("submit", "status", "bare"))
    status_finished = median_load(runs["status_finished"]) if runs["status_finished"] else None
    ratios = [round(st["per_s"] / b["per_s"], 2) for st, b in zip(runs["status"], runs["bare"])]
    return {"server": f"{web_workers} process(es) x {web_threads} threads", "clients": clients,
            "rounds": rounds, "seconds_each": round(each, 2), "submit": submit, "status": status,
            "queued_at_end": backlog, "status_finished": status_finished, "bare": bare,
            "status_vs_bare": round(status["per_s"] / bare["per_s"], 2), "status_vs_bare_by_round": ratios,
            "floor": {"status_vs_bare": 0.5, "submits_per_s": 200},
            "floor_met": {"status_vs_bare": status["per_s"] >= 0.5 * bare["per_s"],
                          "submits_per_s": submit["per_s"] >= 200}}


# -- c. scaling ----------------------------------------------------------------------------------
def scaling(stack: Stack, counts: list[int], jobs: int, warm: int = 2) -> list[dict[str, Any]]:
    out = []
    def run_one(seed: int) -> None:
        client = Http(stack.port)
        follow(client, client.submit(TINY, seed=seed)["id"])

    for n in counts:
        stack.node(n)
        with ThreadPoolExecutor(n) as pool:  # warm every pool child
            list(pool.map(run_one, range(warm * n)))
        with ThreadPoolExecutor(8) as pool:  # the backlog, submitted at once
            ids = list(pool.map(lambda i: Http(stack.port).submit(TINY, seed=1000 + i)["id"], range(jobs)))
        deadline = time.monotonic() + 600
        while True:
            done = stack.sql("SELECT count(*) FROM jobs WHERE id = ANY(:ids) AND status = 'succeeded'", ids=ids)[0][0]
            if done == len(ids):
                break
            failed = stack.sql("SELECT count(*) FROM jobs WHERE id = ANY(:ids) AND status IN ('failed', 'canceled')",
                               ids=ids)[0][0]
            assert not failed and time.monotonic() < deadline, f"{failed} jobs failed / timed out"
            time.sleep(0.1)
        first, last, messages, runs = stack.sql(
            "SELECT extract(epoch from min(started_at)), extract(epoch from max(finished_at)), sum(dispatch_count), "
            "avg((metrics->>'run_seconds')::float) FROM jobs WHERE id = ANY(:ids)", ids=ids)[0]
        span = float(last) - float(first)
        out.append({"processes": n, "jobs": jobs, "seconds": round(span, 2), "jobs_per_s": round(jobs / span, 2),
                    "messages_per_job": round(int(messages) / jobs, 3), "compute_mean_ms": ms(float(runs))})
    base = out[0]["jobs_per_s"]
    for row in out:
        row["speedup"] = round(row["jobs_per_s"] / base, 2)
    return out


# -- main ----------------------------------------------------------------------------------------
def main() -> int:
    if len(sys.argv) >= 2 and sys.argv[1] == "--raw-worker":
        raw_worker_main(sys.argv[2], sys.argv[3])
        return 0
    if len(sys.argv) >= 2 and sys.argv[1] == "--serve-bare":
        serve_bare(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run at tiny sizes")
    ap.add_argument("--jobs", type=int, default=40, help="jobs timed for the queue overhead")
    ap.add_argument("--raw", type=int, default=200, help="raw Celery round trips")
    ap.add_argument("--web-workers", type=int, default=max(2, os.cpu_count() or 2), help="atelier serve processes")
    ap.add_argument("--web-threads", type=int, default=8, help="threads per web process")
    ap.add_argument("--clients", type=int, default=8, help="client processes for the API rates")
    ap.add_argument("--seconds", type=float, default=15.0, help="duration of each API measurement, all rounds")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds of the API measurements")
    ap.add_argument("--scale", default="1,2,4", help="worker process counts")
    ap.add_argument("--backlog", type=int, default=60, help="jobs in the backlog each worker count drains")
    ap.add_argument("--parts", default="overhead,api,scaling", help="which parts to run")
    ap.add_argument("--json", action="store_true", help="print only the JSON summary")
    args = ap.parse_args()
    if args.quick:
        args.jobs, args.raw, args.clients, args.seconds, args.scale, args.backlog = 3, 10, 2, 0.5, "1", 3
        args.rounds = 1
        args.web_workers = 2
    parts = set(args.parts.split(","))
    root = Path(tempfile.mkdtemp(prefix="atelier-bench-queue-"))
    summary: dict[str, Any] = {"cpu": cpu_model(), "cores": os.cpu_count(), "quick": args.quick}
    started = time.monotonic()
    phases: dict[str, float] = {}
    summary["phase_seconds"] = phases
    stack = Stack(root, args.web_workers, args.web_threads)
    phases["stack"] = round(time.monotonic() - started, 1)
    try:
        if "overhead" in parts:
            summary["queue_overhead"] = queue_overhead(stack, args.jobs, args.raw, warm=1 if args.quick else 3)
            stack.drop_backlog()
            phases["overhead"] = round(time.monotonic() - started - sum(phases.values()), 1)
        if "api" in parts:
            summary["api"] = api_rates(stack, args.clients, args.seconds, args.web_workers, args.web_threads,
                                       args.rounds)
            phases["api"] = round(time.monotonic() - started - sum(phases.values()), 1)
        if "scaling" in parts:
            summary["scaling"] = scaling(stack, [int(x) for x in args.scale.split(",")], args.backlog,
                                         warm=0 if args.quick else 2)
            phases["scaling"] = round(time.monotonic() - started - sum(phases.values()), 1)
    finally:
        stack.close()
        shutil.rmtree(root, ignore_errors=True)
    if not args.json:
        print(f"CPU: {summary['cpu']} ({summary['cores']} cores)")
        for key in ("queue_overhead", "api", "scaling"):
            if key in summary:
                print(f"{key}: {json.dumps(summary[key], indent=1)}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
