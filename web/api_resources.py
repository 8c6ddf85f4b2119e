"""Datasets and models under ``/api/v1``: upload a dataset once and train on it many times; list,
download and import generators for ``translate`` jobs."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

from flask import Blueprint, Response, jsonify, request

from core import deletion, resources
from core.auth import can_see, owner_filter, owner_of_new_rows
from core.datasets import LAYOUTS, IngestLimits, build_demo_dataset, ingest_dataset
from core.errors import UserError, quote
from core.jobs.runner import safe_filename
from core.kinds.gan import IMPORT_SCHEMA
from web import deps
from web.auth import identity
from web.api import json_body, json_object_field
from web.downloads import send_zip
from web.serialize import dataset_json, model_json

bp = Blueprint("resources", __name__, url_prefix="/api/v1")

DEMO_SOURCES = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg")


def _row_or_404(table: str, resource_id: str):  # type: ignore[no-untyped-def]
    row = resources.get(deps.services(), table, resource_id)
    if row is None or not can_see(identity(), row.owner):  # another owner's row is missing, never forbidden
        singular = table.rstrip("s")
        raise UserError(f"there is no {singular} with id {quote(resource_id)}", "id", 404)
    return row


# -- datasets -------------------------------------------------------------------------------------
@bp.get("/datasets")
def list_datasets():  # type: ignore[no-untyped-def]
    return jsonify({"datasets": [dataset_json(d) for d in resources.list_rows(deps.services(), "datasets",
                                                                                    owner=owner_filter(identity()))]})


@bp.get("/datasets/<dataset_id>")
def get_dataset(dataset_id: str):  # type: ignore[no-untyped-def]
    return jsonify(dataset_json(_row_or_404("datasets", dataset_id)))


def _renamed(table: str, resource_id: str):  # type: ignore[no-untyped-def]
    """PATCH ``{"name": ...}`` of a dataset or model: the name is the one thing that can change."""
    _row_or_404(table, resource_id)
    body = json_body()
    unknown = sorted(set(body) - {"name"})
    if unknown:
        raise UserError(f"only name can be changed; {quote(unknown[0])} cannot", unknown[0], 400)
    row = resources.rename(deps.services(), table, resource_id, body.get("name"))
    if row is None:
        raise UserError(f"there is no {table.rstrip('s')} with id {quote(resource_id)}", "id", 404)
    return row


@bp.patch("/datasets/<dataset_id>")
def update_dataset(dataset_id: str):  # type: ignore[no-untyped-def]
    """Rename a dataset: a JSON body ``{"name": "..."}``."""
    return jsonify(dataset_json(_renamed("datasets", dataset_id)))


@bp.delete("/datasets/<dataset_id>")
def delete_dataset(dataset_id: str):  # type: ignore[no-untyped-def]
    """Delete a dataset and its files (204); 409 naming the queued or running jobs that use it."""
    _row_or_404("datasets", dataset_id)
    deletion.delete_resource(deps.services(), "datasets", dataset_id)
    return Response(status=204)


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
        ds = resources.add_dataset(services, name=name, layout=layout, source_dir=scratch / "data", meta=report,
                                   owner=owner_of_new_rows(identity()))
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
                                   source_dir=scratch / "data", meta={**report, "demo": True},
                                   owner=owner_of_new_rows(identity()))
    return jsonify(dataset_json(ds)), 201


# -- models ---------------------------------------------------------------------------------------
@bp.get("/models")
def list_models():  # type: ignore[no-untyped-def]
    return jsonify({"models": [model_json(m) for m in resources.list_rows(deps.services(), "models",
                                                                              owner=owner_filter(identity()))]})


@bp.get("/models/<model_id>")
def get_model(model_id: str):  # type: ignore[no-untyped-def]
    return jsonify(model_json(_row_or_404("models", model_id)))


@bp.patch("/models/<model_id>")
def update_model(model_id: str):  # type: ignore[no-untyped-def]
    """Rename a model: a JSON body ``{"name": "..."}``."""
    return jsonify(model_json(_renamed("models", model_id)))


@bp.delete("/models/<model_id>")
def delete_model(model_id: str):  # type: ignore[no-untyped-def]
    """Delete a model and its files (204); 409 naming the queued or running jobs that use it."""
    _row_or_404("models", model_id)
    deletion.delete_resource(deps.services(), "models", model_id)
    return Response(status=204)


@bp.get("/models/<model_id>/download")
def download_model(model_id: str):  # type: ignore[no-untyped-def]
    """The model directory (generator weights as safetensors + meta.json) as one zip, written while it is
    sent from storage (no copy of the weights in memory)."""
    model = _row_or_404("models", model_id)
    files = [(info.key[len(model.path) + 1:], info.key) for info in deps.services().storage.list(model.path)]
    if not files:
        raise UserError("the model's files are gone from storage", "id", 404)
    return send_zip(files, f"{safe_filename(model.name, 'model')}.zip")


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
        model = resources.add_model(services, name=name, family="imported", source_dir=scratch / "model", meta=meta,
                                      owner=owner_of_new_rows(identity()))
    return jsonify(model_json(model)), 201


def _import(src: Path, dest: Path, options: dict[str, object]) -> dict[str, object]:
    """Through the kind's import (it screens a pickle before torch is imported, only when importing)."""
    from core.kinds.gan import import_generator

    return import_generator(src, dest, {k: v for k, v in options.items() if v not in (None, "")})
