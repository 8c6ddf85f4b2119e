"""Run again and Edit and run again (inputs reused from storage, nothing uploaded again); the form's
errors under their labels with the valid files kept across the error; the form's starting choices."""

from __future__ import annotations

import io
import re

import pytest

from core import uploads as kept_uploads
from core.jobs import repository as repo
from core.jobs.runner import run_job
from core.jobs.submit import Upload, submit_job
from core.models import Job
from core.services import Services
from tests.conftest import RecordingCelery, png_bytes
from tests.fake_kind import echo_kind  # noqa: F401  (fixture)
from web import deps

pytestmark = pytest.mark.usefixtures("echo_kind")
EXAMPLE = "starry_night.jpg"


def html(resp) -> str:  # type: ignore[no-untyped-def]
    return resp.get_data(as_text=True)


def form_post(client, data: dict[str, object], path: str = "/"):  # type: ignore[no-untyped-def]
    return client.post(path, data=data, content_type="multipart/form-data")


def inputs(job: Job) -> list[tuple[str, int, str, str]]:
    return sorted((f.role, f.size, f.sha256, f.path) for f in job.files if f.direction == "input")


def finished_echo(services: Services, **params: object) -> Job:
    image = Upload("image", "cat.png", png_bytes(12, 10), "image/png")
    job = submit_job(services, "echo", {"steps": 3, **params}, [image], name="first")
    assert run_job(services, job.id, "w").status == "succeeded"
    row = repo.get_job(services.sessions, job.id)
    assert row is not None
    return row


def new_job_from(resp, services: Services) -> Job:  # type: ignore[no-untyped-def]
    match = re.fullmatch(r"/(?:api/v1/)?jobs/([0-9a-f-]{36})", resp.headers["Location"])
    assert match, resp.headers.get("Location")
    job = repo.get_job(services.sessions, match.group(1))
    assert job is not None
    return job


# -- run again ---------------------------------------------------------------------------------------
def test_rerun_through_the_api_reuses_the_stored_inputs(client, services: Services,
                                                        celery_recorder: RecordingCelery) -> None:
    old = finished_echo(services)
    resp = client.post(f"/api/v1/jobs/{old.id}/rerun", json={"params": {"steps": 4}})
    assert resp.status_code == 202, resp.get_json()
    body = resp.get_json()
    new = new_job_from(resp, services)
    assert body["status"] == "queued" and body["params"] == {**old.params, "steps": 4} and new.name == "first"
    # Same bytes (size and hash) as the first job's inputs, read from storage: the request carried no file.
    assert [(r, n, h) for r, n, h, _ in inputs(new)] == [(r, n, h) for r, n, h, _ in inputs(old)]
    assert all(path.startswith(f"jobs/{new.id}/inputs/") for *_, path in inputs(new))
    assert [f.name for f in new.files if f.direction == "input"] == ["image-0-cat.png"]
    assert celery_recorder.sent[-1] == ("atelier.run_job", [new.id])
    # the new job stands on its own: deleting the old one leaves its inputs readable
    services.storage.delete_prefix(f"jobs/{old.id}")
    assert run_job(services, new.id, "w").status == "succeeded"

    # Running or queued: not yet. Unknown: 404. Changed parameters are validated like a new submission.
    assert client.post(f"/api/v1/jobs/{new.id}/rerun").status_code == 202
    queued = repo.list_jobs(services.sessions, status="queued", limit=1)[0][0]
    assert client.post(f"/api/v1/jobs/{queued.id}/rerun").status_code == 409
    assert client.post("/api/v1/jobs/nope/rerun").status_code == 404
    bad = client.post(f"/api/v1/jobs/{new.id}/rerun", json={"params": {"steps": 0}})
    assert bad.status_code == 422 and bad.get_json()["field"] == "steps"
    assert client.post(f"/api/v1/jobs/{new.id}/rerun", json={"colour": 1}).status_code == 400
    # An input removed from storage (retention): a sentence naming it, not a crash.
    gone = client.post(f"/api/v1/jobs/{old.id}/rerun")
    assert gone.status_code == 409 and "no longer stored" in gone.get_json()["error"]


def test_run_again_button_on_the_job_page(client, services: Services) -> None:
    old = finished_echo(services)
    page = html(client.get(f"/jobs/{old.id}"))
    assert f'action="/jobs/{old.id}/rerun"' in page and "Run again" in page
    assert f"/new/echo?from={old.id}" in page and "Edit and run again" in page
    resp = client.post(f"/jobs/{old.id}/rerun")
    assert resp.status_code == 303
    new = new_job_from(resp, services)
    assert new.id != old.id and new.params == old.params and new.status == "queued"
    assert [h for _, _, h, _ in inputs(new)] == [h for _, _, h, _ in inputs(old)]
    queued_page = html(client.get(f"/jobs/{new.id}"))
    # only finished, failed or canceled jobs: hidden until then (job.js shows them when the job ends)
    assert 'id="job-actions" hidden' in queued_page
    assert client.post("/jobs/nope/rerun").status_code == 404


def test_edit_and_run_again_prefills_the_form_and_keeps_the_inputs(client, services: Services) -> None:
    old = finished_echo(services, delay=0.01)
    page = html(client.get(f"/new/echo?from={old.id}"))
    assert 'name="steps" value="3"' in page and 'name="delay" value="0.01"' in page
    assert f'name="from_job" value="{old.id}"' in page
    assert 'name="keep_input" value="image-0-cat.png" checked' in page and "cat.png" in page
    assert f'src="/api/v1/jobs/{old.id}/inputs/image-0-cat.png"' in page
    picker = re.search(r'<input type="file" id="input-file-image"[^>]*>', page)
    assert picker and " required" not in picker.group(0), "a kept file stands in for the upload"
    # Change one setting, keep the file, send no upload.
    resp = form_post(client, {"from_job": old.id, "keep_input": "image-0-cat.png", "steps": "6", "delay": "0"},
                     path="/new/echo")
    assert resp.status_code == 303, html(resp)
    new = new_job_from(resp, services)
    assert new.params["steps"] == 6 and [h for _, _, h, _ in inputs(new)] == [h for _, _, h, _ in inputs(old)]
    # Unticking the kept file means no file: the slot's own error.
    resp = form_post(client, {"from_job": old.id, "steps": "6"}, path="/new/echo")
    assert resp.status_code == 422 and 'id="error-file-image"' in html(resp)


# -- errors under their labels, files kept ------------------------------------------------------------
def test_all_errors_at_once_with_labels_and_the_valid_files_kept(client, services: Services) -> None:
    content = png_bytes(48, 40)
    resp = form_post(client, {"content": (io.BytesIO(content), "cat.png"), "style": (io.BytesIO(b"junk"), "x.txt"),
                              "example_style": "", "size": "8", "style_layers": "relu9_9"})
    assert resp.status_code == 422
    page = html(resp)
    # every mistake, parameters and files, in the summary under the labels people see
    assert "3 fields need a change" in page
    assert "Output size: must be at least 16" in page and "Style layers:" in page and "Style painting:" in page
    summary = page.split('id="form-error"')[1].split("</div>")[0]
    assert "style_layers" not in re.sub(r"<[^>]+>", "", summary), "the text people read uses labels"
    assert 'tabindex="-1"' in page  # form.js moves the focus to the summary
    assert 'href="#field-param-style_layers"' in page
    # the valid photo is kept (a token, a thumbnail and a checked box); the bad file is not
    token = re.search(r'name="kept_token" value="([^"]+)"', page)
    assert token, page
    assert 'name="keep_upload" value="0" checked' in page and "cat.png" in page
    assert len(kept_uploads.listing(services, token.group(1), None)) == 1
    thumb = client.get(f"/uploads/{token.group(1)}/0")
    assert thumb.status_code == 200 and thumb.data == content and thumb.mimetype == "image/png"
    assert client.get("/uploads/" + "x" * 32 + "/0").status_code == 404
    assert "Your files are kept below" in page

    # Fixing the parameters and picking a painting is enough: the photo comes from the kept files.
    resp = form_post(client, {"kept_token": token.group(1), "keep_upload": "0", "example_style": EXAMPLE,
                              "size": "32", "steps": "2"})
    assert resp.status_code == 303, html(resp)
    job = new_job_from(resp, services)
    content_row = next(f for f in job.files if f.role == "content")
    assert services.storage.read_bytes(content_row.path) == content
    assert not list(services.storage.list(f"uploads/{token.group(1)}")), "used up once the job exists"


def test_kept_uploads_expire_belong_to_their_owner_and_are_listed_for_gc(services: Services) -> None:
    import datetime as dt

    token = kept_uploads.keep(services, [Upload("content", "a.png", png_bytes(8, 8), "image/png")], "alice")
    assert token and len(kept_uploads.listing(services, token, "alice")) == 1
    assert kept_uploads.listing(services, token, "bob") == [] and kept_uploads.read(services, token, None, [0]) == []
    later = kept_uploads.utcnow() + dt.timedelta(seconds=kept_uploads.KEEP_SECONDS + 60)
    assert kept_uploads._manifest(services, token, "alice", now=later) is None
    assert kept_uploads.stale_tokens(services) == []
    assert kept_uploads.stale_tokens(services, now=later) == [token]
    kept_uploads.discard(services, token)
    assert not list(services.storage.list("uploads"))
    assert kept_uploads.listing(services, "../../etc", None) == []


# -- the form's starting choices --------------------------------------------------------------------
def test_a_newcomer_who_uploads_only_a_photo_gets_a_painting(client, services: Services) -> None:
    page = html(client.get("/"))
    assert f'name="example_style" value="{EXAMPLE}" checked' in page, "the painting picker starts on a painting"
    for name in ("chelsea.png", "astronaut.png"):  # the bundled photos are offered as content
        assert f'name="example_content" value="{name}"' in page
    assert client.get("/examples/content/chelsea.png/thumb.jpg").status_code == 200
    # What the browser sends for "upload a photo, press Start": the default painting comes along.
    resp = form_post(client, {"content": (io.BytesIO(png_bytes(40, 30)), "me.png"), "example_style": EXAMPLE,
                              "example_content": "", "steps": "2", "size": "32"})
    assert resp.status_code == 303, html(resp)
    # And a bundled photo works as content with no upload at all.
    resp = form_post(client, {"example_content": "chelsea.png", "example_style": EXAMPLE, "steps": "2", "size": "32"})
    assert resp.status_code == 303, html(resp)
    job = new_job_from(resp, services)
    content = next(f for f in job.files if f.role == "content")
    assert services.storage.read_bytes(content.path) == (deps.EXAMPLES_DIR / "content" / "chelsea.png").read_bytes()
