"""The dashboard's readability (Flask test client, SQLite): parameters and metrics under human labels,
datasets and models by name with links, job names (submit, rename, search), dataset/model renames,
"Download all" as a zip, the before/after comparison, the compact model summary and the styled 404/405.
The browser half (event log, phone widths, the slider) is in tests/test_browser.py."""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from core import resources
from core.engines.gan.cyclegan import SAMPLE_LABELS
from core.engines.gan.preview import grid
from core.jobs import repository as repo
from core.jobs.submit import Upload, submit_job
from core.kinds.registry import get_kind
from core.models import Job
from core.services import Services
from tests.conftest import png_bytes
from web.labels import format_metric, metric_label


def html(resp: Any) -> str:
    return resp.get_data(as_text=True)


def style_job(services: Services, name: str | None = None) -> Job:
    uploads = [Upload("content", "cat.png", png_bytes(48, 40), "image/png"),
               Upload("style", "paint.png", png_bytes(40, 40, (30, 90, 200)), "image/png")]
    return submit_job(services, "style_transfer", {"size": 64, "steps": 10}, uploads, name=name)


def finish_with_outputs(services: Services, job: Job, outputs: dict[str, bytes], metrics: dict[str, Any]) -> None:
    sf = services.sessions
    assert repo.claim(sf, job.id, "w1", 60)
    for name, data in outputs.items():
        key = f"jobs/{job.id}/outputs/{name}"
        obj = services.storage.put_bytes(key, data)
        kind = "image/png" if name.endswith(".png") else "application/json"
        repo.put_output(sf, job.id, role="result", name=name, key=key, content_type=kind, size=obj.size,
                        sha256="0" * 64)
    assert repo.finish(sf, job.id, "w1", "succeeded", metrics=metrics)


def demo_dataset(client: Any) -> dict[str, Any]:
    resp = client.post("/api/v1/datasets/demo")
    assert resp.status_code == 201
    return resp.get_json()


def model_row(services: Services, tmp_path: Path, source_job_id: str | None = None) -> Any:
    src = tmp_path / "model-src"
    src.mkdir(exist_ok=True)
    spec = {"arch": "resnet", "depth": 6, "ngf": 16, "norm": "instance", "dropout": False, "netG": "resnet_6blocks"}
    meta = {"format": "atelier-model-1", "family": "cyclegan",
            "generators": {"AtoB": {"file": "G_A.safetensors", "spec": spec},
                           "BtoA": {"file": "G_B.safetensors", "spec": spec}},
            "options": {"size": 64, "iterations": 300, "iterations_done": 300, "name": "", "load_size": None},
            "notes": []}
    (src / "meta.json").write_text(json.dumps(meta))
    return resources.add_model(services, name="demo cyclegan", family="cyclegan", source_dir=src, meta=meta,
                               source_job_id=source_job_id)


# -- labels -----------------------------------------------------------------------------------------
def test_training_parameters_read_as_labels_and_the_dataset_as_a_named_link(client, services: Services) -> None:
    dataset = demo_dataset(client)
    resp = client.post("/api/v1/jobs", json={"kind": "cyclegan_train", "params": {"dataset": dataset["id"]}})
    assert resp.status_code == 202
    page = html(client.get(f"/jobs/{resp.get_json()['id']}"))
    table = page[page.index('<table class="params">'):]
    for label in ("Generator filters", "Discriminator filters", "Cycle weight A→B→A", "Cycle weight B→A→B",
                  "Identity weight", "Learning rate", "Adam β1", "Crop size", "Dataset"):
        assert f'<th scope="row">{label}</th>' in table, label
    for raw in (">Ngf<", ">Lambda a<", ">Lr<", ">Beta1<", ">Ndf<"):
        assert raw not in table
    assert dataset["id"] not in table.split("</table>")[0].replace(f"#dataset-{dataset['id']}", ""), \
        "the dataset shows by name, not by id"
    assert f'<a href="/datasets#dataset-{dataset["id"]}">{dataset["name"]}</a>' in table
    assert f'id="dataset-{dataset["id"]}"' in html(client.get("/datasets")), "the link's anchor exists"
    kind = get_kind("cyclegan_train")
    assert kind is not None and all(p.title[:1].isupper() for p in kind.schema.params)


def test_metrics_have_labels_units_and_no_duplicate_final_values(client, services: Services) -> None:
    job = style_job(services)
    finish_with_outputs(services, job, {"result.png": png_bytes()},
                        {"load_seconds": 0.25, "weights": "random", "output_size": [64, 48], "loss": 1.5,
                         "final_loss": 1.5, "resumed_from": None, "it_per_s": 5.5})
    page = html(client.get(f"/jobs/{job.id}"))
    metrics = page[page.index('id="job-metrics"'):page.index("</dl>", page.index('id="job-metrics"'))]
    assert "<dt>Load time</dt><dd>0.25 s</dd>" in metrics
    assert "<dt>VGG-19 weights</dt><dd>random</dd>" in metrics
    assert "<dt>Output size</dt><dd>64×48</dd>" in metrics
    assert "<dt>Speed</dt><dd>5.5 it/s</dd>" in metrics
    assert "load_seconds" not in metrics and "final_loss" not in metrics and "Resumed" not in metrics
    assert metrics.count("<dt>Total loss</dt>") == 1
    assert (metric_label("vgg19_weights_ok"), format_metric("vgg19_weights_ok", True)) == ("VGG-19 weights", "usable")
    assert format_metric("weights", "imagenet") == "ImageNet" and format_metric("seconds", 75.0) == "1 min 15 s"
    assert metric_label("final_cycle_A") == "Cycle A→B→A, last" and metric_label("images_per_s") == "Speed"
    assert metric_label("some_new_key") == "Some new key"
    labels = json.loads(re.search(r'<script type="application/json" id="job-labels">(.*?)</script>', page,
                                  re.S).group(1))  # type: ignore[union-attr]
    assert labels["groups"]["cycle_A"] == "Cycle consistency" and labels["labels"]["G_A"].startswith("Generator")


def test_a_translate_job_lists_its_inputs_compares_and_has_no_loss_panel(client, services: Services,
                                                                         tmp_path: Path) -> None:
    model = model_row(services, tmp_path)
    uploads = [Upload("images", "coffee.png", png_bytes(40, 30), "image/png"),
               Upload("images", "rocket.png", png_bytes(30, 40, (20, 40, 200)), "image/png")]
    job = submit_job(services, "translate", {"model": model.id}, uploads)
    finish_with_outputs(services, job, {"coffee.png": png_bytes(40, 30), "rocket.png": png_bytes(30, 40)},
                        {"images": 2, "direction": "AtoB"})
    page = html(client.get(f"/jobs/{job.id}"))
    assert 'id="loss-plot"' not in page and "Loss curves" not in page
    assert "Inputs: images" not in page
    assert re.search(r'<h3 class="input-role">Images <span class="muted">\(2\)</span></h3>', page)
    assert '<span class="input-name">coffee.png</span>' in page and '<span class="input-name">rocket.png</span>' in page
    figures = re.findall(r'<figure class="figure result compare" data-compare>.*?</figure>\s*</div>', page, re.S)
    pairs = re.findall(r'class="compare-before" src="([^"]+)".*?class="compare-after" src="([^"]+)"', page, re.S)
    assert len(pairs) == 2 and len(figures) >= 1
    assert pairs[0][0].endswith("/inputs/images-0-coffee.png") and pairs[0][1].endswith("/outputs/coffee.png")
    assert pairs[1][0].endswith("/inputs/images-1-rocket.png") and pairs[1][1].endswith("/outputs/rocket.png")
    assert 'type="range"' in page and "Side by side" in page
    assert f'<a href="/models#model-{model.id}">demo cyclegan</a>' in page, "the model shows by name"
    assert 'id="job-download-all"' in page and f'href="/api/v1/jobs/{job.id}/outputs.zip"' in page


def test_a_style_result_compares_with_its_content_photo(client, services: Services) -> None:
    job = style_job(services)
    finish_with_outputs(services, job, {"result.png": png_bytes()}, {})
    page = html(client.get(f"/jobs/{job.id}"))
    before, after = re.search(r'class="compare-before" src="([^"]+)".*?class="compare-after" src="([^"]+)"',
                              page, re.S).groups()  # type: ignore[union-attr]
    assert "/inputs/content-0-cat.png" in before and after.endswith("/outputs/result.png")
    assert '<p class="download-all" hidden>' in page, "one output: no zip button"
    assert '<h3 class="input-role">Content photo</h3>' in page and '<h3 class="input-role">Style painting</h3>' in page


# -- names, search, rename ------------------------------------------------------------------------
def test_jobs_take_a_name_at_submit_from_the_api_and_the_form(client, services: Services) -> None:
    data = {"kind": "style_transfer", "params": json.dumps({"size": 32, "steps": 2}), "name": "  Cat  at dusk ",
            "content": (io.BytesIO(png_bytes()), "cat.png"), "style": (io.BytesIO(png_bytes()), "s.png")}
    api = client.post("/api/v1/jobs", data=data, content_type="multipart/form-data").get_json()
    assert api["name"] == "Cat at dusk"
    too_long = client.post("/api/v1/jobs", json={"kind": "cyclegan_train", "name": "x" * 256, "params": {}})
    assert too_long.status_code == 422 and too_long.get_json()["field"] == "name"
    form = client.post("/", data={"size": "32", "steps": "2", "job_name": "from the form", "example_style":
                                  "starry_night.jpg", "content": (io.BytesIO(png_bytes()), "cat.png")},
                       content_type="multipart/form-data")
    assert form.status_code == 303
    job = repo.get_job(services.sessions, form.headers["Location"].rsplit("/", 1)[1])
    assert job is not None and job.name == "from the form"
    kept = client.post("/", data={"size": "1", "job_name": "keep me"}, content_type="multipart/form-data")
    assert kept.status_code == 422 and 'name="job_name" value="keep me"' in html(kept)
    page = html(client.get(f"/jobs/{api['id']}"))
    assert '<span class="job-name">Cat at dusk</span>' in page
    listing = html(client.get("/jobs"))
    assert f'<a class="job-link" href="/jobs/{api["id"]}">Cat at dusk</a>' in listing


def test_the_list_searches_names_ids_statuses_and_kinds(client, services: Services) -> None:
    monet = style_job(services, name="Monet harbour")
    other = style_job(services, name="100% cat")
    plain = style_job(services)
    repo.request_cancel(services.sessions, plain.id)

    def found(q: str) -> set[str]:
        api = {j["id"] for j in client.get("/api/v1/jobs", query_string={"q": q}).get_json()["jobs"]}
        page = html(client.get("/jobs", query_string={"q": q}))
        assert api == set(re.findall(r'data-job-id="([^"]+)"', page)), q
        return api

    assert found("monet") == {monet.id} == found("  HARBOUR ")
    assert found(plain.id[:8]) == {plain.id}
    assert found("canceled") == {plain.id}
    assert found("style") == {monet.id, other.id, plain.id}, "the kind's title"
    assert found("100%") == {other.id} and found("%") == {other.id}, "wildcards are literal"
    assert found("nothing like this") == set()
    page = html(client.get("/jobs", query_string={"q": "nothing like this"}))
    assert "No jobs match “nothing like this”" in page and 'value="nothing like this"' in page
    assert client.get("/api/v1/jobs", query_string={"q": "x" * 256}).status_code == 400
    assert client.get("/api/v1/jobs", query_string={"q": "a\x00b"}).status_code == 400
    assert client.get("/jobs", query_string={"q": "mon\x00et"}).status_code == 200


def test_search_and_rename_run_the_same_on_sqlite_and_postgresql(any_services: Services) -> None:
    sf = any_services.sessions
    a, b = style_job(any_services, name="Blue_Period 50%"), style_job(any_services)

    def ids(text: str, kinds: tuple[str, ...] = ()) -> set[str]:
        return {j.id for j in repo.list_jobs(sf, search=text, search_kinds=kinds)[0]}

    assert ids("blue_period") == {a.id} and ids("50%") == {a.id} and ids("%") == {a.id}
    assert ids("yl_") == set(), "an underscore is literal (as a wildcard it would match the kind, style_transfer)"
    assert ids(b.id[:6].upper()) == {b.id} or ids(b.id[:6]) == {b.id}
    assert ids("queued") == {a.id, b.id} and ids("nothing", ("style_transfer",)) == {a.id, b.id}
    assert repo.rename_job(sf, b.id, "Rose period") and ids("rose") == {b.id}
    assert not repo.rename_job(sf, "nope", "x")


def test_jobs_datasets_and_models_are_renamed_by_api_and_by_page_forms(client, services: Services,
                                                                      tmp_path: Path) -> None:
    job = style_job(services, name="first")
    assert client.patch(f"/api/v1/jobs/{job.id}", json={"name": "second"}).get_json()["name"] == "second"
    assert client.patch(f"/api/v1/jobs/{job.id}", json={"name": None}).get_json()["name"] is None
    assert client.patch(f"/api/v1/jobs/{job.id}", json={"status": "failed"}).status_code == 400
    assert client.patch(f"/api/v1/jobs/{job.id}", json={"name": "a\x01b"}).status_code == 422
    resp = client.post(f"/jobs/{job.id}/name", data={"name": "from the page"})
    assert resp.status_code == 303 and resp.headers["Location"] == f"/jobs/{job.id}"
    assert repo.get_job(services.sessions, job.id).name == "from the page"  # type: ignore[union-attr]
    assert client.post("/jobs/nope/name", data={"name": "x"}).status_code == 404

    dataset = demo_dataset(client)
    model = model_row(services, tmp_path)
    for table, row_id in (("datasets", dataset["id"]), ("models", model.id)):
        api = client.patch(f"/api/v1/{table}/{row_id}", json={"name": f"  renamed {table} "})
        assert api.status_code == 200 and api.get_json()["name"] == f"renamed {table}"
        assert client.patch(f"/api/v1/{table}/{row_id}", json={"name": ""}).status_code == 422
        assert client.patch(f"/api/v1/{table}/{row_id}", json={"name": "a\x00b"}).status_code == 422
        resp = client.post(f"/{table}/{row_id}/name", data={"name": f"paged {table}"})
        assert resp.status_code == 303 and resp.headers["Location"] == f"/{table}#{table[:-1]}-{row_id}"
        page = html(client.get(f"/{table}"))
        assert f"<strong>paged {table}</strong>" in page
        assert f'action="/{table}/{row_id}/name"' in page and f'id="rename-{row_id}"' in page
        assert client.post(f"/{table}/{row_id}/name", data={"name": " "}).status_code == 422


# -- files --------------------------------------------------------------------------------------------
def test_download_all_streams_a_zip_of_every_output(client, services: Services) -> None:
    job = style_job(services, name="two files")
    files = {"result.png": png_bytes(50, 40), "model.json": b'{"a": 1}' * 500}
    finish_with_outputs(services, job, files, {})
    resp = client.get(f"/api/v1/jobs/{job.id}/outputs.zip")
    assert resp.status_code == 200 and resp.mimetype == "application/zip" and resp.is_streamed
    assert resp.headers["Content-Disposition"] == f'attachment; filename="two_files-{job.id[:8]}.zip"'
    with zipfile.ZipFile(io.BytesIO(resp.get_data())) as zf:
        assert zf.testzip() is None
        assert {n: zf.read(n) for n in zf.namelist()} == files
        assert zf.getinfo("model.json").compress_type == zipfile.ZIP_DEFLATED
        assert zf.getinfo("result.png").compress_type == zipfile.ZIP_STORED
    empty = style_job(services)
    assert client.get(f"/api/v1/jobs/{empty.id}/outputs.zip").status_code == 404
    assert client.get("/api/v1/jobs/nope/outputs.zip").status_code == 404


def test_the_models_page_summarises_each_model_and_folds_the_details(client, services: Services,
                                                                    tmp_path: Path) -> None:
    job = style_job(services)
    model = model_row(services, tmp_path, source_job_id=job.id)
    page = html(client.get("/models"))
    row = page[page.index(f'id="model-{model.id}"'):]
    row = row[:row.index("</tr>")]
    summary = row[row.index('<dl class="summary-list">'):row.index("</dl>")]
    assert "<dt>Architecture</dt><dd>ResNet, 6 blocks, 16 filters, instance norm</dd>" in summary
    assert "<dt>Directions</dt><dd>A→B, B→A</dd>" in summary
    assert "<dt>Trained at</dt><dd>64 px</dd>" in summary and "<dt>Iterations</dt><dd>300</dd>" in summary
    assert "None" not in summary
    assert '<details class="more-details"><summary>All details</summary>' in row
    assert f'href="/jobs/{job.id}"' in row


# -- errors -------------------------------------------------------------------------------------------
def test_unknown_pages_get_the_styled_404_and_api_paths_json(client) -> None:
    page = client.get("/docs")
    assert page.status_code == 404 and page.mimetype == "text/html"
    body = html(page)
    assert '<nav aria-label="Main">' in body and "<h1 id=\"nf-h\">Not found</h1>" in body
    assert "There is no page at this address." in body and "/static/style.css" in body
    api = client.get("/api/v1/nothing-here")
    assert api.status_code == 404 and api.get_json()["error"]
    wrong = client.post("/jobs")
    assert wrong.status_code == 405 and "Not allowed" in html(wrong) and "GET" in wrong.headers["Allow"]
    api_wrong = client.delete("/api/v1/kinds")
    assert api_wrong.status_code == 405 and api_wrong.is_json


# -- the sample grid ---------------------------------------------------------------------------------
def test_sample_grids_carry_their_row_and_column_labels() -> None:
    torch.manual_seed(0)
    rows = [[torch.zeros(3, 64, 64) for _ in range(3)] for _ in range(2)]  # mid-grey tiles
    plain, labelled = grid(rows), grid(rows, labels=SAMPLE_LABELS)
    assert labelled.width == plain.width and labelled.height > plain.height, "a label strip above each row"
    strip = labelled.crop((0, 0, labelled.width, labelled.height - plain.height // 2 - 60))
    dark = sum(strip.convert("L").histogram()[:100])
    assert dark > 30, "text is drawn in the strip"
    samples = [[torch.zeros(3, 64, 64) for _ in range(6)] for _ in range(3)]
    same_columns = grid(samples, labels=[SAMPLE_LABELS[0] + SAMPLE_LABELS[1]] * 3)
    assert same_columns.height - grid(samples).height < labelled.height - plain.height, "one header for many rows"
    tiny = [[torch.zeros(3, 16, 16) for _ in range(3)]]
    assert grid(tiny, labels=[SAMPLE_LABELS[0]]).size == grid(tiny).size, "tiles too small for text: no labels"


# -- contrast ------------------------------------------------------------------------------------------
def _luminance(hex_colour: str) -> float:
    h = hex_colour.lstrip("#")
    r, g, b = (int(h[i:i + 2], 16) / 255 for i in (0, 2, 4))

    def lin(c: float) -> float:
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    return 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b)


def _contrast(a: str, b: str) -> float:
    hi, lo = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_controls_and_focus_rings_have_3_to_1_contrast_in_light_and_dark_mode() -> None:
    css = (Path(__file__).resolve().parent.parent / "web" / "static" / "style.css").read_text()
    light_block = css[css.index(":root {"):css.index("}", css.index(":root {"))]
    dark_start = css.index(":root {", css.index("prefers-color-scheme: dark"))
    dark_block = css[dark_start:css.index("}", dark_start)]
    for name, block in (("light", light_block), ("dark", dark_block)):
        var = dict(re.findall(r"--([\w-]+):\s*(#[0-9a-fA-F]{6})", block))
        for fg in ("control-border", "accent"):
            for bg in ("surface", "bg", "surface-2"):
                ratio = _contrast(var[fg], var[bg])
                assert ratio >= 3, f"{name}: --{fg} on --{bg} is {ratio:.2f}:1"
    for rule in ("input[type=text], input[type=number], input[type=search], select {", ".button {", ".legend-item {"):
        body = css[css.index(rule):css.index("}", css.index(rule))]
        assert "var(--control-border)" in body, rule
    assert ":focus-visible { outline: 3px solid var(--accent)" in css
