"""Reliability drills on real processes: `atelier serve` and `atelier worker` nodes on a private
PostgreSQL cluster and a private Redis (tests/drills.py), which the drills kill and restart. Tiny jobs.

Each drill prints one ``DRILL {...}`` JSON line with what it counted (submitted / succeeded / failed /
stuck / duplicated / 5xx, recovery time); the README's reliability section quotes them.

"Duplicated" counts jobs that ran more than once to completion: a job's events hold one "attempt N
started" line per claim, and the table allows a later attempt only after the earlier one ended (lease
lost or expired), so two starts for one attempt number, or a success with more starts than attempts,
would be a double run.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import REPO_ROOT
from tests.drills import DrillRecord, PrivatePostgres, PrivateRedis
from tests.stack import Api, Proc, base_env, run_cli, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STYLE = REPO_ROOT / "web/static/examples/styles/starry_night.jpg"
CONTENT = REPO_ROOT / "web/static/examples/content/chelsea.png"
SHORT = {"size": 32, "steps": 2}
LONG = {"size": 48, "steps": 150}  # several seconds on one thread: long enough to be caught running


def files() -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("content", ("chelsea.png", CONTENT.read_bytes(), "image/png")),
            ("style", ("starry.jpg", STYLE.read_bytes(), "image/jpeg"))]


class Drills:
    """One private stack: PostgreSQL, Redis, `atelier serve` and worker nodes."""

    def __init__(self, root: Path, *, lease: int, workers: dict[str, int]) -> None:
        self.root = root
        self.pg = PrivatePostgres(root / "pg")
        self.redis = PrivateRedis(root)
        self.env = base_env(root, ATELIER_DATABASE_URL=self.pg.url, ATELIER_BROKER_URL=self.redis.url,
                            ATELIER_LEASE_SECONDS=str(lease), ATELIER_HEARTBEAT_SECONDS="0.5")
        migrated = run_cli(["db", "upgrade"], self.env)
        assert migrated.returncode == 0, migrated.stderr
        self.api = Api(int(self.env["ATELIER_PORT"]))
        self.procs = [Proc(["serve", "--threads", "16"], self.env, root / "serve.log")]
        self.nodes: dict[str, Proc] = {}
        for name, concurrency in workers.items():
            self.add_node(name, concurrency)
        wait_until(lambda: self.api.healthz()["workers"]["live"] == sum(workers.values()), 120,
                   "every worker process", self.procs)

    def add_node(self, name: str, concurrency: int = 1) -> Proc:
        proc = Proc(["worker", "--name", f"{name}@%h", "--concurrency", str(concurrency)], self.env,
                    self.root / f"{name}-{len(self.procs)}.log")
        self.procs.append(proc)
        self.nodes[name] = proc
        return proc

    def close(self) -> None:
        for p in self.procs:
            p.stop()
        self.redis.close()
        self.pg.close()

    def submit(self, params: dict[str, Any], **kw: Any) -> dict[str, Any]:
        return self.api.submit("style_transfer", params, files(), **kw)

    def starts(self, job_id: str) -> list[str]:
        events = self.api.get(f"/api/v1/jobs/{job_id}/events").json()["events"]
        return [e["message"] for e in events if e["message"].startswith("attempt ") and " started on " in e["message"]]

    def duplicated(self, jobs: list[dict[str, Any]]) -> int:
        """Jobs some attempt number of which started twice, or that started more often than attempted."""
        out = 0
        for job in jobs:
            starts = self.starts(job["id"])
            numbers = [s.split()[1] for s in starts]
            if len(numbers) != len(set(numbers)) or len(starts) > max(job["attempt"], 1):
                out += 1
        return out

    def follow(self, ids: list[str], timeout: float) -> list[dict[str, Any]]:
        final = self.api.follow_all(ids, timeout, self.procs)
        return [final[j][0] for j in ids]

    def running(self, job_id: str, min_step: int = 2) -> dict[str, Any]:
        return wait_until(lambda: (j := self.api.job(job_id))["status"] == "running" and j["step"] >= min_step and j,
                          120, f"job {job_id} to run", self.procs)

    def messages(self) -> int:
        import sqlalchemy as sa

        engine = sa.create_engine(self.pg.url)
        try:
            with engine.connect() as conn:
                return int(conn.execute(sa.text("SELECT coalesce(sum(dispatch_count), 0) FROM jobs")).scalar_one())
        finally:
            engine.dispose()


@pytest.fixture(scope="module")
def drills(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Drills]:
    stack = Drills(tmp_path_factory.mktemp("drills"), lease=4, workers={"w1": 1, "w2": 1, "w3": 2})
    try:
        yield stack
    finally:
        stack.close()


def kill_process_running(d: Drills, job: dict[str, Any]) -> int:
    """SIGKILL the one pool process whose identity (``node:pid``) holds the job's lease."""
    pid = int(job["worker"].rsplit(":", 1)[1])
    os.kill(pid, signal.SIGKILL)
    return pid


def test_drill_3_duplicate_messages_and_racing_children_run_a_job_once(drills: Drills) -> None:
    from celery import Celery

    rec = DrillRecord("3: one message delivered 4 times to 4 idle processes (2 children of one node)")
    job = drills.submit(SHORT)
    app = Celery(broker=drills.redis.url)
    for _ in range(3):
        app.send_task("atelier.run_job", args=[job["id"]], queue="gpu")
    [final] = drills.follow([job["id"]], 120)
    rec.count([final])
    rec.duplicated = drills.duplicated([final])
    rec.extra = {"starts": len(drills.starts(job["id"]))}
    rec.report()
    assert final["status"] == "succeeded" and final["attempt"] == 1 and rec.duplicated == 0
    assert len(drills.starts(job["id"])) == 1


def test_drill_8_cancel_queued_and_running_then_retry(drills: Drills) -> None:
    rec = DrillRecord("8: cancel a running and a queued job, retry the canceled one")
    long = [drills.submit(LONG) for _ in range(4)]  # one per process: the fifth waits in the queue
    queued = drills.submit(SHORT)
    running = drills.running(long[0]["id"])
    assert drills.api.post(f"/api/v1/jobs/{running['id']}/cancel").status_code == 202
    assert drills.api.post(f"/api/v1/jobs/{queued['id']}/cancel").status_code == 202
    finals = drills.follow([j["id"] for j in long] + [queued["id"]], 180)
    assert finals[0]["status"] == "canceled" and finals[-1]["status"] == "canceled"
    assert drills.api.post(f"/api/v1/jobs/{queued['id']}/cancel").status_code == 409
    retried = drills.api.post(f"/api/v1/jobs/{queued['id']}/retry")
    assert retried.status_code == 202
    [again] = drills.follow([queued["id"]], 120)
    rec.count(finals[1:-1] + [again])
    rec.canceled = 1
    rec.submitted = 5
    rec.duplicated = drills.duplicated(finals + [again])
    rec.report()
    assert again["status"] == "succeeded" and all(f["status"] == "succeeded" for f in finals[1:-1])


def test_a_high_priority_job_overtakes_the_queue(drills: Drills) -> None:
    rec = DrillRecord("priority: 4 processes busy, 3 normal jobs queued, then a high one")
    busy = [drills.submit(LONG) for _ in range(4)]
    for job in busy:
        drills.running(job["id"], min_step=1)
    normal = [drills.submit(SHORT) for _ in range(3)]
    resp = requests.post(f"{drills.api.base}/api/v1/jobs", files=files(), timeout=30,
                         data={"kind": "style_transfer", "params": '{"size": 32, "steps": 2}', "priority": "high"})
    assert resp.status_code == 202 and resp.json()["priority"] == "high"
    high = resp.json()
    finals = drills.follow([j["id"] for j in busy + normal] + [high["id"]], 180)
    rec.count(finals)
    started = {f["id"]: f["started_at"] for f in finals}
    rec.extra = {"high_started_first": started[high["id"]] < min(started[n["id"]] for n in normal)}
    rec.report()
    assert all(f["status"] == "succeeded" for f in finals) and rec.extra["high_started_first"]


def test_drill_1_a_killed_process_s_job_succeeds_on_attempt_2(drills: Drills) -> None:
    rec = DrillRecord("1: SIGKILL the pool process running a style transfer")
    job = drills.submit(LONG)
    running = drills.running(job["id"])
    kill_process_running(drills, running)
    t0 = time.monotonic()
    wait_until(lambda: drills.api.job(job["id"])["attempt"] == 2, 60, "the second attempt", drills.procs)
    rec.recovery_seconds = round(time.monotonic() - t0, 1)
    [final] = drills.follow([job["id"]], 180)
    rec.count([final])
    rec.duplicated = drills.duplicated([final])
    rec.report()
    assert final["status"] == "succeeded" and final["attempt"] == 2
    assert final["worker"] != running["worker"], "a new process (or another node) ran it"


def test_drill_7_a_poison_job_fails_after_the_attempt_cap_and_others_flow(drills: Drills) -> None:
    rec = DrillRecord("7: a job whose process dies on every attempt, beside 6 normal jobs")
    poison = drills.submit(LONG)
    kills = 0
    others: list[dict[str, Any]] = []
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        job = drills.api.job(poison["id"])
        if job["status"] == "failed":
            break
        if job["status"] == "running" and job["worker"] and job["step"] >= 1:
            try:
                kill_process_running(drills, job)
                kills += 1
            except ProcessLookupError:
                pass
            if len(others) < 6:
                others += [drills.submit(SHORT) for _ in range(2)]
            wait_until(lambda: (j := drills.api.job(poison["id"]))["worker"] != job["worker"]
                       or j["status"] == "failed", 60, "the lease to go", drills.procs)
        time.sleep(0.1)
    final = drills.api.job(poison["id"])
    finals = drills.follow([o["id"] for o in others], 180)
    rec.count(finals + [final])
    rec.extra = {"kills": kills, "poison": final["status"], "reason": final["error"]}
    rec.report()
    assert final["status"] == "failed" and "stopped responding 3 times" in final["error"]
    assert kills == 3 and all(f["status"] == "succeeded" for f in finals)
    events = [e["message"] for e in drills.api.get(f"/api/v1/jobs/{poison['id']}/events").json()["events"]]
    assert sum("stopped responding" in e for e in events) == 3, ("each attempt's end is on the job page", events)


def test_drills_4_and_5_a_burst_of_submissions_then_a_backlog(drills: Drills) -> None:
    """300 submissions from 20 threads (50 repeating an earlier request's Idempotency-Key): 250 jobs, no
    5xx; the backlog drains on 4 processes with at most 1.2 broker messages per job."""
    rec = DrillRecord("4+5: 300 concurrent submissions (250 distinct keys), backlog drained by 4 processes")
    payload = files()
    keys = [f"burst-{i % 250}" for i in range(300)]

    def submit(key: str) -> tuple[int, str | None, float]:
        t0 = time.perf_counter()
        resp = requests.post(f"{drills.api.base}/api/v1/jobs", files=payload, timeout=120,
                             data={"kind": "style_transfer", "params": '{"size": 32, "steps": 2}'},
                             headers={"Idempotency-Key": key})
        return resp.status_code, (resp.json().get("id") if resp.status_code < 300 else None), time.perf_counter() - t0

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        results = list(pool.map(submit, keys))
    burst = time.perf_counter() - t0
    statuses = [s for s, _, _ in results]
    ids = sorted({j for _, j, _ in results if j})
    latencies = sorted(t for _, _, t in results)
    rec.submitted = len(keys)
    rec.http_5xx = sum(s >= 500 for s in statuses)
    started = time.monotonic()
    finals = drills.follow(ids, 600)
    rec.count(finals)
    rec.submitted = len(keys)
    rec.duplicated = drills.duplicated(finals)
    per_job = drills.messages() / max(len(ids), 1)
    rec.extra = {"jobs": len(ids), "submits_per_s": round(len(keys) / burst, 1),
                 "p50_ms": round(1000 * latencies[len(latencies) // 2]),
                 "p99_ms": round(1000 * latencies[int(len(latencies) * 0.99) - 1]),
                 "drain_seconds": round(time.monotonic() - started, 1), "messages_per_job": round(per_job, 3)}
    rec.extra.update(read_rates(drills.api.base, ids))
    rec.report()
    assert rec.http_5xx == 0 and set(statuses) <= {200, 202} and len(ids) == 250
    assert rec.succeeded == 250 and rec.duplicated == 0
    assert per_job <= 1.2, f"{per_job:.2f} broker messages per job"


def read_rates(base: str, ids: list[str]) -> dict[str, float]:
    """Status reads (20 threads) and 100-job list pages (10 threads) per second, with their p50 latency:
    figures for the README, not asserted (a 2-core machine's timings are not a test)."""
    def timed(url: str) -> float:
        t0 = time.perf_counter()
        assert requests.get(url, timeout=60).status_code == 200
        return time.perf_counter() - t0

    out: dict[str, float] = {}
    for name, urls, threads in (("status", [f"{base}/api/v1/jobs/{j}" for j in ids[:200]], 20),
                                ("list100", [f"{base}/api/v1/jobs?limit=100"] * 50, 10)):
        t0 = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            latencies = sorted(pool.map(timed, urls))
        out[f"{name}_per_s"] = round(len(urls) / (time.perf_counter() - t0), 1)
        out[f"{name}_p50_ms"] = round(1000 * latencies[len(latencies) // 2])
    return out


def test_drill_2_redis_restart_with_a_backlog_and_a_running_job(drills: Drills) -> None:
    rec = DrillRecord("2: Redis restarted (no persistence) with 20 jobs queued and one running")
    running = drills.submit(LONG)
    drills.running(running["id"])
    blockers = [drills.submit(LONG) for _ in range(3)]  # every other process busy: the 20 stay queued
    queued = [drills.submit(SHORT) for _ in range(20)]
    drills.redis.stop()
    drills.redis.start()
    t0 = time.monotonic()

    def resent() -> bool:  # every queued job has its message back (or already ran)
        return all((j := drills.api.job(q["id"]))["status"] != "queued" or j["dispatch_count"] >= 2 for q in queued)

    wait_until(resent, 120, "the lost messages to be re-sent", drills.procs)
    rec.recovery_seconds = round(time.monotonic() - t0, 1)
    finals = drills.follow([running["id"]] + [b["id"] for b in blockers] + [q["id"] for q in queued], 300)
    rec.count(finals)
    rec.duplicated = drills.duplicated(finals)
    rec.report()
    assert all(f["status"] == "succeeded" for f in finals) and rec.duplicated == 0


def test_cold_shutdown_hands_the_job_back_without_spending_an_attempt(drills: Drills) -> None:
    rec = DrillRecord("cold shutdown of the node running a job (SIGTERM, then SIGQUIT)")
    job = drills.submit(LONG)
    running = drills.running(job["id"])
    name = running["worker"].split("@", 1)[0]
    node = drills.nodes[name]
    node.popen.send_signal(signal.SIGTERM)  # warm: waits for the job ...
    time.sleep(0.5)
    os.killpg(node.popen.pid, signal.SIGQUIT)  # ... cold: the job's process is killed now
    node.popen.wait(30)
    back = wait_until(lambda: (j := drills.api.job(job["id"]))["status"] != "running" and j, 30, "the hand-back",
                      drills.procs)
    assert back["attempt"] in (0, 1) and (back["status"] == "queued" or back["worker"] != running["worker"])
    drills.add_node(name)
    [final] = drills.follow([job["id"]], 180)
    rec.count([final])
    rec.extra = {"attempt_after_hand_back": back["attempt"], "final_attempt": final["attempt"]}
    rec.report()
    assert final["status"] == "succeeded" and final["attempt"] == 1, "the interrupted attempt was not counted"
    events = [e["message"] for e in drills.api.get(f"/api/v1/jobs/{job['id']}/events").json()["events"]]
    assert any("back in the queue (this attempt is not counted)" in e for e in events)


def test_drill_6_a_postgresql_outage_while_jobs_run(tmp_path_factory: pytest.TempPathFactory) -> None:
    """PostgreSQL stopped for 10 s (shorter than the 20 s lease) while jobs run: the API answers 503 with
    Retry-After within 5 s, and every job ends correctly without losing its attempt."""
    rec = DrillRecord("6: PostgreSQL stopped for 10 s while 3 jobs run")
    d = Drills(tmp_path_factory.mktemp("drill6"), lease=20, workers={"v1": 1, "v2": 1})
    try:
        jobs = [d.submit(LONG) for _ in range(2)] + [d.submit(SHORT)]
        d.running(jobs[0]["id"])
        d.pg.stop()
        t0 = time.monotonic()
        answers = []
        while time.monotonic() - t0 < 10:
            r0 = time.monotonic()
            try:
                resp = requests.get(f"{d.api.base}/api/v1/jobs/{jobs[0]['id']}", timeout=10)
                answers.append((resp.status_code, resp.headers.get("Retry-After"), time.monotonic() - r0))
            except requests.RequestException as exc:
                answers.append((0, None, time.monotonic() - r0))
                print("request failed:", exc)
            time.sleep(0.5)
        d.pg.start()
        back = time.monotonic()
        finals = d.follow([j["id"] for j in jobs], 300)
        rec.recovery_seconds = round(time.monotonic() - back, 1)
        rec.count(finals)
        rec.http_5xx = sum(1 for s, _, _ in answers if s >= 500 and s != 503)
        rec.duplicated = d.duplicated(finals)
        rec.extra = {"answers_during_outage": sorted({s for s, _, _ in answers}),
                     "slowest_answer_s": round(max(t for _, _, t in answers), 2),
                     "attempts": [f["attempt"] for f in finals]}
        rec.report()
        assert {s for s, _, _ in answers} == {503} and all(r == "5" for _, r, _ in answers)
        assert max(t for _, _, t in answers) < 5
        assert all(f["status"] == "succeeded" and f["attempt"] == 1 for f in finals), \
            [(f["status"], f["attempt"], f["error"]) for f in finals]
    finally:
        d.close()
