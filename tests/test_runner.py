"""Running claimed jobs: success, user-facing failures, internal errors, cancellation, duplicates,
progress throttling, previews, and a lost lease."""

from __future__ import annotations

import threading
import time

import pytest

from core.jobs import repository as repo
from core.jobs.progress import JobProgress
from core.jobs.runner import run_job
from core.jobs.submit import Upload, submit_job
from core.models import Job
from core.services import Services
from tests.conftest import png_bytes
from tests.fake_kind import echo_kind  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("echo_kind")


def wait_for_row(services: Services, job_id: str, predicate, timeout: float = 20.0) -> Job:  # type: ignore[no-untyped-def]
    """Poll the job row until ``predicate(row)`` holds: waits for an event, not for an amount of time."""
    deadline = time.monotonic() + timeout
    while True:
        row = repo.get_job(services.sessions, job_id)
        if row is not None and predicate(row):
            return row
        assert time.monotonic() < deadline, f"job {job_id} never reached the expected state"
        time.sleep(0.01)


def submit(services: Services, **params: object) -> Job:
    return submit_job(services, "echo", params, [Upload("image", "in.png", png_bytes(20, 10), "image/png")])


def test_success_stores_output_metrics_series_and_preview(any_services: Services) -> None:
    job = submit(any_services, steps=10)
    assert job.notices == ["just a test kind"] and job.total_steps == 10
    outcome = run_job(any_services, job.id, "w1")
    assert outcome.status == "succeeded"
    row = repo.get_job(any_services.sessions, job.id)
    assert row is not None
    assert (row.status, row.step, row.total_steps, row.progress) == ("succeeded", 10, 10, 1.0)
    assert row.metrics["final"] == pytest.approx(0.1) and row.metrics["loss"] == pytest.approx(0.1)
    [out] = [f for f in row.files if f.direction == "output"]
    assert out.name == "result.png" and any_services.storage.read_bytes(out.path)[:8] == b"\x89PNG\r\n\x1a\n"
    series = repo.metric_series(any_services.sessions, job.id)
    assert [s for s, _ in series["loss"]] == list(range(1, 11))
    assert row.preview_path and any_services.storage.exists(row.preview_path)
    # a duplicate message for a finished job does nothing
    assert run_job(any_services, job.id, "w2").status == "skipped"


def test_job_failure_reason_reaches_the_user(services: Services) -> None:
    job = submit(services, outcome="fail")
    assert run_job(services, job.id, "w").status == "failed"
    row = repo.get_job(services.sessions, job.id)
    assert row is not None and row.error == "The echo job was asked to fail."


def test_internal_error_is_summarised_not_leaked(services: Services) -> None:
    job = submit(services, outcome="crash")
    assert run_job(services, job.id, "w").status == "failed"
    row = repo.get_job(services.sessions, job.id)
    assert row is not None and "internal error (RuntimeError)" in (row.error or "")
    assert "secret internal detail" not in (row.error or "")


def test_cancel_stops_within_a_step_and_keeps_the_preview(any_services: Services) -> None:
    job = submit(any_services, steps=1000, delay=0.01)
    result: list[str] = []
    t = threading.Thread(target=lambda: result.append(run_job(any_services, job.id, "w").status))
    t.start()
    wait_for_row(any_services, job.id, lambda row: bool(row.preview_path) and row.step >= 10)
    repo.request_cancel(any_services.sessions, job.id)
    t.join(timeout=20)
    assert result == ["canceled"]
    row = repo.get_job(any_services.sessions, job.id)
    assert row is not None and row.status == "canceled" and row.step < 1000
    assert row.preview_path and any_services.storage.exists(row.preview_path)


def test_progress_writes_are_throttled(services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    writes: list[int] = []
    original = repo.update_progress

    def counting(*a, **kw):  # type: ignore[no-untyped-def]
        writes.append(kw["step"])
        return original(*a, **kw)

    monkeypatch.setattr(repo, "update_progress", counting)
    services.settings = services.settings.with_overrides(progress_interval=0.2)
    job = submit(services, steps=60, delay=0.01)  # about 0.6 s of steps
    assert run_job(services, job.id, "w").status == "succeeded"
    assert 2 <= len(writes) <= 8, writes  # ~1 per 0.2 s, plus the final one, not 60
    assert writes[-1] == 60
    # every step's point is still recorded
    assert len(repo.metric_series(services.sessions, job.id)["loss"]) == 60


def test_lost_lease_stops_the_job_without_overwriting_the_new_owner(services: Services) -> None:
    services.settings = services.settings.with_overrides(heartbeat_seconds=0.05, lease_seconds=5)
    job = submit(services, steps=500, delay=0.01)
    result: list[str] = []
    t = threading.Thread(target=lambda: result.append(run_job(services, job.id, "old").status))
    t.start()
    wait_for_row(services, job.id, lambda row: row.worker_id == "old" and row.step >= 1)
    # another actor takes the job over (as after the old worker's lease expired)
    repo.release_worker_jobs(services.sessions, "old")
    assert repo.claim(services.sessions, job.id, "new", 60)
    t.join(timeout=20)
    assert result == ["lost"]
    row = repo.get_job(services.sessions, job.id)
    assert row is not None and row.status == "running" and row.worker_id == "new"


def test_a_later_attempt_continues_the_curves_from_where_it_starts(any_services: Services) -> None:
    """A worker dies at step 7; the next attempt resumes from a checkpoint at step 5. The plots must show
    steps 1-5 of the first attempt and 6-10 of the second, not steps 6-7 twice."""
    sf = any_services.sessions
    job = submit(any_services, steps=10)
    assert repo.claim(sf, job.id, "w1", 60)
    first = JobProgress(any_services, job.id, "w1", preview_every=0, interval=0)
    for step in range(1, 8):
        first.report(step, 10, {"loss": float(step)})
    repo.release_worker_jobs(sf, "w1")
    assert repo.claim(sf, job.id, "w2", 60)
    second = JobProgress(any_services, job.id, "w2", preview_every=0, interval=0)
    for step in range(6, 11):
        second.report(step, 10, {"loss": 100.0 + step})
    assert repo.metric_series(sf, job.id)["loss"] == [[s, float(s)] for s in range(1, 6)] + \
        [[s, 100.0 + s] for s in range(6, 11)]


def test_a_warning_raised_while_running_becomes_a_notice_and_an_event(any_services: Services) -> None:
    job = submit(any_services, steps=3, warning="the model learned nothing")
    assert run_job(any_services, job.id, "w").status == "succeeded"
    row = repo.get_job(any_services.sessions, job.id)
    assert row is not None and row.notices == ["just a test kind", "the model learned nothing"]
    assert any(e.level == "warning" and "learned nothing" in e.message for e in repo.events(any_services.sessions, job.id))


def test_out_of_memory_is_recognised_by_type(services: Services) -> None:
    job = submit(services, outcome="oom")
    assert run_job(services, job.id, "w").status == "failed"
    row = repo.get_job(services.sessions, job.id)
    assert row is not None and row.error == "The job ran out of the device's memory. Try a smaller size."
    job = submit(services, outcome="oom-text")
    run_job(services, job.id, "w")
    row = repo.get_job(services.sessions, job.id)
    assert row is not None and "internal error (RuntimeError)" in (row.error or "")


def test_a_short_database_outage_does_not_cost_the_attempt(services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every progress, event, cancel-poll and final write fails for ~0.6 s mid-job (as when PostgreSQL
    restarts): the job rides it out, records every step's point and succeeds on its first attempt."""
    import sqlalchemy.exc

    services.settings = services.settings.with_overrides(progress_interval=0.05, lease_seconds=30)
    outage = {"until": 0.0}
    wrapped = ("update_progress", "add_event", "is_cancel_requested", "set_preview", "finish", "renew_lease")
    for name in wrapped:
        original = getattr(repo, name)

        def flaky(*a, _original=original, **kw):  # type: ignore[no-untyped-def]
            if time.monotonic() < outage["until"]:
                raise sqlalchemy.exc.OperationalError("UPDATE jobs", {}, Exception("server closed the connection"))
            return _original(*a, **kw)

        monkeypatch.setattr(repo, name, flaky)
    job = submit(services, steps=80, delay=0.01)
    result: list[str] = []
    t = threading.Thread(target=lambda: result.append(run_job(services, job.id, "w").status))
    t.start()
    wait_for_row(services, job.id, lambda row: row.step >= 10)
    outage["until"] = time.monotonic() + 0.6
    t.join(timeout=30)
    assert result == ["succeeded"]
    row = repo.get_job(services.sessions, job.id)
    assert row is not None and row.status == "succeeded" and row.attempt == 1
    assert [s for s, _ in repo.metric_series(services.sessions, job.id)["loss"]] == list(range(1, 81))


def test_a_job_past_its_time_limit_fails_cleanly(services: Services) -> None:
    services.settings = services.settings.with_overrides(time_limits={"echo": 1})
    job = submit(services, steps=1000, delay=0.01)  # about 10 s of work
    t0 = time.monotonic()
    outcome = run_job(services, job.id, "w")
    assert outcome.status == "failed" and time.monotonic() - t0 < 5
    row = repo.get_job(services.sessions, job.id)
    assert row is not None and row.error is not None and row.error.startswith("Time limit exceeded")
    assert "1 s" in row.error and 50 <= row.step < 1000
