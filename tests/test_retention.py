"""Retention (``atelier gc``) on both storage backends: what a run removes, what it never touches
(everything a queued or running job needs), what a dry run does (nothing), and the job page's notice."""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core import db, retention
from core.models import Dataset, Job, JobFile, Model, new_id, utcnow
from core.services import Services, build_services
from tests.conftest import make_settings
from tests.test_storage_s3 import s3_settings

DAY = dt.timedelta(days=1)


@pytest.fixture(params=["file", "s3"])
def gc_services(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Services]:
    if request.param == "file":
        settings = make_settings(tmp_path)
    else:
        settings = s3_settings(tmp_path, request.getfixturevalue("s3_server"))
    db.upgrade(settings.resolved_database_url)
    services = build_services(settings)
    yield services
    services.close()


def add_job(services: Services, status: str, finished_days_ago: float | None, files: dict[str, bytes],
            **kw: Any) -> str:
    """A job row with the given files stored under ``jobs/<id>/`` (``inputs/...`` become input rows)."""
    job_id = new_id()
    now = utcnow()
    finished = now - finished_days_ago * DAY if finished_days_ago is not None else None
    with services.sessions.begin() as s:
        s.add(Job(id=job_id, kind="style_transfer", status=status, params=kw.pop("params", {}),
                  created_at=now - 60 * DAY, finished_at=finished, **kw))
        for rel, data in files.items():
            obj = services.storage.put_bytes(f"jobs/{job_id}/{rel}", data)
            if rel.startswith(("inputs/", "outputs/")):
                s.add(JobFile(job_id=job_id, direction=rel.split("/")[0][:-1], role="content", name=rel.split("/")[-1],
                              path=obj.key, content_type="image/png", size=obj.size, sha256=obj.sha256))
    return job_id


def keys(services: Services) -> set[str]:
    return {i.key for i in services.storage.list()}


@pytest.fixture()
def world(gc_services: Services) -> dict[str, Any]:
    """Old and new, finished and active jobs, resources, orphans and leftovers."""
    sv = gc_services
    w: dict[str, Any] = {"services": sv}
    w["dataset"] = Dataset(id=new_id(), name="d", layout="unpaired", path="", meta={}, created_at=utcnow() - 90 * DAY)
    w["dataset"].path = f"datasets/{w['dataset'].id}"
    w["model"] = Model(id=new_id(), name="m", family="imported", path="", meta={}, created_at=utcnow() - 90 * DAY)
    w["model"].path = f"models/{w['model'].id}"
    with sv.sessions.begin() as s:
        s.add_all([w["dataset"], w["model"]])
    sv.storage.put_bytes(f"{w['dataset'].path}/trainA/a.png", b"A" * 10)
    sv.storage.put_bytes(f"{w['model'].path}/meta.json", b"{}")
    w["old_done"] = add_job(sv, "succeeded", 40, {"inputs/content-0-a.png": b"in", "outputs/result.png": b"out" * 10,
                                                  "preview.jpg": b"jpg"})
    w["old_failed"] = add_job(sv, "failed", 31, {"inputs/content-0-a.png": b"in", "work/checkpoints/ckpt.pt": b"c"})
    w["recent_done"] = add_job(sv, "succeeded", 2, {"outputs/result.png": b"new"})
    # active jobs, as old as anything: never touched
    w["queued"] = add_job(sv, "queued", None, {"inputs/content-0-a.png": b"queued input"},
                          params={"dataset": w["dataset"].id})
    w["running"] = add_job(sv, "running", None, {"work/checkpoints/ckpt_000000010.pt": b"ckpt",
                                                 "preview.jpg": b"p"}, started_at=utcnow() - 50 * DAY)
    w["translating"] = add_job(sv, "running", None, {"inputs/images-0-x.png": b"x"}, params={"model": w["model"].id})
    w["orphans"] = [f"jobs/{new_id()}/outputs/lost.png", f"datasets/{new_id()}/trainA/a.png", f"models/{new_id()}/G.st"]
    for key in w["orphans"]:
        sv.storage.put_bytes(key, b"orphan")
    w["temp"] = f"jobs/{w['recent_done']}/outputs/.result.png.k2j3.tmp"
    sv.storage.put_bytes(w["temp"], b"half a file")
    scratch = sv.scratch_dir
    (scratch / "tmpold").mkdir(parents=True)
    (scratch / "tmpold" / "upload.zip").write_bytes(b"z" * 100)
    old = time.time() - 10 * 86400
    for p in (scratch / "tmpold" / "upload.zip", scratch / "tmpold"):
        os.utime(p, (old, old))
    (scratch / "tmpnew").mkdir()  # a dataset upload being ingested right now
    w["protected"] = {k for k in keys(sv) if k.split("/")[1] in (w["queued"], w["running"], w["translating"],
                                                                  w["recent_done"], w["dataset"].id, w["model"].id)
                      and k != w["temp"]}
    return w


def later(hours: float = 2) -> dt.datetime:
    """A clock past the orphan grace: what was just written counts as old."""
    return utcnow() + dt.timedelta(hours=hours)


def test_a_dry_run_lists_the_plan_and_removes_nothing(world: dict[str, Any]) -> None:
    sv = world["services"]
    before = keys(sv)
    report = retention.collect(sv, 30 * DAY, dry_run=True, now=later())
    assert {r.job_id for r in report.of("job files")} == {world["old_done"], world["old_failed"]}
    assert {r.target for r in report.of("orphan")} == {k.rsplit("/", 2)[0] if k.startswith("jobs") else
                                                       "/".join(k.split("/")[:2]) for k in world["orphans"]}
    assert [r.target for r in report.of("temporary file")] == [world["temp"]]
    assert [Path(r.target).name for r in report.of("scratch")] == ["tmpold"]
    assert any(line.startswith("would remove job files") for line in report.lines())
    assert report.lines()[-1].startswith("dry run: 7 item(s)")
    assert keys(sv) == before and (sv.scratch_dir / "tmpold").exists()
    with sv.sessions() as s:
        assert all(j.artifacts_removed_at is None for j in s.query(Job))
    # with the real clock, what was just written is younger than the grace: no orphans, no temp files
    now_report = retention.collect(sv, 30 * DAY, dry_run=True)
    assert not now_report.of("orphan") and not now_report.of("temporary file")


def test_gc_removes_old_finished_jobs_orphans_and_leftovers_but_nothing_active_jobs_need(
        world: dict[str, Any]) -> None:
    sv = world["services"]
    report = retention.collect(sv, 30 * DAY, now=later())
    assert len(report.removals) == 7 and report.bytes > 0
    left = keys(sv)
    assert left == world["protected"], left ^ world["protected"]
    # everything a queued or running job needs is still there, byte for byte
    assert sv.storage.read_bytes(f"jobs/{world['queued']}/inputs/content-0-a.png") == b"queued input"
    assert sv.storage.read_bytes(f"jobs/{world['running']}/work/checkpoints/ckpt_000000010.pt") == b"ckpt"
    with sv.storage.local_copy(world["dataset"].path, sv.scratch_dir) as d:
        assert (d / "trainA" / "a.png").read_bytes() == b"A" * 10
    assert sv.storage.exists(f"{world['model'].path}/meta.json")
    assert not (sv.scratch_dir / "tmpold").exists() and (sv.scratch_dir / "tmpnew").exists()
    with sv.sessions() as s:  # rows stay; the removed ones are marked
        jobs = {j.id: j for j in s.query(Job)}
        assert {i for i, j in jobs.items() if j.artifacts_removed_at} == {world["old_done"], world["old_failed"]}
        assert len(jobs) == 6 and s.query(JobFile).filter_by(job_id=world["old_done"]).count() == 2
    # a second run finds nothing more
    assert retention.collect(sv, 30 * DAY, now=later()).removals == []


def test_kept_form_uploads_go_once_they_are_stale(gc_services: Services) -> None:
    """Files a form kept across a validation error wait KEEP_SECONDS for the next submission, then go."""
    from core import uploads
    from core.jobs.submit import Upload

    sv = gc_services
    token = uploads.keep(sv, [Upload("content", "cat.png", b"cat")], owner=None)
    assert token and retention.collect(sv, 30 * DAY).removals == []  # fresh: kept
    soon = utcnow() + dt.timedelta(seconds=uploads.KEEP_SECONDS + 60)
    report = retention.collect(sv, 30 * DAY, now=soon, dry_run=True)
    assert [r.what for r in report.removals] == ["stale upload"] and uploads.listing(sv, token, None)
    retention.collect(sv, 30 * DAY, now=soon)
    assert uploads.listing(sv, token, None) == [] and not list(sv.storage.list(uploads.PREFIX))


def test_a_job_that_was_retried_meanwhile_is_not_touched(gc_services: Services) -> None:
    """The mark is a guarded update: a job that is queued again (a retry won the race) keeps its files."""
    sv = gc_services
    job_id = add_job(sv, "failed", 40, {"inputs/content-0-a.png": b"in"})
    real_list = sv.storage.list

    def retried_while_listing(prefix: str = ""):  # type: ignore[no-untyped-def]
        with sv.sessions.begin() as s:
            s.get(Job, job_id).status = "queued"
        return real_list(prefix)

    sv.storage.list = retried_while_listing  # type: ignore[method-assign]
    try:
        report = retention.collect(sv, 30 * DAY)
    finally:
        sv.storage.list = real_list  # type: ignore[method-assign]
    assert report.of("job files") == [] and sv.storage.exists(f"jobs/{job_id}/inputs/content-0-a.png")


def test_incomplete_multipart_uploads_are_aborted(tmp_path: Path, s3_server) -> None:  # type: ignore[no-untyped-def]
    settings = s3_settings(tmp_path, s3_server)
    db.upgrade(settings.resolved_database_url)
    sv = build_services(settings)
    try:
        st = sv.storage
        st.client.create_multipart_upload(Bucket=st.bucket, Key=st._k("jobs/x/outputs/big.bin"))
        assert len(list(st.incomplete_uploads())) == 1
        # (moto reports a fixed 2010 start time for every upload, so "too young to abort" is not testable here)
        dry = retention.collect(sv, 30 * DAY, dry_run=True, now=later())
        assert [r.target for r in dry.of("incomplete upload")] == ["jobs/x/outputs/big.bin"]
        assert len(list(st.incomplete_uploads())) == 1
        retention.collect(sv, 30 * DAY, now=later())
        assert list(st.incomplete_uploads()) == []
    finally:
        sv.close()


def test_the_job_page_says_the_files_were_removed(services: Services, client) -> None:  # type: ignore[no-untyped-def]
    job_id = add_job(services, "succeeded", 40, {"outputs/result.png": b"x"})
    assert "Files removed by retention" not in client.get(f"/jobs/{job_id}").get_data(as_text=True)
    retention.collect(services, 30 * DAY)
    page = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert "Files removed by retention on" in page and " UTC" in page


def test_a_job_whose_files_were_removed_cannot_be_retried(services: Services, client) -> None:  # type: ignore[no-untyped-def]
    """Its inputs are gone: a retry would only fail again, so the API says why instead (409)."""
    job_id = add_job(services, "failed", 40, {"inputs/content.png": b"x"})
    retention.collect(services, 30 * DAY)
    resp = client.post(f"/api/v1/jobs/{job_id}/retry")
    assert resp.status_code == 409 and "removed by retention" in resp.get_json()["error"]
    assert client.get(f"/api/v1/jobs/{job_id}").get_json()["status"] == "failed"


def test_periodic_runs_wait_their_interval(services: Services) -> None:
    gc = retention.PeriodicGc(services)
    assert gc.maybe_run() is None  # off by default
    services.settings = services.settings.with_overrides(gc_interval=3600, gc_older_than=30 * 86400)
    gc = retention.PeriodicGc(services)
    job_id = add_job(services, "succeeded", 40, {"outputs/result.png": b"x"})
    t0 = utcnow()
    assert gc.maybe_run(t0) is None  # the first interval starts now
    assert gc.maybe_run(t0 + dt.timedelta(minutes=59)) is None
    report = gc.maybe_run(t0 + dt.timedelta(minutes=61))
    assert report is not None and [r.job_id for r in report.of("job files")] == [job_id]
    assert gc.maybe_run(t0 + dt.timedelta(minutes=62)) is None


def test_cli_gc(tmp_path: Path) -> None:
    from tests.stack import base_env, run_cli

    env = base_env(tmp_path)
    settings = make_settings(tmp_path)  # the same data dir as the CLI's
    db.upgrade(settings.resolved_database_url)
    sv = build_services(settings)
    job_id = add_job(sv, "canceled", 3, {"outputs/result.png": b"x"})
    sv.close()
    bad = run_cli(["gc", "--older-than", "soon"], env)
    assert bad.returncode == 2 and "not a duration" in bad.stderr
    dry = run_cli(["gc", "--older-than", "2d", "--dry-run", "--json"], env)
    assert dry.returncode == 0, dry.stderr
    out = json.loads(dry.stdout)
    assert out["dry_run"] and [r["job_id"] for r in out["removals"]] == [job_id]
    done = run_cli(["gc", "--older-than", "2d"], env)
    assert done.returncode == 0 and f"removed job files: jobs/{job_id}" in done.stdout
