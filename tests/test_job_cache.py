"""The web process's job cache (web/job_cache.py) on a real PostgreSQL: polls of an unchanged job read no
table, and any change, by this process or another, is seen at once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, event, text

from core import db
from core.jobs.runner import run_job
from core.services import Services, build_services
from tests.conftest import RecordingCelery, make_settings, png_bytes
from tests.fake_kind import echo_kind  # noqa: F401  (fixture)
from tests.test_api import post
from web.job_cache import JobCache


@pytest.fixture()
def pg_services(tmp_path: Path, fresh_pg_url: str) -> Iterator[Services]:
    settings = make_settings(tmp_path, database_url=fresh_pg_url)
    db.upgrade(settings.resolved_database_url)
    services = build_services(settings)
    yield services
    services.close()


@pytest.fixture()
def pg_client(pg_services: Services, echo_kind):  # type: ignore[no-untyped-def]
    from web import create_app

    app = create_app(services=pg_services, celery=RecordingCelery())
    app.config["TESTING"] = True
    yield app.test_client()
    app.extensions["atelier"].job_cache.close()


def count_queries(services: Services) -> list[str]:
    seen: list[str] = []
    event.listen(services.engine, "before_cursor_execute", lambda *a: seen.append(a[2]))
    return seen


def wait_live(cache: JobCache) -> None:
    deadline = time.monotonic() + 10
    while not cache.live:
        assert time.monotonic() < deadline, "the cache never started listening"
        time.sleep(0.02)


def test_an_unchanged_job_is_read_once_and_a_change_elsewhere_is_seen_at_once(pg_client, pg_services: Services) -> None:  # type: ignore[no-untyped-def]
    job_id = post(pg_client, params={"steps": 2}, files={"image": ("a.png", png_bytes())}).get_json()["id"]
    cache: JobCache = pg_client.application.extensions["atelier"].job_cache
    pg_client.get(f"/api/v1/jobs/{job_id}")  # starts the listener
    wait_live(cache)
    first = pg_client.get(f"/api/v1/jobs/{job_id}").get_json()
    queries = count_queries(pg_services)
    for _ in range(5):
        again = pg_client.get(f"/api/v1/jobs/{job_id}").get_json()
    assert not [q for q in queries if "FROM jobs" in q and "job_files" in q], queries  # no job row read
    assert again["status"] == first["status"] == "queued" and again["queue_position"] == 1
    # Another process (here: a plain connection, like a worker's) finishes the job.
    run_job(pg_services, job_id, "w")
    other = create_engine(pg_services.settings.resolved_database_url)
    with other.begin() as conn:
        conn.execute(text("UPDATE jobs SET name = 'renamed by psql' WHERE id = :id"), {"id": job_id})
    other.dispose()
    deadline = time.monotonic() + 5
    while True:
        body = pg_client.get(f"/api/v1/jobs/{job_id}").get_json()
        if body["name"] == "renamed by psql":
            break
        assert time.monotonic() < deadline, body
        time.sleep(0.01)
    assert body["status"] == "succeeded" and body["outputs"] and body["queue_position"] is None


def test_this_process_s_own_write_is_read_back_without_waiting(pg_client) -> None:  # type: ignore[no-untyped-def]
    cache: JobCache = pg_client.application.extensions["atelier"].job_cache
    job_id = post(pg_client, params={"steps": 2}, files={"image": ("a.png", png_bytes())}).get_json()["id"]
    pg_client.get(f"/api/v1/jobs/{job_id}")
    wait_live(cache)
    for name in ("one", "two", "three"):
        assert pg_client.get(f"/api/v1/jobs/{job_id}").status_code == 200  # cached
        assert pg_client.patch(f"/api/v1/jobs/{job_id}", json={"name": name}).status_code == 200
        assert pg_client.get(f"/api/v1/jobs/{job_id}").get_json()["name"] == name
    assert pg_client.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 202
    assert pg_client.get(f"/api/v1/jobs/{job_id}").get_json()["status"] == "canceled"


def test_a_read_that_raced_a_change_is_not_kept_and_nothing_is_served_while_not_listening() -> None:
    cache = JobCache("postgresql+psycopg://nobody@127.0.0.1:1/none")  # never connects: not live
    loads: list[str] = []
    cache._ensure_listener = lambda: None  # type: ignore[method-assign]
    assert cache.get("a", lambda i: loads.append(i) or "v1") == "v1"
    assert cache.get("a", lambda i: loads.append(i) or "v2") == "v2" and loads == ["a", "a"]  # bypassed
    cache._set_live(True)
    assert cache.get("a", lambda i: "v3") == "v3" and cache.get("a", lambda i: "v4") == "v3"  # kept
    cache.evict("a")

    def racing_load(job_id: str) -> str:
        cache.evict(job_id)  # the notification of a change arrives while the old row is being read
        return "old"

    assert cache.get("a", racing_load) == "old"
    assert cache.get("a", lambda i: "new") == "new"  # "old" was not kept
    cache._set_live(False)  # the listener lost its connection: everything is dropped
    assert cache.get("a", lambda i: "direct") == "direct"


def test_sqlite_reads_the_table_every_time(tmp_path: Path) -> None:
    cache = JobCache(f"sqlite:///{tmp_path}/x.db")
    values = iter(["v1", "v2"])
    assert not cache.enabled
    assert cache.get("a", lambda i: next(values)) == "v1" and cache.get("a", lambda i: next(values)) == "v2"


def test_the_listener_comes_back_after_the_database_drops_it(pg_client, pg_services: Services) -> None:  # type: ignore[no-untyped-def]
    cache: JobCache = pg_client.application.extensions["atelier"].job_cache
    job_id = post(pg_client, params={"steps": 2}, files={"image": ("a.png", png_bytes())}).get_json()["id"]
    pg_client.get(f"/api/v1/jobs/{job_id}")
    wait_live(cache)
    admin = create_engine(pg_services.settings.resolved_database_url)
    with admin.begin() as conn:  # what a database restart does to the LISTEN connection
        killed = conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                   "WHERE query LIKE 'LISTEN%' OR query = 'SELECT 1' AND pid <> pg_backend_pid()")).all()
    assert killed
    deadline = time.monotonic() + 5
    while cache.live:  # noticed: bypassed until LISTEN is back
        assert time.monotonic() < deadline
        time.sleep(0.01)
    with admin.begin() as conn:  # a change made while nobody listened
        conn.execute(text("UPDATE jobs SET name = 'while deaf' WHERE id = :id"), {"id": job_id})
    admin.dispose()
    assert pg_client.get(f"/api/v1/jobs/{job_id}").get_json()["name"] == "while deaf"
    wait_live(cache)
    assert pg_client.get(f"/api/v1/jobs/{job_id}").get_json()["name"] == "while deaf"


def test_the_cache_keeps_at_most_max_entries_dropping_the_least_recently_read(monkeypatch: pytest.MonkeyPatch) -> None:
    import web.job_cache as job_cache

    monkeypatch.setattr(job_cache, "MAX_ENTRIES", 3)
    cache = JobCache("postgresql+psycopg://nobody@127.0.0.1:1/none")
    cache._ensure_listener = lambda: None  # type: ignore[method-assign]
    cache._set_live(True)
    for key in "abc":
        cache.get(key, lambda i: i.upper())
    assert cache.get("a", lambda i: "reloaded") == "A"  # read again: now the most recent
    cache.get("d", lambda i: "D")  # a fourth: "b", the least recently read, goes
    assert cache.get("b", lambda i: "b again") == "b again"
    assert cache.get("a", lambda i: "reloaded") == "A" and len(cache._entries) == 3


def test_prefer_wait_answers_as_soon_as_the_job_ends(pg_client, pg_services: Services) -> None:  # type: ignore[no-untyped-def]
    """A waiting request is woken by the job's change notification: it answers within milliseconds of the
    end, where polling with its growing delay (0.2 s up to 1 s) answered up to a second late."""
    import threading

    cache: JobCache = pg_client.application.extensions["atelier"].job_cache
    job_id = post(pg_client, params={"steps": 2}, files={"image": ("a.png", png_bytes())}).get_json()["id"]
    pg_client.get(f"/api/v1/jobs/{job_id}")
    wait_live(cache)
    answered: dict[str, object] = {}

    def waiting_client() -> None:
        resp = pg_client.application.test_client().get(f"/api/v1/jobs/{job_id}", headers={"Prefer": "wait=20"})
        answered["at"], answered["body"] = time.monotonic(), resp.get_json()

    thread = threading.Thread(target=waiting_client)
    thread.start()
    time.sleep(2.7)  # polling would sleep until 3.6 s from here (0.2 + 0.3 + 0.45 + 0.68 + 1.0 + 1.0)
    other = create_engine(pg_services.settings.resolved_database_url)
    with other.begin() as conn:  # another process ends the job
        conn.execute(text("UPDATE jobs SET status = 'canceled', finished_at = now() WHERE id = :id"), {"id": job_id})
    ended = time.monotonic()
    other.dispose()
    thread.join(20)
    assert answered["body"]["status"] == "canceled"  # type: ignore[index]
    assert answered["at"] - ended < 0.4, answered["at"] - ended  # type: ignore[operator]


def test_an_event_stream_sends_a_change_within_milliseconds(pg_client) -> None:  # type: ignore[no-untyped-def]
    """The stream is woken by the job's notification instead of waiting out its pause (1 s for a queued job)."""
    import threading

    cache: JobCache = pg_client.application.extensions["atelier"].job_cache
    job_id = post(pg_client, params={"steps": 2}, files={"image": ("a.png", png_bytes())}).get_json()["id"]
    pg_client.get(f"/api/v1/jobs/{job_id}")
    wait_live(cache)
    changed: list[float] = []

    def cancel_later() -> None:
        time.sleep(1.3)  # mid-pause: the stream looked at 0 s and 1 s, and would look again at 2 s
        changed.append(time.monotonic())
        assert pg_client.application.test_client().post(f"/api/v1/jobs/{job_id}/cancel").status_code == 202

    resp = pg_client.get(f"/api/v1/jobs/{job_id}/stream", buffered=False)
    threading.Thread(target=cancel_later, daemon=True).start()
    seen_at = None
    deadline = time.monotonic() + 10
    for chunk in resp.response:
        text = chunk.decode() if isinstance(chunk, bytes) else chunk
        if '"cancel_requested":true' in text or '"status":"canceled"' in text:
            seen_at = time.monotonic()
            break
        assert time.monotonic() < deadline
    resp.close()
    assert seen_at is not None and changed
    assert seen_at - changed[0] < 0.4, seen_at - changed[0]
