"""The JSON API under ``/api/v1``.

Errors are JSON ``{"error": "...", "field": "..."}`` with a 4xx status; a rejected submission stores
nothing. Submitting answers 202 with the job and a ``Location`` header; the job then moves on its own.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Flask, Response, abort, jsonify, request, send_file
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from core.errors import UserError
from core.jobs import repository as repo
from core.jobs.submit import Upload, submit_job
from core.kinds.registry import job_kinds
from core.models import JOB_STATUSES
from web import deps
from web.openapi import openapi_spec
from web.serialize import job_json, worker_json

bp = Blueprint("api", __name__, url_prefix="/api/v1")

MAX_PAGE = 100


def error(message: str, field: str | None, status: int) -> tuple[Response, int]:
    return jsonify({"error": message, "field": field}), status


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(UserError)
    def _user_error(exc: UserError):  # type: ignore[no-untyped-def]
        return error(exc.message, exc.field, exc.status)

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(_exc: RequestEntityTooLarge):  # type: ignore[no-untyped-def]
        limit = deps.services().settings.max_upload_mb
        return error(f"the upload is larger than the {limit} MB limit", None, 413)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):  # type: ignore[no-untyped-def]
        if request.path.startswith("/api/"):
            return error(exc.description or exc.name, None, exc.code or 500)
        return exc


# -- submitting -----------------------------------------------------------------------------------
def json_object_field(name: str) -> dict[str, Any]:
    """A multipart/form field holding a JSON object (empty = ``{}``); 400 naming the field otherwise."""
    raw = request.form.get(name, "")
    try:
        value = json.loads(raw) if raw.strip() else {}
    except json.JSONDecodeError as exc:
        raise UserError(f"{name} is not valid JSON: {exc.msg}", name, 400) from None
    if not isinstance(value, dict):
        raise UserError(f"{name} must be a JSON object", name, 400)
    return value


def _read_submission() -> tuple[Any, Any, list[Upload]]:
    """``(kind, params, uploads)`` from a multipart form or a JSON body."""
    if request.mimetype == "application/json":
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise UserError("the body must be a JSON object", None, 400)
        return body.get("kind"), body.get("params") or {}, []
    if request.mimetype not in ("multipart/form-data", "application/x-www-form-urlencoded"):
        raise UserError("send multipart/form-data (with files) or application/json", None, 415)
    params = json_object_field("params")
    uploads = [Upload(role=field, filename=f.filename or field, data=f.read(), content_type=f.mimetype or "")
               for field, f in request.files.items(multi=True)]
    return request.form.get("kind"), params, uploads


@bp.post("/jobs")
def create_job():  # type: ignore[no-untyped-def]
    kind, params, uploads = _read_submission()
    job = submit_job(deps.services(), kind, params, uploads)
    deps.enqueue(job.id)
    resp = jsonify(job_json(job))
    resp.status_code = 202
    resp.headers["Location"] = f"/api/v1/jobs/{job.id}"
    return resp


# -- reading --------------------------------------------------------------------------------------
def _job_or_404(job_id: str):  # type: ignore[no-untyped-def]
    job = repo.get_job(deps.services().sessions, job_id)
    if job is None:
        raise UserError(f"there is no job with id {job_id!r}", "id", 404)
    return job


@bp.get("/jobs")
def list_jobs():  # type: ignore[no-untyped-def]
    status = request.args.get("status") or None
    kind = request.args.get("kind") or None
    if status and status not in JOB_STATUSES:
        raise UserError(f"status must be one of {', '.join(JOB_STATUSES)}", "status", 400)
    if kind and kind not in job_kinds():
        raise UserError(f"kind must be one of {', '.join(job_kinds())}", "kind", 400)
    try:
        limit = int(request.args.get("limit", 20))
    except ValueError:
        raise UserError("limit must be an integer", "limit", 400) from None
    if not 1 <= limit <= MAX_PAGE:
        raise UserError(f"limit must be between 1 and {MAX_PAGE}", "limit", 400)
    cursor = request.args.get("cursor") or None
    try:
        jobs, next_cursor = repo.list_jobs(deps.services().sessions, status=status, kind=kind, limit=limit,
                                           cursor=cursor)
    except (ValueError, UnicodeDecodeError):
        raise UserError("cursor is not valid; use the next_cursor of a previous page", "cursor", 400) from None
    return jsonify({"jobs": [job_json(j) for j in jobs], "next_cursor": next_cursor})


@bp.get("/jobs/<job_id>")
def get_job(job_id: str):  # type: ignore[no-untyped-def]
    return jsonify(job_json(_job_or_404(job_id)))


@bp.post("/jobs/<job_id>/cancel")
def cancel_job(job_id: str):  # type: ignore[no-untyped-def]
    _job_or_404(job_id)
    repo.request_cancel(deps.services().sessions, job_id)
    return jsonify(job_json(_job_or_404(job_id))), 202


def _send_stored(key: str, content_type: str, download_name: str | None = None):  # type: ignore[no-untyped-def]
    path = deps.services().storage.path(key)
    if not path.is_file():
        abort(404, "the file is gone from storage")
    resp = send_file(path, mimetype=content_type, download_name=download_name, as_attachment=False, max_age=0)
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp


@bp.get("/jobs/<job_id>/outputs/<name>")
def job_output(job_id: str, name: str):  # type: ignore[no-untyped-def]
    job = _job_or_404(job_id)
    for f in job.files:
        if f.direction == "output" and f.name == name:
            resp = _send_stored(f.path, f.content_type, f.name)
            if request.args.get("download"):
                resp.headers["Content-Disposition"] = f'attachment; filename="{f.name}"'
            return resp
    raise UserError(f"job {job_id} has no output named {name!r}", "name", 404)


@bp.get("/jobs/<job_id>/inputs/<name>")
def job_input(job_id: str, name: str):  # type: ignore[no-untyped-def]
    job = _job_or_404(job_id)
    for f in job.files:
        if f.direction == "input" and f.name == name:
            return _send_stored(f.path, f.content_type, f.name)
    raise UserError(f"job {job_id} has no input named {name!r}", "name", 404)


@bp.get("/jobs/<job_id>/preview")
def job_preview(job_id: str):  # type: ignore[no-untyped-def]
    job = _job_or_404(job_id)
    if not job.preview_path:
        raise UserError("this job has no preview yet", "preview", 404)
    return _send_stored(job.preview_path, "image/jpeg")


@bp.get("/jobs/<job_id>/metrics")
def job_metrics(job_id: str):  # type: ignore[no-untyped-def]
    job = _job_or_404(job_id)
    return jsonify({"job_id": job.id, "latest": job.metrics,
                    "series": repo.metric_series(deps.services().sessions, job.id)})


@bp.get("/jobs/<job_id>/events")
def job_events(job_id: str):  # type: ignore[no-untyped-def]
    _job_or_404(job_id)
    rows = repo.events(deps.services().sessions, job_id)
    return jsonify({"events": [{"at": e.created_at.isoformat(), "level": e.level, "message": e.message}
                               for e in rows]})


# -- discovery ------------------------------------------------------------------------------------
@bp.get("/kinds")
def list_kinds():  # type: ignore[no-untyped-def]
    return jsonify({"kinds": [
        {"name": k.name, "title": k.title, "description": k.description, "params": k.schema.json_schema(),
         "inputs": [{"role": i.role, "help": i.help, "required": i.required, "multiple": i.multiple,
                     "accept": i.accept} for i in k.inputs]}
        for k in job_kinds().values()
    ]})


@bp.get("/openapi.json")
def openapi():  # type: ignore[no-untyped-def]
    return jsonify(openapi_spec())


@bp.get("/workers")
def list_workers():  # type: ignore[no-untyped-def]
    s = deps.services()
    stale = max(3 * s.settings.heartbeat_seconds, 30.0)
    return jsonify({"workers": [worker_json(w, stale) for w in repo.list_workers(s.sessions)],
                    "jobs": repo.count_by_status(s.sessions)})
