"""Datasets and models under ``/api/v1``: upload a dataset once and train on it many times; list,
download and import generators for ``translate`` jobs."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import BinaryIO

from flask import Blueprint, jsonify, request, send_file

from core import resources
from core.datasets import LAYOUTS, IngestLimits, build_demo_dataset, ingest_dataset
from core.errors import UserError, quote
from core.jobs.runner import safe_filename
from core.kinds.gan import IMPORT_SCHEMA
from web import deps
from web.api import json_body, json_object_field
from web.serialize import dataset_json, model_json

bp = Blueprint("resources", __name__, url_prefix="/api/v1")

DEMO_SOURCES = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg")


def _row_or_404(table: str, resource_id: str):  # type: ignore[no-untyped-def]
    row = resources.get(deps.services(), table, resource_id)
    if row is None:
        singular = table.rstrip("s")
        raise UserError(f"there is no {singular} with id {quote(resource_id)}", "id", 404)
    return row


# -- datasets -------------------------------------------------------------------------------------
@bp.get("/datasets")
def list_datasets():  # type: ignore[no-untyped-def]
    return jsonify({"datasets": [dataset_json(d) for d in resources.list_rows(deps.services(), "datasets")]})


@bp.get("/datasets/<dataset_id>")
def get_dataset(dataset_id: str):  # type: ignore[no-untyped-def]
    return jsonify(dataset_json(_row_or_404("datasets", dataset_id)))


@bp.post("/datasets")
def create_dataset():  # type: ignore[no-untyped-def]
    """Multipart: ``layout`` (unpaired|paired), ``name``, and either one zip under ``file`` or several
    images under ``files`` (their names carry the folders, e.g. ``trainA/1.jpg``)."""
    layout = request.form.get("layout", "unpaired")
    if layout not in LAYOUTS:
        raise UserError(f"layout must be one of {', '.join(LAYOUTS)}", "layout", 422)
    zipped = request.files.get("file")
    loose = request.files.getlist("files")
    if zipped is not None and loose:
        raise UserError("send either one zip as file or images as files, not both", "file", 422)
    if zipped is not None:
        upload: BinaryIO | list[tuple[str, bytes]] = zipped.stream  # read in place: no second copy of the zip
        default_name = zipped.filename or "dataset"
    elif loose:
        upload = [(f.filename or "image", f.read()) for f in loose]
        default_name = "dataset"
    else:
        raise UserError("a dataset needs a zip (file) or images (files)", "file", 422)
    name = (request.form.get("name") or Path(default_name).stem or "dataset").strip()[:255]
    services = deps.services()
    with resources.ScratchDir(services) as scratch:
        report = ingest_dataset(upload, scratch / "data", layout, IngestLimits.from_settings(services.settings))
        ds = resources.add_dataset(services, name=name, layout=layout, source_dir=scratch / "data", meta=report)
    return jsonify(dataset_json(ds)), 201


@bp.post("/datasets/demo")
def create_demo_dataset():  # type: ignore[no-untyped-def]
    """The one-click demo: bundled photos (A) and the same kind of photos with a fixed colour grading (B)."""
    body = json_body() if request.mimetype == "application/json" and request.content_length else {}
    layout = body.get("layout") or request.form.get("layout") or "unpaired"
    if layout not in LAYOUTS:
        raise UserError(f"layout must be one of {', '.join(LAYOUTS)}", "layout", 422)
    services = deps.services()
    sources = [deps.EXAMPLES_DIR / "content" / n for n in DEMO_SOURCES]
    with resources.ScratchDir(services) as scratch:
        report = build_demo_dataset(sources, scratch / "data", layout=layout, size=128)
        ds = resources.add_dataset(services, name=f"demo: photo ↔ graded ({layout})", layout=layout,
                                   source_dir=scratch / "data", meta={**report, "demo": True})
    return jsonify(dataset_json(ds)), 201


# -- models ---------------------------------------------------------------------------------------
@bp.get("/models")
def list_models():  # type: ignore[no-untyped-def]
    return jsonify({"models": [model_json(m) for m in resources.list_rows(deps.services(), "models")]})


@bp.get("/models/<model_id>")
def get_model(model_id: str):  # type: ignore[no-untyped-def]
    return jsonify(model_json(_row_or_404("models", model_id)))


@bp.get("/models/<model_id>/download")
def download_model(model_id: str):  # type: ignore[no-untyped-def]
    """The model directory (generator weights as safetensors + meta.json) as one zip."""
    model = _row_or_404("models", model_id)
    root = deps.services().storage.path(model.path)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(root.rglob("*")):
            if f.is_file():
                zf.write(f, f.relative_to(root).as_posix())
    buf.seek(0)
    return send_file(buf, mimetype="application/zip", as_attachment=True,
                     download_name=f"{safe_filename(model.name, 'model')}.zip")


@bp.post("/models")
def import_model():  # type: ignore[no-untyped-def]
    """Import a reference generator (``file``: .pth state_dict or .safetensors) with optional ``options``
    (JSON: name, direction, netG, ngf, norm, dropout); the architecture is inferred where not given."""
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        raise UserError("a generator file (.pth or .safetensors) is required", "file", 422)
    suffix = Path(upload.filename).suffix.lower()
    if suffix not in (".pth", ".pt", ".safetensors"):
        raise UserError("the generator file must be .pth, .pt or .safetensors", "file", 415)
    opts = IMPORT_SCHEMA.validate(json_object_field("options"))
    name = opts.get("name") or Path(upload.filename).stem
    services = deps.services()
    with resources.ScratchDir(services) as scratch:
        src = scratch / safe_filename(upload.filename, f"generator{suffix}")
        upload.save(src)
        meta = _import(src, scratch / "model", {**opts, "name": name})
        model = resources.add_model(services, name=name, family="imported", source_dir=scratch / "model", meta=meta)
    return jsonify(model_json(model)), 201


def _import(src: Path, dest: Path, options: dict[str, object]) -> dict[str, object]:
    """Through the kind's import (it screens a pickle before torch is imported, only when importing)."""
    from core.kinds.gan import import_generator

    return import_generator(src, dest, {k: v for k, v in options.items() if v not in (None, "")})
