"""Deleting jobs, datasets and models (issue 12), over the API and the pages: a finished job's files go
and its row stays as a tombstone (410); an active job, or a dataset/model an active job uses, is a 409
naming the fix; the pages' Delete and Retry buttons post forms that do the same."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from core import resources
from core.jobs import repository as repo
from core.jobs.runner import run_job
from core.models import Job
from core.services import Services
from tests.conftest import RecordingCelery, png_bytes
from tests.fake_kind import echo_kind  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("echo_kind")


def submit(client, **params: Any) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    resp = client.post("/api/v1/jobs", content_type="multipart/form-data",
                       data={"kind": "echo", "params": json.dumps(params),
                             "image": (io.BytesIO(png_bytes(16, 12)), "cat.png")})
    assert resp.status_code == 202, resp.get_json()
    return resp.get_json()


def stored_keys(services: Services, prefix: str) -> list[str]:
    """What storage holds under ``prefix``, through its interface (as any backend would answer)."""
    return sorted(o.key for o in services.storage.list(prefix))


def queued_job(services: Services, kind: str, params: dict[str, Any]) -> str:
    """A queued job row referencing a dataset/model (what a submit would store, without building one)."""
    job = repo.create_job(services.sessions, Job(kind=kind, status="queued", params=params), [])
    return job.id


def registered(services: Services, table: str) -> Any:
    src = services.settings.data_dir / f"src-{table}"
    src.mkdir(parents=True, exist_ok=True)
    (src / "meta.json").write_text("{}")
    (src / "weights.bin").write_bytes(b"\0" * 64)
    if table == "datasets":
        return resources.add_dataset(services, name="d", layout="unpaired", source_dir=src, meta={})
    return resources.add_model(services, name="m", family="imported", source_dir=src, meta={})


def test_deleting_a_finished_job_removes_its_files_and_keeps_a_tombstone(client, services: Services) -> None:
    job = submit(client, steps=5)
    assert run_job(services, job["id"], "w").status == "succeeded"
    services.storage.put_bytes(f"jobs/{job['id']}/work/checkpoint.pt", b"ckpt")  # as a training leaves it
    keys = stored_keys(services, f"jobs/{job['id']}")
    assert any("/inputs/" in k for k in keys) and any("/outputs/" in k for k in keys)
    assert f"jobs/{job['id']}/preview.jpg" in keys and f"jobs/{job['id']}/work/checkpoint.pt" in keys
    other = submit(client, steps=1)
    run_job(services, other["id"], "w")

    resp = client.delete(f"/api/v1/jobs/{job['id']}")
    assert resp.status_code == 204 and resp.data == b""
    assert stored_keys(services, f"jobs/{job['id']}") == [], "inputs, outputs, preview and checkpoints are gone"
    assert stored_keys(services, f"jobs/{other['id']}"), "another job's files stay"
    row = repo.get_job(services.sessions, job["id"])
    assert row is not None and row.deleted_at is not None and row.files == [] and row.preview_path is None
    gone = client.get(f"/api/v1/jobs/{job['id']}")
    assert gone.status_code == 410 and gone.get_json()["field"] == "id"
    assert "deleted at 20" in gone.get_json()["error"]
    for url in (f"/api/v1/jobs/{job['id']}/outputs/result.png", f"/api/v1/jobs/{job['id']}/events"):
        assert client.get(url).status_code == 410, url
    assert client.post(f"/api/v1/jobs/{job['id']}/retry").status_code == 410
    assert client.delete(f"/api/v1/jobs/{job['id']}").status_code == 410
    assert [j["id"] for j in client.get("/api/v1/jobs").get_json()["jobs"]] == [other["id"]]
    assert sum(repo.count_by_status(services.sessions).values()) == 1
    assert client.get(f"/jobs/{job['id']}").status_code == 410


def test_an_active_job_cannot_be_deleted(client, services: Services) -> None:
    job = submit(client)
    resp = client.delete(f"/api/v1/jobs/{job['id']}")
    assert resp.status_code == 409 and "cancel it first" in resp.get_json()["error"]
    assert repo.claim(services.sessions, job["id"], "w", 30)
    assert client.delete(f"/api/v1/jobs/{job['id']}").status_code == 409, "running"
    assert stored_keys(services, f"jobs/{job['id']}"), "nothing removed"
    assert client.get(f"/api/v1/jobs/{job['id']}").status_code == 200


@pytest.mark.parametrize("table, kind, param", [("datasets", "cyclegan_train", "dataset"),
                                                ("models", "translate", "model")])
def test_a_dataset_or_model_in_use_cannot_be_deleted(client, services: Services, table: str, kind: str,
                                                     param: str) -> None:
    row = registered(services, table)
    assert stored_keys(services, row.path)
    user = queued_job(services, kind, {param: row.id})
    finished = queued_job(services, kind, {param: row.id})
    repo.request_cancel(services.sessions, finished)
    resp = client.delete(f"/api/v1/{table}/{row.id}")
    assert resp.status_code == 409 and user in resp.get_json()["error"] and finished not in resp.get_json()["error"]
    assert resources.get(services, table, row.id) is not None
    repo.request_cancel(services.sessions, user)
    assert client.delete(f"/api/v1/{table}/{row.id}").status_code == 204
    assert resources.get(services, table, row.id) is None and stored_keys(services, row.path) == []
    assert client.get(f"/api/v1/{table}/{row.id}").status_code == 404
    assert client.delete(f"/api/v1/{table}/{row.id}").status_code == 404


def test_the_pages_delete_and_retry_buttons(client, services: Services, celery_recorder: RecordingCelery) -> None:
    failed = submit(client, outcome="fail")
    assert run_job(services, failed["id"], "w").status == "failed"
    page = client.get(f"/jobs/{failed['id']}").get_data(as_text=True)
    assert f'action="/jobs/{failed["id"]}/retry"' in page and f'action="/jobs/{failed["id"]}/delete"' in page
    assert "data-confirm=" in page and "/static/confirm.js" in page
    celery_recorder.sent.clear()
    resp = client.post(f"/jobs/{failed['id']}/retry")
    assert resp.status_code == 303 and resp.headers["Location"] == f"/jobs/{failed['id']}"
    assert repo.get_job(services.sessions, failed["id"]).status == "queued"
    assert celery_recorder.sent == [("atelier.run_job", [failed["id"]])]
    refused = client.post(f"/jobs/{failed['id']}/delete")
    assert refused.status_code == 409 and "cancel it first" in refused.get_data(as_text=True)
    active = client.get(f"/jobs/{failed['id']}").get_data(as_text=True)
    assert 'id="job-actions" hidden' in active and 'id="job-retry"' in active, "no Delete or Retry while active"
    repo.request_cancel(services.sessions, failed["id"])
    resp = client.post(f"/jobs/{failed['id']}/delete")
    assert resp.status_code == 303 and resp.headers["Location"] == "/jobs"
    assert repo.get_job(services.sessions, failed["id"]).deleted_at is not None
    assert stored_keys(services, f"jobs/{failed['id']}") == []
    assert failed["id"] not in client.get("/jobs").get_data(as_text=True)

    for table in ("datasets", "models"):
        row = registered(services, table)
        listing = client.get(f"/{table}").get_data(as_text=True)
        assert f'action="/{table}/{row.id}/delete"' in listing and "data-confirm=" in listing
        resp = client.post(f"/{table}/{row.id}/delete")
        assert resp.status_code == 303 and resp.headers["Location"] == f"/{table}"
        assert resources.get(services, table, row.id) is None and stored_keys(services, row.path) == []
        assert client.post(f"/{table}/{row.id}/delete").status_code == 404


def test_the_confirm_script_is_served(client) -> None:  # type: ignore[no-untyped-def]
    script = client.get("/static/confirm.js")
    assert script.status_code == 200 and b"data-confirm" in script.data and b"confirm(" in script.data
