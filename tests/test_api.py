"""The JSON API contract (Flask test client, SQLite): submit, read, list, files, cancel, discovery,
health — and bad input answering 4xx with ``{"error", "field"}`` while storing nothing."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import pytest

from core.jobs import repository as repo
from core.jobs.runner import run_job
from core.services import Services
from tests.conftest import RecordingCelery, png_bytes
from tests.fake_kind import echo_kind  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("echo_kind")


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` (a decompression bomb's calling card)."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b""))


def post(client, kind="echo", params=None, files=None, raw_params=None, headers=None):  # type: ignore[no-untyped-def]
    data: dict[str, object] = {"kind": kind}
    if raw_params is not None:
        data["params"] = raw_params
    elif params is not None:
        data["params"] = json.dumps(params)
    for field, (name, payload) in (files or {}).items():
        data[field] = (io.BytesIO(payload), name)
    return client.post("/api/v1/jobs", data=data, content_type="multipart/form-data", headers=headers or {})


def stored_nothing(services: Services) -> bool:
    jobs, _ = repo.list_jobs(services.sessions, limit=5)
    job_dir = services.storage.root / "jobs"
    return not jobs and (not job_dir.exists() or not any(job_dir.iterdir()))


def test_submit_answers_202_with_location_and_enqueues(client, services: Services,
                                                       celery_recorder: RecordingCelery) -> None:
    resp = post(client, params={"steps": 3}, files={"image": ("cat.png", png_bytes())})
    assert resp.status_code == 202, resp.get_json()
    body = resp.get_json()
    assert resp.headers["Location"] == f"/api/v1/jobs/{body['id']}"
    for key in ("id", "kind", "status", "progress", "step", "total_steps", "error", "created_at", "started_at",
                "finished_at", "params", "metrics", "outputs", "preview_url"):
        assert key in body
    assert body["status"] == "queued" and body["params"]["steps"] == 3 and body["params"]["outcome"] == "succeed"
    assert body["total_steps"] == 3 and body["progress"] == 0
    assert celery_recorder.sent == [("atelier.run_job", [body["id"]])]


def test_get_follows_the_job_to_its_output(client, services: Services) -> None:
    job_id = post(client, params={"steps": 4}, files={"image": ("cat.png", png_bytes(33, 21))}).get_json()["id"]
    run_job(services, job_id, "w")
    body = client.get(f"/api/v1/jobs/{job_id}").get_json()
    assert body["status"] == "succeeded" and body["progress"] == 1.0 and body["step"] == 4
    assert body["started_at"] and body["finished_at"] and body["finished_at"].endswith("Z")
    [out] = body["outputs"]
    assert out["name"] == "result.png" and out["content_type"] == "image/png"
    data = client.get(out["url"])
    assert data.status_code == 200 and data.data[:4] == b"\x89PNG" and len(data.data) == out["size"]
    download = client.get(out["url"] + "?download=1")
    assert "attachment" in download.headers["Content-Disposition"]
    series = client.get(f"/api/v1/jobs/{job_id}/metrics").get_json()["series"]
    assert [p[0] for p in series["loss"]] == [1, 2, 3, 4]
    events = client.get(f"/api/v1/jobs/{job_id}/events").get_json()["events"]
    assert events[-1]["message"] == "succeeded"
    assert client.get(f"/api/v1/jobs/{job_id}/outputs/nope.png").status_code == 404


@pytest.mark.parametrize(
    ("kind", "params", "files", "status", "field"),
    [
        ("echo", {}, {"image": ("x.png", b"this is not an image at all")}, 415, "image"),
        ("echo", {}, {"image": ("x.png", png_bytes(64, 64)[:300])}, 422, "image"),
        ("echo", {}, {"image": ("bomb.png", png_header_only(20000, 20000))}, 413, "image"),
        ("echo", {}, {"image": ("big.png", png_header_only(8000, 6000))}, 413, "image"),
        ("echo", {}, {}, 422, "image"),
        ("echo", {"stepz": 3}, {"image": ("x.png", png_bytes())}, 422, "stepz"),
        ("echo", {"steps": 0}, {"image": ("x.png", png_bytes())}, 422, "steps"),
        ("echo", {"steps": "many"}, {"image": ("x.png", png_bytes())}, 422, "steps"),
        ("echo", {"outcome": "explode"}, {"image": ("x.png", png_bytes())}, 422, "outcome"),
        ("nope", {}, {"image": ("x.png", png_bytes())}, 422, "kind"),
        ("", {}, {"image": ("x.png", png_bytes())}, 422, "kind"),
        ("echo", {}, {"image": ("x.png", png_bytes()), "extra": ("y.png", png_bytes())}, 422, "extra"),
        ("echo", {}, {"image": ("x.png", b"")}, 422, "image"),
    ],
)
def test_bad_input_answers_4xx_naming_the_field_and_stores_nothing(client, services: Services,
                                                                   celery_recorder: RecordingCelery,
                                                                   kind, params, files, status, field) -> None:
    resp = post(client, kind=kind, params=params, files=files)
    assert resp.status_code == status, resp.get_json()
    body = resp.get_json()
    assert body["field"] == field and body["error"]
    assert stored_nothing(services) and celery_recorder.sent == []


def test_malformed_params_json_is_400(client, services: Services) -> None:
    resp = post(client, raw_params="{not json", files={"image": ("x.png", png_bytes())})
    assert resp.status_code == 400 and resp.get_json()["field"] == "params"
    resp = post(client, raw_params="[1, 2]", files={"image": ("x.png", png_bytes())})
    assert resp.status_code == 400 and resp.get_json()["field"] == "params"
    assert stored_nothing(services)


def test_wrong_content_type_is_415(client, services: Services) -> None:
    resp = client.post("/api/v1/jobs", data=b"kind=echo", content_type="text/plain")
    assert resp.status_code == 415 and "multipart" in resp.get_json()["error"]


def test_oversized_upload_is_413(services: Services, celery_recorder: RecordingCelery) -> None:
    from web import create_app

    services.settings = services.settings.with_overrides(max_upload_mb=1)
    client = create_app(services=services, celery=celery_recorder).test_client()
    resp = post(client, files={"image": ("big.png", b"\0" * (2 * 1024 * 1024))})
    assert resp.status_code == 413 and "1 MB" in resp.get_json()["error"]
    assert stored_nothing(services)


def test_list_paginates_newest_first_and_filters(client, services: Services) -> None:
    ids = [post(client, files={"image": ("x.png", png_bytes())}).get_json()["id"] for _ in range(5)]
    page1 = client.get("/api/v1/jobs?limit=2").get_json()
    page2 = client.get(f"/api/v1/jobs?limit=2&cursor={page1['next_cursor']}").get_json()
    page3 = client.get(f"/api/v1/jobs?limit=2&cursor={page2['next_cursor']}").get_json()
    assert [j["id"] for j in page1["jobs"] + page2["jobs"] + page3["jobs"]] == ids[::-1]
    assert page3["next_cursor"] is None
    run_job(services, ids[0], "w")
    done = client.get("/api/v1/jobs?status=succeeded").get_json()["jobs"]
    assert [j["id"] for j in done] == [ids[0]]
    assert client.get("/api/v1/jobs?kind=echo&status=queued").get_json()["jobs"][0]["id"] == ids[-1]
    for query, field in (("limit=0", "limit"), ("limit=x", "limit"), ("status=done", "status"),
                         ("kind=zzz", "kind"), ("cursor=garbage!", "cursor")):
        resp = client.get(f"/api/v1/jobs?{query}")
        assert resp.status_code == 400 and resp.get_json()["field"] == field, query


def test_cancel_a_queued_job(client, services: Services) -> None:
    job_id = post(client, files={"image": ("x.png", png_bytes())}).get_json()["id"]
    resp = client.post(f"/api/v1/jobs/{job_id}/cancel")
    assert resp.status_code == 202 and resp.get_json()["status"] == "canceled"
    assert run_job(services, job_id, "w").status == "skipped"
    again = client.post(f"/api/v1/jobs/{job_id}/cancel")
    assert again.status_code == 409 and "already been canceled" in again.get_json()["error"]


def test_cancelling_a_finished_job_is_a_409_saying_so(client, services: Services) -> None:
    job_id = post(client, files={"image": ("x.png", png_bytes())}).get_json()["id"]
    assert run_job(services, job_id, "w").status == "succeeded"
    resp = client.post(f"/api/v1/jobs/{job_id}/cancel")
    body = resp.get_json()
    assert resp.status_code == 409 and (body["error"], body["field"]) == (
        "the job has already succeeded; there is nothing to cancel", "id")


def test_unknown_job_is_404_json(client) -> None:
    resp = client.get("/api/v1/jobs/does-not-exist")
    assert resp.status_code == 404 and resp.get_json()["field"] == "id"
    assert client.get("/api/v1/nowhere").status_code == 404


def test_kinds_and_openapi_come_from_the_schemas(client) -> None:
    kinds = {k["name"]: k for k in client.get("/api/v1/kinds").get_json()["kinds"]}
    assert kinds["echo"]["params"]["properties"]["steps"]["maximum"] == 1000
    spec = client.get("/api/v1/openapi.json").get_json()
    assert spec["components"]["schemas"]["Params_echo"]["properties"]["outcome"]["enum"] == ["succeed", "fail", "crash", "oom", "oom-text"]
    assert "/api/v1/jobs" in spec["paths"]


def test_healthz_reports_database_broker_and_workers(client, services: Services) -> None:
    body = client.get("/healthz").get_json()
    assert body["broker"]["state"] == "error"  # the file broker's folder does not exist yet
    from worker.celery_app import create_celery

    create_celery(services.settings)  # creates it, as a worker or `atelier up` does
    body = client.get("/healthz").get_json()
    assert body["database"]["state"] == "ok" and body["broker"]["state"] == "ok"
    assert body["workers"]["state"] == "none" and "atelier worker" in body["workers"]["detail"]


def test_healthz_is_503_when_the_database_is_behind(tmp_path: Path, services: Services,
                                                    celery_recorder: RecordingCelery) -> None:
    from alembic import command

    from core import db
    from web import create_app

    app = create_app(services=services, celery=celery_recorder)
    command.downgrade(db.alembic_config(services.settings.resolved_database_url), "base")
    resp = app.test_client().get("/healthz")
    assert resp.status_code == 503 and "atelier db upgrade" in resp.get_json()["database"]["detail"]


def test_posts_from_other_sites_are_refused(client, services: Services, celery_recorder: RecordingCelery) -> None:
    data = {"kind": "echo", "image": (io.BytesIO(png_bytes()), "x.png")}
    resp = client.post("/api/v1/jobs", data=data, content_type="multipart/form-data",
                       headers={"Origin": "https://evil.example"})
    assert resp.status_code == 403 and stored_nothing(services) and celery_recorder.sent == []
    data = {"kind": "echo", "image": (io.BytesIO(png_bytes()), "x.png")}
    resp = client.post("/api/v1/jobs", data=data, content_type="multipart/form-data",
                       headers={"Origin": "http://localhost"})
    assert resp.status_code == 202


def test_random_weights_are_announced_on_style_jobs(client) -> None:
    resp = post(client, kind="style_transfer", params={"size": 32, "steps": 5},
                files={"content": ("c.png", png_bytes()), "style": ("s.png", png_bytes(30, 30, (20, 90, 200)))})
    assert resp.status_code == 202, resp.get_json()
    assert any("not artistic" in n for n in resp.get_json()["notices"])


def test_an_unavailable_database_is_a_503_with_retry_after(client, services: Services, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import sqlalchemy.exc

    from core.jobs import repository as repo

    def down(*_a, **_kw):  # type: ignore[no-untyped-def]
        raise sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("connection refused"))

    monkeypatch.setattr(repo, "get_job", down)
    monkeypatch.setattr(repo, "list_jobs", down)
    for path in ("/api/v1/jobs/x", "/api/v1/jobs", "/jobs/x"):
        resp = client.get(path)
        assert resp.status_code == 503 and resp.headers["Retry-After"] == "5", path
    assert client.get("/api/v1/jobs").get_json()["error"].startswith("the database is unavailable")


def test_idempotency_key_gives_one_job_per_request(client, services: Services, celery_recorder) -> None:  # type: ignore[no-untyped-def]
    headers = {"Idempotency-Key": "order-42"}
    first = post(client, files={"image": ("x.png", png_bytes())}, headers=headers)
    again = post(client, files={"image": ("x.png", png_bytes())}, headers=headers)
    assert first.status_code == 202 and again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true" and again.get_json()["id"] == first.get_json()["id"]
    assert len(celery_recorder.sent) == 1, "the replay sends no second message"
    other = post(client, files={"image": ("y.png", png_bytes(41, 30))}, headers=headers)
    assert other.status_code == 409 and other.get_json()["field"] == "Idempotency-Key"
    bad = post(client, files={"image": ("x.png", png_bytes())}, headers={"Idempotency-Key": "has space"})
    assert bad.status_code == 400
    assert len(client.get("/api/v1/jobs").get_json()["jobs"]) == 1


def test_priority_and_retry(client, services: Services, celery_recorder) -> None:  # type: ignore[no-untyped-def]
    job = client.post("/api/v1/jobs", data={"kind": "echo", "params": '{"outcome": "fail"}', "priority": "high",
                                            "image": (io.BytesIO(png_bytes()), "x.png")},
                      content_type="multipart/form-data").get_json()
    assert job["priority"] == "high" and job["dispatch_count"] == 1
    bad = client.post("/api/v1/jobs", json={"kind": "echo", "priority": "urgent"})
    assert bad.status_code == 422 and bad.get_json()["field"] == "priority"
    assert client.post(f"/api/v1/jobs/{job['id']}/retry").status_code == 409, "queued: nothing to retry"
    assert run_job(services, job["id"], "w").status == "failed"
    resp = client.post(f"/api/v1/jobs/{job['id']}/retry")
    assert resp.status_code == 202
    again = resp.get_json()
    assert (again["status"], again["attempt"], again["error"], again["dispatch_count"]) == ("queued", 0, None, 2)
    assert [a for _, a in celery_recorder.sent] == [[job["id"]], [job["id"]]]


def test_a_job_s_urls_resolve_to_their_routes(client, app) -> None:  # type: ignore[no-untyped-def]
    job = post(client, files={"image": ("a b<c>.png", png_bytes())}).get_json()
    adapter = app.url_map.bind("localhost")
    expected = {"self": "api.get_job", "page": "pages.job_page", "cancel": "api.cancel_job", "retry": "api.retry_job",
                "metrics": "api.job_metrics", "events": "api.job_events"}
    for key, endpoint in expected.items():
        method = "POST" if key in ("cancel", "retry") else "GET"
        assert adapter.match(job["urls"][key], method=method)[0] == endpoint, key
    [inp] = job["inputs"]
    endpoint, args = adapter.match(inp["url"])
    assert endpoint == "api.job_input" and args["name"] == inp["name"]
    assert client.get(inp["url"]).status_code == 200
