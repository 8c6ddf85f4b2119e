"""Time estimates: the rate over recent steps (ETA), the estimate before submitting (cost model and the
workers' measured speed, per device), and the queue position and estimated start of queued jobs."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import event, update

from core import estimates
from core.jobs import repository as repo
from core.jobs.runner import run_job
from core.jobs.submit import Upload, submit_job
from core.models import Job, Worker, utcnow
from core.services import Services
from tests.conftest import png_bytes
from tests.fake_kind import echo_kind  # noqa: F401  (fixture)

DEMO = {"dataset": "d", "iterations": 300, "size": 64, "netG": "resnet_6blocks", "ngf": 16, "ndf": 16}


def add_worker(services: Services, worker_id: str = "w1@host:1", device: str = "cpu", state: str = "online",
               info: dict | None = None) -> None:
    repo.register_worker(services.sessions, Worker(
        id=worker_id, hostname="host", pid=1, queues="gpu", device=device, state=state, info=info or {},
        started_at=utcnow(), last_seen_at=utcnow()))


# -- the rate while a job runs ----------------------------------------------------------------------
def test_rate_ignores_warm_up_and_smooths() -> None:
    meter = estimates.RateMeter(started=0.0, min_interval=0.5)
    t = 0.0
    for step in (1, 2):  # warm-up: 5 s per step (allocation, first kernels) must not count
        t += 5.0
        meter.add(step, t)
    assert meter.rate is None and meter.eta(2, 100) is None
    for step in range(3, 60):  # then a steady 10 steps per second, with a hiccup
        t += 0.1 if step != 30 else 0.6
        meter.add(step, t)
    assert meter.rate == pytest.approx(10, rel=0.25)
    assert meter.eta(59, 100) == pytest.approx(41 / meter.rate)
    assert meter.steady_rate() == pytest.approx(56 / (t - 10.1), rel=1e-6)
    # The plain average since the start (what the page used) would have said ~3.4 steps/s: 3x too slow.
    assert 59 / t < meter.rate / 2


# -- before submitting ------------------------------------------------------------------------------
def test_estimate_grows_with_the_work_and_prefers_measured_speed(services: Services) -> None:
    small = estimates.estimate(services.sessions, "cyclegan_train", DEMO)
    big = estimates.estimate(services.sessions, "cyclegan_train", {**DEMO, "size": 128})
    assert small.basis == "default" and small.device == "cpu" and small.steps == 300
    # Four times the pixels, four times the steps' time (the fixed overhead stays).
    assert big.seconds - big.overhead_seconds == pytest.approx(4 * (small.seconds - small.overhead_seconds))
    assert 30 < small.seconds < 180  # the demo: about a minute on a 2-core CPU
    assert "on cpu" in estimates.describe(small)
    assert estimates.estimate(services.sessions, "cyclegan_train", {**DEMO, "epochs": 3}).seconds is None

    # A worker measured 2 steps/s for the demo's settings: the estimate follows it, per device.
    add_worker(services)
    estimates.record_speed(services.sessions, "w1@host:1", "cyclegan_train", "cpu", DEMO, 2.0, 10.0)
    measured = estimates.estimate(services.sessions, "cyclegan_train", DEMO)
    assert measured.basis == "measured" and measured.seconds == pytest.approx(300 / 2.0 + 10.0)
    assert estimates.estimate(services.sessions, "cyclegan_train", {**DEMO, "device": "cuda"}).basis == "default"
    # A second job at 4 steps/s is averaged with the first (one slow job does not swing the estimates).
    estimates.record_speed(services.sessions, "w1@host:1", "cyclegan_train", "cpu", DEMO, 4.0, 10.0)
    assert estimates.estimate(services.sessions, "cyclegan_train", DEMO).seconds == pytest.approx(300 / 3.0 + 10.0)
    with services.sessions() as s:
        record = s.get(Worker, "w1@host:1").info["speed"]["cyclegan_train@cpu"]
    assert record["jobs"] == 2


def test_estimate_endpoint(client, services: Services) -> None:  # type: ignore[no-untyped-def]
    r = client.post("/api/v1/estimate", json={"kind": "cyclegan_train", "params": DEMO})
    body = r.get_json()
    assert r.status_code == 200 and body["seconds"] > 0 and body["basis"] == "default"
    assert body["text"].startswith(("about", "under")) and "on cpu" in body["text"]
    # What the web form sends: strings, empty meaning "the default", and fields that are not parameters.
    form = {k: str(v) for k, v in DEMO.items()} | {"load_size": "", "csrf_token": "x", "flip__present": "1"}
    assert client.post("/api/v1/estimate", json={"kind": "cyclegan_train", "params": form, "form": True}
                       ).get_json()["seconds"] == pytest.approx(body["seconds"])
    bad = client.post("/api/v1/estimate", json={"kind": "style_transfer", "params": {"size": 0}})
    assert bad.status_code == 422 and bad.get_json()["field"] == "size"
    assert client.post("/api/v1/estimate", json={"kind": "nope"}).get_json()["field"] == "kind"
    assert client.post("/api/v1/estimate", data="{", content_type="application/json").status_code == 400
    assert client.post("/api/v1/estimate", json={"kind": "translate", "params": {"model": "m"}}
                       ).get_json()["seconds"] is None


# -- what a finished job teaches the estimates ---------------------------------------------------------
@pytest.fixture()
def echo_costs(monkeypatch: pytest.MonkeyPatch, echo_kind) -> Iterator[None]:  # type: ignore[no-untyped-def]  # noqa: F811
    """The echo kind with a cost model (one unit per step), so its jobs feed the estimates."""
    real = estimates.step_cost
    monkeypatch.setattr(estimates, "step_cost", lambda kind, params: 1.0 if kind == "echo" else real(kind, params))
    yield


def submit_echo(services: Services, **params: object) -> Job:
    return submit_job(services, "echo", params, [Upload("image", "in.png", png_bytes(8, 8), "image/png")])


def test_a_finished_job_records_its_speed_and_running_jobs_have_an_eta(services: Services, echo_costs) -> None:  # type: ignore[no-untyped-def]
    add_worker(services, "w@h:1")
    job = submit_echo(services, steps=40, delay=0.02)
    assert run_job(services, job.id, "w@h:1").status == "succeeded"
    with services.sessions() as s:
        record = s.get(Worker, "w@h:1").info["speed"]["echo@cpu"]
    # ~0.02 s per step (plus the loop's own time): tens of steps per second, not the whole job's average
    assert 10 < record["units_per_s"] < 60 and record["overhead_s"] >= 0
    est = estimates.estimate(services.sessions, "echo", {"steps": 100})
    assert est.basis == "measured" and est.seconds == pytest.approx(100 / record["units_per_s"] + record["overhead_s"])


def test_queue_position_and_estimated_start(client, services: Services, echo_costs,  # type: ignore[no-untyped-def]
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(estimates, "SNAPSHOT_MIN_INTERVAL_S", 0.0)  # every change seen at once
    first, second = submit_echo(services, steps=5), submit_echo(services, steps=5)
    urgent = submit_job(services, "echo", {"steps": 5}, [Upload("image", "in.png", png_bytes(8, 8), "image/png")],
                        priority="high")

    def view(job: Job) -> dict:
        return client.get(f"/api/v1/jobs/{job.id}").get_json()

    # No live worker: a place in the queue but no start time.
    assert [view(j)["queue_position"] for j in (urgent, first, second)] == [1, 2, 3]
    assert view(first)["estimated_start_at"] is None
    add_worker(services, "w@h:1")
    estimates.record_speed(services.sessions, "w@h:1", "echo", "cpu", {"steps": 5}, 1.0, 0.0)  # 5 s a job
    # One worker, one job running with 120 s left (its smoothed ETA): the next job waits for it.
    with services.sessions.begin() as s:
        s.execute(update(Job).where(Job.id == urgent.id).values(
            status="running", started_at=utcnow(), updated_at=utcnow(), metrics={"timing": {"eta_s": 120.0}}))
    running = view(urgent)
    assert running["queue_position"] is None and running["eta_seconds"] == pytest.approx(120, abs=2)
    now = utcnow()
    start_first = dt.datetime.fromisoformat(view(first)["estimated_start_at"].replace("Z", "+00:00"))
    start_second = dt.datetime.fromisoformat(view(second)["estimated_start_at"].replace("Z", "+00:00"))
    assert view(first)["queue_position"] == 1 and view(second)["queue_position"] == 2
    assert (start_first - now).total_seconds() == pytest.approx(120, abs=3)
    assert (start_second - now).total_seconds() == pytest.approx(125, abs=3)  # and for the 5 s job ahead
    # The job page shows it too (job.js renders the position from the API's fields).
    assert client.get(f"/jobs/{second.id}").status_code == 200


# -- the worker's threads ----------------------------------------------------------------------------
def test_worker_threads_wait_passively_unless_the_operator_chose(tmp_path: Path) -> None:
    from worker.threads import prefer_passive_waiting

    env: dict[str, str] = {}
    assert prefer_passive_waiting(env) == {"OMP_WAIT_POLICY": "PASSIVE"} and env["OMP_WAIT_POLICY"] == "PASSIVE"
    for chosen in ({"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "10000"}):
        before = dict(chosen)
        assert prefer_passive_waiting(chosen) == {} and chosen == before
    # A worker's main process sets it before its pool forks and before anything has loaded torch (the
    # OpenMP runtime reads it once, when torch loads).
    code = ("import os, sys, pathlib; from core.settings import Settings; from worker.celery_app import create_celery; "
            "from worker import lifecycle; s = Settings(data_dir=pathlib.Path(sys.argv[1])); "
            "lifecycle.install(create_celery(s), s); "
            "print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)")
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "data")], capture_output=True, text=True,
                         env=clean, cwd=str(Path(__file__).resolve().parent.parent), timeout=60)
    assert out.stdout.split() == ["PASSIVE", "False"], out.stderr[-2000:]


def test_the_queue_s_work_is_estimated_once_until_the_queue_changes(services: Services, echo_costs,  # type: ignore[no-untyped-def]
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading many queued jobs (a list, a program polling) estimates the queue once, not once per job."""
    monkeypatch.setattr(estimates, "SNAPSHOT_MIN_INTERVAL_S", 0.0)
    jobs = [submit_echo(services, steps=5) for _ in range(4)]
    add_worker(services, "w@h:1")
    calls = []
    real = estimates._remaining
    monkeypatch.setattr(estimates, "_remaining", lambda *a: calls.append(a[1].id) or real(*a))
    positions = [estimates.queue_info(services.sessions, j)[0] for j in jobs]
    assert positions == [1, 2, 3, 4] and len(calls) == 4  # one snapshot: each queued job estimated once
    with services.sessions.begin() as s:
        s.execute(update(Job).where(Job.id == jobs[0].id).values(status="running", started_at=utcnow(),
                                                                 updated_at=utcnow()))
    assert estimates.queue_info(services.sessions, jobs[3])[0] == 3 and len(calls) == 8  # rebuilt: 3 + 1


def test_a_changing_queue_is_re_estimated_at_most_once_per_interval(any_services: Services, echo_costs,  # type: ignore[no-untyped-def]
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Submits and progress writes change the queue many times a second under load; polls then reuse the
    snapshot for SNAPSHOT_MIN_INTERVAL_S. A job submitted since the snapshot is placed behind it by a
    count of the newer jobs only; a high-priority one goes before the normal ones."""
    services = any_services
    clock = [1000.0]
    monkeypatch.setattr(estimates.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(estimates, "SNAPSHOT_MIN_INTERVAL_S", 1.0)
    add_worker(services, "w@h:1")
    jobs = [submit_echo(services, steps=5) for _ in range(3)]
    calls = []
    real = estimates._remaining
    monkeypatch.setattr(estimates, "_remaining", lambda *a: calls.append(a[1].id) or real(*a))
    assert estimates.queue_info(services.sessions, jobs[2])[0] == 3 and len(calls) == 3
    later = [submit_echo(services, steps=5) for _ in range(2)]  # the queue changed...
    clock[0] += 0.5
    assert [estimates.queue_info(services.sessions, j)[0] for j in (*jobs, *later)] == [1, 2, 3, 4, 5]
    assert len(calls) == 3  # ...but within the interval the snapshot is reused
    urgent = submit_job(services, "echo", {"steps": 5}, [Upload("image", "in.png", png_bytes(8, 8), "image/png")],
                        priority="high")
    assert estimates.queue_info(services.sessions, urgent)[0] == 1 and len(calls) == 3
    queries = []
    event.listen(services.engine, "before_cursor_execute", lambda *a: queries.append(a[2]))
    assert estimates.queue_info(services.sessions, later[1])[0] == 5  # counted once against this snapshot...
    assert queries == []  # ...so its polls until the next refresh ask the database nothing
    clock[0] += 0.6
    position, first_start = estimates.queue_info(services.sessions, later[1])
    assert position == 6  # refreshed: the urgent job went ahead of it
    assert len(calls) == 9 and first_start is not None  # rebuilt once, all six estimated
    estimates.queue_info(services.sessions, jobs[0])
    clock[0] += 1.5
    estimates.queue_info(services.sessions, jobs[0])  # unchanged queue: compared, not rebuilt
    assert len(calls) == 9


def test_a_slow_refresh_is_repeated_less_often() -> None:
    """Behind thousands of queued jobs a refresh takes tens of milliseconds: the snapshot then lives longer,
    so refreshing never takes more than SNAPSHOT_MAX_SHARE of a web process."""
    assert estimates._valid_for(0.001) == estimates.SNAPSHOT_MIN_INTERVAL_S == 1.0
    assert estimates._valid_for(0.08) == pytest.approx(0.08 / estimates.SNAPSHOT_MAX_SHARE) == pytest.approx(4.0)
