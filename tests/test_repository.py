"""Job-table transitions on SQLite and PostgreSQL: guarded updates, leases, recovery, pagination."""

from __future__ import annotations

import datetime as dt
import threading

from core.jobs import repository as repo
from core.models import Job, JobEvent, Worker, utcnow
from core.services import Services


def later(seconds: float) -> dt.datetime:
    """A moment ``seconds`` from now: the injected clock that lets a lease expire without waiting."""
    return utcnow() + dt.timedelta(seconds=seconds)


def add_job(services: Services, **kw: object) -> Job:
    job = Job(kind="style_transfer", params={"size": 32}, total_steps=10, max_attempts=kw.pop("max_attempts", 3), **kw)
    return repo.create_job(services.sessions, job, [])


def test_claim_is_won_once(any_services: Services) -> None:
    job = add_job(any_services)
    assert repo.claim(any_services.sessions, job.id, "w1", 30)
    assert not repo.claim(any_services.sessions, job.id, "w2", 30)
    row = repo.get_job(any_services.sessions, job.id)
    assert row is not None and row.status == "running" and row.worker_id == "w1" and row.attempt == 1
    assert row.started_at is not None


def test_concurrent_claims_have_one_winner(any_services: Services) -> None:
    job = add_job(any_services)
    wins: list[str] = []
    barrier = threading.Barrier(6)

    def contend(name: str) -> None:
        barrier.wait()
        if repo.claim(any_services.sessions, job.id, name, 30):
            wins.append(name)

    threads = [threading.Thread(target=contend, args=(f"w{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1


def test_expired_lease_can_be_claimed_again_and_old_owner_loses(any_services: Services) -> None:
    sf = any_services.sessions
    job = add_job(any_services)
    assert repo.claim(sf, job.id, "dead", 30)
    assert not repo.claim(sf, job.id, "alive", 30, now=later(29)), "the lease has not expired yet"
    assert repo.claim(sf, job.id, "alive", 30, now=later(31))
    # the first attempt's end is on the job page, as when the monitor recovers the job
    with sf() as s:
        events = [e.message for e in s.query(JobEvent).filter_by(job_id=job.id)]
    assert events == ["attempt 1 of 3 ended: its worker stopped responding; alive took the job over"], events
    # the old worker's writes are refused: it no longer holds the job
    assert not repo.update_progress(sf, job.id, "dead", step=5, total=10)
    assert not repo.finish(sf, job.id, "dead", "succeeded")
    assert repo.renew_lease(sf, job.id, "dead", 30) == (False, False)
    assert repo.update_progress(sf, job.id, "alive", step=5, total=10, points=[("loss", 5, 1.5)])
    assert repo.finish(sf, job.id, "alive", "succeeded", metrics={"loss": 1.5})
    row = repo.get_job(sf, job.id)
    assert row is not None and row.status == "succeeded" and row.attempt == 2 and row.progress == 1.0
    assert repo.metric_series(sf, job.id) == {"loss": [[5, 1.5]]}


def test_terminal_states_are_final(any_services: Services) -> None:
    sf = any_services.sessions
    job = add_job(any_services)
    assert repo.claim(sf, job.id, "w", 30)
    assert repo.finish(sf, job.id, "w", "failed", error="boom")
    assert not repo.finish(sf, job.id, "w", "succeeded")
    assert not repo.claim(sf, job.id, "w2", 30)
    assert repo.request_cancel(sf, job.id) == "failed"
    row = repo.get_job(sf, job.id)
    assert row is not None and row.status == "failed" and row.error == "boom"


def test_cancel_queued_and_running(any_services: Services) -> None:
    sf = any_services.sessions
    queued = add_job(any_services)
    assert repo.request_cancel(sf, queued.id) == "canceled"
    assert not repo.claim(sf, queued.id, "w", 30)

    running = add_job(any_services)
    assert repo.claim(sf, running.id, "w", 30)
    assert repo.request_cancel(sf, running.id) == "running"
    assert repo.renew_lease(sf, running.id, "w", 30) == (True, True)
    assert repo.is_cancel_requested(sf, running.id)
    assert repo.finish(sf, running.id, "w", "canceled")
    assert repo.request_cancel(sf, "no-such-id") is None


def test_recover_expired_requeues_then_fails_after_max_attempts(any_services: Services) -> None:
    sf = any_services.sessions
    job = add_job(any_services, max_attempts=2)
    assert repo.claim(sf, job.id, "w1", 30)
    assert repo.recover_expired(sf, now=later(29)) == ([], []), "the lease has not expired yet"
    requeued, failed = repo.recover_expired(sf, now=later(31))
    assert requeued == [job.id] and failed == []
    row = repo.get_job(sf, job.id)
    assert row is not None and row.status == "queued" and row.worker_id is None
    assert repo.claim(sf, job.id, "w2", 30)
    requeued, failed = repo.recover_expired(sf, now=later(31))
    assert requeued == [] and failed == [job.id]
    row = repo.get_job(sf, job.id)
    assert row is not None and row.status == "failed" and "stopped responding 2 times" in (row.error or "")


def test_cancel_of_abandoned_job_is_completed_by_recovery(any_services: Services) -> None:
    sf = any_services.sessions
    job = add_job(any_services)
    assert repo.claim(sf, job.id, "w1", 30)
    repo.request_cancel(sf, job.id)
    repo.recover_expired(sf, now=later(29))
    row = repo.get_job(sf, job.id)
    assert row is not None and row.status == "running", "its worker may still be alive"
    repo.recover_expired(sf, now=later(31))
    row = repo.get_job(sf, job.id)
    assert row is not None and row.status == "canceled"


def test_release_worker_jobs_hands_back_without_counting_the_attempt(any_services: Services) -> None:
    sf = any_services.sessions
    job = add_job(any_services)
    other = add_job(any_services)
    assert repo.claim(sf, job.id, "leaving", 30)
    assert repo.claim(sf, other.id, "staying", 30)
    assert repo.release_worker_jobs(sf, "leaving") == [job.id]
    row = repo.get_job(sf, job.id)
    assert row is not None and row.status == "queued" and row.attempt == 0
    other_row = repo.get_job(sf, other.id)
    assert other_row is not None and other_row.status == "running"


def test_dispatch_is_claimed_by_one_sender_at_a_time(any_services: Services) -> None:
    sf = any_services.sessions
    job = add_job(any_services)
    assert repo.never_dispatched(sf, created_before=later(1)) == [job.id]
    assert repo.claim_dispatch(sf, job.id, sent_before=None)
    assert not repo.claim_dispatch(sf, job.id, sent_before=None), "already sent"
    assert repo.never_dispatched(sf, created_before=later(1)) == []
    assert not repo.claim_dispatch(sf, job.id, sent_before=later(-1)), "sent just now"
    assert repo.count_dispatched_queued(sf, sent_before=later(1)) == 1
    assert repo.claim_dispatch(sf, job.id, sent_before=later(1), now=later(2))
    row = repo.get_job(sf, job.id)
    assert row is not None and row.dispatch_count == 2
    repo.forget_dispatch(sf, job.id)
    assert repo.never_dispatched(sf, created_before=later(1)) == [job.id]


def test_oldest_sent_jobs_come_first(any_services: Services) -> None:
    sf = any_services.sessions
    a, b = add_job(any_services), add_job(any_services)
    assert repo.claim_dispatch(sf, b.id, sent_before=None, now=later(-20))
    assert repo.claim_dispatch(sf, a.id, sent_before=None, now=later(-10))
    assert repo.dispatched_queued(sf, sent_before=later(0), limit=5) == [b.id, a.id]
    assert repo.dispatched_queued(sf, sent_before=later(-15), limit=5) == [b.id]


def test_one_dispatch_sweep_at_a_time_on_postgresql(fresh_pg_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from core import db
    from core.services import build_services
    from tests.conftest import make_settings

    settings = make_settings(tmp_path, database_url=fresh_pg_url)
    db.upgrade(fresh_pg_url)
    one, two = build_services(settings), build_services(settings)
    try:
        with repo.sweep_lock(one.sessions) as first:
            with repo.sweep_lock(two.sessions) as second:
                assert first and not second
        with repo.sweep_lock(two.sessions) as again:
            assert again, "released after the sweep"
    finally:
        one.close()
        two.close()


def test_list_jobs_newest_first_with_cursor_and_filters(any_services: Services) -> None:
    sf = any_services.sessions
    ids = [add_job(any_services).id for _ in range(7)]
    other = repo.create_job(sf, Job(kind="translate", params={}, total_steps=1), [])
    seen: list[str] = []
    cursor = None
    while True:
        page, cursor = repo.list_jobs(sf, kind="style_transfer", limit=3, cursor=cursor)
        seen += [j.id for j in page]
        if cursor is None:
            break
    assert seen == ids[::-1]
    everything, _ = repo.list_jobs(sf, limit=50)
    assert everything[0].id == other.id and len(everything) == 8
    assert repo.list_jobs(sf, status="running")[0] == []


def test_worker_registry(any_services: Services) -> None:
    sf = any_services.sessions
    repo.register_worker(sf, Worker(id="w@h", hostname="h", pid=1, queues="gpu", device="cpu", info={"x": 1},
                                    started_at=utcnow(), last_seen_at=utcnow()))
    repo.touch_worker(sf, "w@h", state="busy", current_job_id="abc")
    [w] = repo.list_workers(sf)
    assert (w.state, w.current_job_id, w.info) == ("busy", "abc", {"x": 1})
