"""The pages for people (Flask test client, SQLite): the style-transfer form generated from the schema,
submitting it, errors shown next to their field with nothing stored, the job page in every state, the
job list's pagination and filters, and the workers/models/datasets pages."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from core import db
from core.images import thumbnail_jpeg
from core.jobs import repository as repo
from core.jobs.submit import Upload, submit_job
from core.kinds.registry import get_kind, job_kinds
from core.models import Job
from core.services import Services, build_services
from tests.conftest import RecordingCelery, make_settings, png_bytes
from web import deps
from web.pages import ago

EXAMPLE = "starry_night.jpg"
CHELSEA = deps.EXAMPLES_DIR / "content" / "chelsea.png"


def html(resp) -> str:  # type: ignore[no-untyped-def]
    return resp.get_data(as_text=True)


def stored_nothing(services: Services) -> bool:
    jobs, _ = repo.list_jobs(services.sessions, limit=5)
    job_dir = services.storage.root / "jobs"
    return not jobs and (not job_dir.exists() or not any(job_dir.iterdir()))


def form_post(client, data: dict[str, object], path: str = "/"):  # type: ignore[no-untyped-def]
    return client.post(path, data=data, content_type="multipart/form-data")


def make_job(services: Services, steps: int = 300) -> Job:
    uploads = [Upload("content", "cat.png", png_bytes(48, 40), "image/png"),
               Upload("style", "paint.png", png_bytes(40, 40, (30, 90, 200)), "image/png")]
    return submit_job(services, "style_transfer", {"size": 64, "steps": steps}, uploads)


# -- the style-transfer form ----------------------------------------------------------------------
def test_home_form_renders_every_schema_field_with_advanced_ones_collapsed(client) -> None:
    resp = client.get("/")
    assert resp.status_code == 200
    page = html(resp)
    kind = get_kind("style_transfer")
    assert kind is not None
    head, _, details = page.partition('<details class="form-section advanced"')
    assert details, "the advanced section is a <details> element"
    assert 'id="advanced" open' not in page, "the advanced section starts collapsed"
    for p in kind.schema.params:
        where = details if p.advanced else head
        assert f'name="{p.name}"' in where, f"{p.name} is rendered in the {'advanced' if p.advanced else 'basic'} part"
        assert re.search(rf'<label (class="check" )?for="input-param-{p.name}"', where), p.name
        if p.type == "bool":
            assert f'name="{p.name}__present"' in where
    for name in ("size", "steps"):
        assert not kind.schema[name].advanced
    for spec in kind.inputs:
        assert f'type="file" id="input-file-{spec.role}" name="{spec.role}"' in page
    assert 'enctype="multipart/form-data"' in page


def test_home_form_offers_every_example_painting_as_a_thumbnail(client) -> None:
    page = html(client.get("/"))
    names = deps.example_styles()
    assert EXAMPLE in names and len(names) >= 3
    for name in names:
        assert f'type="radio" name="example_style" value="{name}"' in page
        assert f'src="/examples/styles/{name}/thumb.jpg"' in page
    thumb = client.get(f"/examples/styles/{EXAMPLE}/thumb.jpg")
    assert thumb.status_code == 200 and thumb.mimetype == "image/jpeg"
    assert len(thumb.data) < 60_000, "a thumbnail, not the full painting"
    assert client.get("/examples/styles/..%2Fcontent%2Fchelsea.png/thumb.jpg").status_code == 404
    assert client.get("/examples/styles/nope.jpg/thumb.jpg").status_code == 404


def test_submitting_upload_and_example_creates_a_queued_job_and_redirects(client, services: Services,
                                                                         celery_recorder: RecordingCelery) -> None:
    resp = form_post(client, {"content": (io.BytesIO(CHELSEA.read_bytes()), "chelsea.png"),
                              "style": (io.BytesIO(b""), ""),  # the style file input left empty
                              "example_style": EXAMPLE, "size": "40", "steps": "12"})
    assert resp.status_code == 303, html(resp)
    match = re.fullmatch(r"/jobs/([0-9a-f-]{36})", resp.headers["Location"])
    assert match, resp.headers["Location"]
    job = repo.get_job(services.sessions, match.group(1))
    assert job is not None and job.status == "queued"
    assert job.params["size"] == 40 and job.params["steps"] == 12
    roles = sorted(f.role for f in job.files if f.direction == "input")
    assert roles == ["content", "style"]
    style = next(f for f in job.files if f.role == "style")
    assert services.storage.path(style.path).read_bytes() == (deps.EXAMPLES_DIR / "styles" / EXAMPLE).read_bytes()
    assert celery_recorder.sent == [("atelier.run_job", [job.id])]
    page = client.get(resp.headers["Location"])
    assert page.status_code == 200 and "queued" in html(page)


def test_a_bad_upload_rerenders_the_form_with_the_error_at_its_field_and_stores_nothing(
        client, services: Services, celery_recorder: RecordingCelery) -> None:
    resp = form_post(client, {"content": (io.BytesIO(b"this is not an image"), "notes.txt"),
                              "example_style": EXAMPLE, "steps": "77"})
    assert resp.status_code == 415
    page = html(resp)
    assert 'id="error-file-content"' in page and 'class="field file-field has-error" id="field-file-content"' in page
    assert 'role="alert"' in page and "not a readable image" in page
    assert "choose them again" in page
    assert 'name="steps" value="77"' in page, "what was typed is kept"
    assert f'value="{EXAMPLE}" checked' in page, "the picked example stays picked"
    assert stored_nothing(services) and celery_recorder.sent == []


def test_a_bad_parameter_opens_the_advanced_section_at_its_field(client, services: Services) -> None:
    kind = get_kind("style_transfer")
    assert kind is not None
    bounded = [p for p in kind.schema.params if p.advanced and p.type == "int" and p.minimum is not None]
    target = bounded[0].name if bounded else "steps"
    bad = str(int(kind.schema[target].minimum or 0) - 1)
    resp = form_post(client, {"content": (io.BytesIO(png_bytes()), "c.png"), "example_style": EXAMPLE, target: bad})
    assert resp.status_code == 422
    page = html(resp)
    assert f'id="error-param-{target}"' in page and f'name="{target}" value="{bad}"' in page
    if kind.schema[target].advanced:
        assert 'id="advanced" open' in page
    assert stored_nothing(services)


def test_every_mistake_of_a_form_is_shown_at_once_under_its_label(client, services: Services) -> None:
    resp = form_post(client, {"content": (io.BytesIO(png_bytes()), "c.png"), "example_style": EXAMPLE,
                              "size": "8", "steps": "many", "init": "sideways"})
    assert resp.status_code == 422
    page = html(resp)
    for name in ("size", "steps", "init"):
        assert f'id="error-param-{name}"' in page, name
    assert "3 fields need a change" in page and "Output size: must be at least 16" in page
    assert 'href="#field-param-steps"' in page and 'name="steps" value="many"' in page, "what was typed is kept"
    assert stored_nothing(services)


def test_the_api_lists_every_mistake_and_keeps_the_first_as_error(client) -> None:  # type: ignore[no-untyped-def]
    resp = client.post("/api/v1/jobs", json={"kind": "translate", "params": {"batch_size": 0, "amp": "fp8",
                                                                              "colour": "red"}})
    body = resp.get_json()
    assert resp.status_code == 422 and [e["field"] for e in body["errors"]] == ["batch_size", "amp", "colour"]
    assert (body["error"], body["field"]) == (body["errors"][0]["error"], "batch_size")


def test_missing_style_and_unknown_example_are_field_errors(client, services: Services) -> None:
    resp = form_post(client, {"content": (io.BytesIO(png_bytes()), "c.png"), "style": (io.BytesIO(b""), "")})
    assert resp.status_code == 422 and 'id="error-file-style"' in html(resp)
    resp = form_post(client, {"content": (io.BytesIO(png_bytes()), "c.png"), "example_style": "../../../etc/passwd"})
    assert resp.status_code == 422 and 'id="error-file-style"' in html(resp)
    assert "etc/passwd" in html(resp) and "<script" not in html(resp).split("</head>")[1]
    assert stored_nothing(services)


def test_an_oversized_upload_answers_413_with_the_form(tmp_path: Path) -> None:
    from web import create_app

    settings = make_settings(tmp_path, max_upload_mb=1)
    db.upgrade(settings.resolved_database_url)
    services = build_services(settings)
    try:
        app = create_app(services=services, celery=RecordingCelery())
        resp = form_post(app.test_client(), {"content": (io.BytesIO(b"\0" * (2 * 1024 * 1024)), "big.png"),
                                             "example_style": EXAMPLE})
        assert resp.status_code == 413
        assert resp.mimetype == "text/html" and "1 MB limit" in html(resp)
        assert stored_nothing(services)
    finally:
        services.close()


def test_every_kind_has_a_generic_form(client) -> None:
    for name, kind in job_kinds().items():
        resp = client.get(f"/new/{name}")
        if name == "style_transfer":
            assert resp.status_code == 302 and resp.headers["Location"].endswith("/")
            continue
        assert resp.status_code == 200, name
        page = html(resp)
        for p in kind.schema.params:
            assert f'name="{p.name}"' in page, (name, p.name)
        for spec in kind.inputs:
            assert f'name="{spec.role}"' in page, (name, spec.role)
    assert client.get("/new/no_such_kind").status_code == 404


def test_query_arguments_prefill_a_form(client) -> None:
    page = html(client.get("/?steps=123&nonsense=1"))
    assert 'name="steps" value="123"' in page


# -- the job page ---------------------------------------------------------------------------------
@pytest.fixture()
def jobs_in_every_state(services: Services) -> Iterator[dict[str, str]]:
    sf = services.sessions
    queued = make_job(services)
    running = make_job(services)
    assert repo.claim(sf, running.id, "w1", 60)
    repo.update_progress(sf, running.id, "w1", step=40, total=300, metrics={"loss": 2.5},
                         points=[("loss", 20, 4.0), ("loss", 40, 2.5)])
    key = f"jobs/{running.id}/preview.jpg"
    services.storage.put_bytes(key, thumbnail_jpeg(Image.new("RGB", (32, 32))))
    repo.set_preview(sf, running.id, key, 40)
    repo.add_event(sf, running.id, "loaded <b>weights</b>")

    succeeded = make_job(services)
    assert repo.claim(sf, succeeded.id, "w1", 60)
    out = services.storage.put_bytes(f"jobs/{succeeded.id}/outputs/result.png", png_bytes())
    repo.put_output(sf, succeeded.id, role="result", name="result.png", key=f"jobs/{succeeded.id}/outputs/result.png",
                    content_type="image/png", size=out.size, sha256="0" * 64)
    repo.update_progress(sf, succeeded.id, "w1", step=300, total=300)
    assert repo.finish(sf, succeeded.id, "w1", "succeeded")

    failed = make_job(services)
    assert repo.claim(sf, failed.id, "w1", 60)
    assert repo.finish(sf, failed.id, "w1", "failed", error="The size <x> would not fit in memory; try 512.")

    canceled = make_job(services)
    repo.request_cancel(sf, canceled.id)
    yield {"queued": queued.id, "running": running.id, "succeeded": succeeded.id, "failed": failed.id,
           "canceled": canceled.id}


def test_the_job_page_renders_every_status(client, jobs_in_every_state: dict[str, str]) -> None:
    for status, job_id in jobs_in_every_state.items():
        resp = client.get(f"/jobs/{job_id}")
        assert resp.status_code == 200, status
        page = html(resp)
        assert f'<span id="job-status" class="badge status-{status}">{status}</span>' in page
        assert 'id="job-data"' in page and 'src="/static/job.js"' in page
        assert 'id="loss-plot"' in page and f'data-metrics-url="/api/v1/jobs/{job_id}/metrics"' in page
        cancel_form = re.search(r'<form id="job-cancel"[^>]*>', page)
        assert cancel_form is not None
        assert (" hidden" in cancel_form.group(0)) == (status in ("succeeded", "failed", "canceled")), status

    running = html(client.get(f"/jobs/{jobs_in_every_state['running']}"))
    assert "step 40 of 300" in running
    preview = f'src="/api/v1/jobs/{jobs_in_every_state["running"]}/preview'
    assert f'id="job-preview-img" alt="Newest intermediate image" {preview}' in running
    assert "loaded &lt;b&gt;weights&lt;/b&gt;" in running, "event text is escaped"

    done = html(client.get(f"/jobs/{jobs_in_every_state['succeeded']}"))
    assert "Done: step 300 of 300" in done
    assert f'href="/api/v1/jobs/{jobs_in_every_state["succeeded"]}/outputs/result.png?download=1"' in done

    failed = html(client.get(f"/jobs/{jobs_in_every_state['failed']}"))
    assert "would not fit in memory" in failed and "&lt;x&gt;" in failed
    assert re.search(r'<div id="job-error" class="alert alert-error" role="alert">', failed)

    queued = html(client.get(f"/jobs/{jobs_in_every_state['queued']}"))
    assert "Queued, waiting for a worker" in queued


def test_a_job_that_registered_a_model_links_to_translating_with_it(client, services: Services) -> None:
    sf = services.sessions
    plain = make_job(services)
    page = html(client.get(f"/jobs/{plain.id}"))
    assert '<section id="job-model" class="panel model-panel" aria-label="Model" hidden>' in page
    trained = make_job(services)
    assert repo.claim(sf, trained.id, "w1", 60)
    assert repo.finish(sf, trained.id, "w1", "succeeded", metrics={"model_id": "m-123"})
    urls = client.get(f"/api/v1/jobs/{trained.id}").get_json()["urls"]
    assert (urls["model"], urls["model_download"], urls["translate"]) == \
        ("/api/v1/models/m-123", "/api/v1/models/m-123/download", "/new/translate?model=m-123")
    page = html(client.get(f"/jobs/{trained.id}"))
    assert '<section id="job-model" class="panel model-panel" aria-label="Model">' in page
    assert 'href="/new/translate?model=m-123">Translate images with it</a>' in page


def test_the_job_page_shows_notices_plainly(client, services: Services) -> None:
    from sqlalchemy import update

    job = make_job(services)
    notice = "VGG-19 weights are random: the result shows how it works but is <not> artistic."
    with services.sessions.begin() as s:
        s.execute(update(Job).where(Job.id == job.id).values(notices=[notice]))
    page = html(client.get(f"/jobs/{job.id}"))
    assert '<section id="job-notices" class="notices" aria-label="Notices">' in page
    assert ('<p class="notice">VGG-19 weights are random: the result shows how it works but is &lt;not&gt; '
            'artistic.</p>') in page
    other = make_job(services)
    if not other.notices:
        other_page = html(client.get(f"/jobs/{other.id}"))
        assert '<section id="job-notices" class="notices" aria-label="Notices" hidden>' in other_page


def test_cancel_without_javascript_and_unknown_jobs(client, services: Services) -> None:
    job = make_job(services)
    resp = client.post(f"/jobs/{job.id}/cancel")
    assert resp.status_code == 303 and resp.headers["Location"] == f"/jobs/{job.id}"
    fresh = repo.get_job(services.sessions, job.id)
    assert fresh is not None and fresh.status == "canceled"
    assert client.get("/jobs/does-not-exist").status_code == 404
    assert client.post("/jobs/does-not-exist/cancel").status_code == 404


# -- the job list ---------------------------------------------------------------------------------
def test_the_job_list_is_newest_first_and_paginates_with_a_cursor(client, services: Services) -> None:
    ids = [make_job(services, steps=10 + i).id for i in range(25)]
    seen: list[str] = []
    url: str | None = "/jobs?limit=10"
    pages = 0
    while url:
        page = html(client.get(url))
        rows = re.findall(r'<tr class="job-row"[^>]*data-job-id="([0-9a-f-]{36})"', page)
        seen += rows
        pages += 1
        nxt = re.search(r'<a class="button secondary" href="([^"]+)" rel="next">', page)
        url = nxt.group(1).replace("&amp;", "&") if nxt else None
        if pages > 1:
            assert "« Newest" in page
    assert pages == 3
    assert seen == ids[::-1]
    first = html(client.get("/jobs"))
    assert "Style transfer" in first and "just now" in first and "queued" in first


def test_the_job_list_filters_by_status_and_kind(client, services: Services) -> None:
    a, b = make_job(services), make_job(services)
    repo.request_cancel(services.sessions, b.id)
    page = html(client.get("/jobs?status=canceled"))
    assert b.id in page and a.id not in page
    page = html(client.get("/jobs?kind=style_transfer&status=queued"))
    assert a.id in page and b.id not in page
    page = html(client.get("/jobs?status=bogus&cursor=%%%"))
    assert "There is no status" in page and a.id in page and b.id in page
    assert "No jobs match these filters" in html(client.get("/jobs?status=failed"))


def test_the_job_list_shows_a_thumbnail_of_the_preview_or_output(client, jobs_in_every_state: dict[str, str]) -> None:
    page = html(client.get("/jobs"))
    assert f'src="/api/v1/jobs/{jobs_in_every_state["running"]}/preview' in page
    assert f'src="/api/v1/jobs/{jobs_in_every_state["succeeded"]}/outputs/result.png"' in page


# -- workers, models, datasets ------------------------------------------------------------------
def test_workers_page_lists_workers_and_job_counts(client, services: Services) -> None:
    assert "No worker has registered yet" in html(client.get("/workers"))
    from core.models import Worker

    repo.register_worker(services.sessions, Worker(id="w1@host", hostname="host", pid=42, queues="gpu", device="cpu",
                                                   state="online", info={"weights": "random"}))
    make_job(services)
    page = html(client.get("/workers"))
    assert "w1@host" in page and "state-online" in page and "weights" in page
    assert '<span class="count-n">1</span> <span>queued</span>' in page


def test_models_and_datasets_pages_render_empty_and_with_rows(client, services: Services, tmp_path: Path) -> None:
    from core import resources

    assert "No models yet" in html(client.get("/models"))
    page = html(client.get("/datasets"))
    assert 'action="/api/v1/datasets"' in page and 'name="layout"' in page
    assert "No datasets yet" in page and "<table" not in page
    src = tmp_path / "src"
    (src / "trainA").mkdir(parents=True)
    (src / "trainA" / "a.png").write_bytes(png_bytes())
    ds = resources.add_dataset(services, name="horses <&> zebras", layout="unpaired", source_dir=src,
                               meta={"count_a": 1, "count_b": 0})
    model = resources.add_model(services, name="my <model>", family="cyclegan", source_dir=src, meta={"ngf": 8})
    page = html(client.get("/datasets"))
    assert "horses &lt;&amp;&gt; zebras" in page and "count a" in page and "No datasets yet" not in page
    assert '<th scope="col"><span class="visually-hidden">Actions</span></th>' in page
    if get_kind("cyclegan_train") is not None:
        assert 'id="demo-train"' in page
        assert "/new/cyclegan_train?" in page and ds.id in page
    page = html(client.get("/models"))
    assert "my &lt;model&gt;" in page and model.id[:8] in page and "No models yet" not in page


def test_training_forms_offer_only_datasets_the_kind_takes(client, services: Services, tmp_path: Path) -> None:
    from core import resources

    src = tmp_path / "src"
    (src / "A").mkdir(parents=True)
    (src / "A" / "a.png").write_bytes(png_bytes())
    paired = resources.add_dataset(services, name="facades", layout="paired", source_dir=src, meta={})
    unpaired = resources.add_dataset(services, name="horse2zebra", layout="unpaired", source_dir=src, meta={})
    pix2pix = html(client.get("/new/pix2pix_train"))
    assert f'value="{paired.id}"' in pix2pix and f'value="{unpaired.id}"' not in pix2pix
    cyclegan = html(client.get("/new/cyclegan_train"))
    assert f'value="{paired.id}"' in cyclegan and f'value="{unpaired.id}"' in cyclegan


# -- what every page promises ---------------------------------------------------------------------
def test_pages_use_no_inline_script_or_handlers_and_send_a_strict_csp(client,
                                                                      jobs_in_every_state: dict[str, str]) -> None:
    urls = ["/", "/jobs", "/workers", "/models", "/datasets", *(f"/jobs/{i}" for i in jobs_in_every_state.values())]
    urls += [f"/new/{k}" for k in job_kinds() if k != "style_transfer"]
    for url in urls:
        resp = client.get(url)
        assert resp.status_code == 200, url
        assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
        page = html(resp)
        assert not re.search(r"\son[a-z]+\s*=", page), f"inline event handler on {url}"
        assert not re.search(r"\sstyle\s*=", page), f"inline style on {url}"
        for tag in re.findall(r"<script\b[^>]*>", page):
            assert "src=" in tag or 'type="application/json"' in tag, (url, tag)
        ids = re.findall(r'\sid="([^"]+)"', page)
        assert len(ids) == len(set(ids)), f"duplicate ids on {url}: {sorted({i for i in ids if ids.count(i) > 1})}"
        for label in ("New job", "Jobs", "Models", "Datasets", "Workers"):
            assert f">{label}</a>" in page


def test_form_posts_from_another_site_are_refused(client, services: Services) -> None:
    data = {"content": (io.BytesIO(png_bytes()), "c.png"), "example_style": EXAMPLE}
    resp = client.post("/", data=data, content_type="multipart/form-data", headers={"Origin": "https://evil.example"})
    assert resp.status_code == 403 and stored_nothing(services)
    data = {"content": (io.BytesIO(png_bytes()), "c.png"), "example_style": EXAMPLE}
    resp = client.post("/", data=data, content_type="multipart/form-data", headers={"Origin": "http://localhost"})
    assert resp.status_code == 303


def test_ages_read_like_a_person_would_say_them() -> None:
    import datetime as dt

    now = dt.datetime(2024, 1, 1, 12, 0, tzinfo=dt.timezone.utc)
    assert ago(now - dt.timedelta(seconds=2), now) == "just now"
    assert ago(now - dt.timedelta(seconds=42), now) == "42 s ago"
    assert ago(now - dt.timedelta(minutes=3, seconds=20), now) == "3 min ago"
    assert ago(now - dt.timedelta(hours=5), now) == "5 h ago"
    assert ago(now - dt.timedelta(days=1, hours=1), now) == "1 day ago"
    assert ago((now - dt.timedelta(days=3)).replace(tzinfo=None), now) == "3 days ago"
    assert ago(None, now) == ""
