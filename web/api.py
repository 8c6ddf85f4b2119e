"""The JSON API under ``/api/v1``.

Errors are JSON ``{"error": "...", "field": "..."}`` with a 4xx status; a rejected submission stores
nothing. Submitting answers 202 with the job and a ``Location`` header; the job then moves on its own.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import sqlalchemy.exc

from flask import Blueprint, Flask, Response, abort, current_app, jsonify, request, send_file
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from core.errors import UserError, quote
from core.jobs import repository as repo
from core.jobs.submit import Upload, submit_idempotent
from core.kinds.registry import job_kinds
from core.models import JOB_STATUSES, TERMINAL_STATUSES
from web import deps
from web.openapi import openapi_spec
from web.security import INLINE_IMAGE_TYPES, file_headers
from web.serialize import job_json, worker_json

bp = Blueprint("api", __name__, url_prefix="/api/v1")
log = logging.getLogger(__name__)
#: What a 503 for an unavailable database tells clients to wait before retrying.
RETRY_AFTER_SECONDS = 5

#: Types a stored file may be served as; anything else (say a stored "text/html") goes out as bytes.
SERVED_TYPES = frozenset({*INLINE_IMAGE_TYPES, "image/bmp", "image/tiff", "application/json",
                          "application/octet-stream", "application/zip"})

MAX_PAGE = 100


def error(message: str, field: str | None, status: int) -> tuple[Response, int]:
    return jsonify({"error": message, "field": field}), status


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(UserError)
    def _user_error(exc: UserError):  # type: ignore[no-untyped-def]
        return jsonify(exc.to_dict()), exc.status

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(exc: RequestEntityTooLarge):  # type: ignore[no-untyped-def]
        return error(too_large_message(exc), None, 413)

    @app.errorhandler(sqlalchemy.exc.OperationalError)
    @app.errorhandler(sqlalchemy.exc.InterfaceError)
    @app.errorhandler(sqlalchemy.exc.TimeoutError)
    def _database_unavailable(exc: Exception):  # type: ignore[no-untyped-def]
        """The database is down or unreachable: a 503 the client can retry, never a 500 or a hang."""
        log.warning("database unavailable for %s %s: %s", request.method, request.path, exc.__class__.__name__)
        message = "the database is unavailable right now; retry in a few seconds"
        if request.path.startswith("/api/") or request.path == "/healthz":
            resp = jsonify({"error": message, "field": None})
        else:
            resp = Response("Atelier cannot reach its database right now. This page will work again in a "
                            "few seconds.", mimetype="text/plain")
        resp.status_code = 503
        resp.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return resp

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):  # type: ignore[no-untyped-def]
        if request.path.startswith("/api/"):
            return error(exc.description or exc.name, None, exc.code or 500)
        return exc


def too_large_message(exc: RequestEntityTooLarge) -> str:
    """Which of the request limits was hit. Werkzeug raises the same exception for the body size, the
    number of form parts and the size of one text field; the frame that raised it tells them apart."""
    settings = deps.services().settings
    cfg = current_app.config
    if request.content_length is not None and request.content_length > (cfg.get("MAX_CONTENT_LENGTH") or 0):
        return (f"the request is {request.content_length / 2**20:.1f} MB; the limit is {settings.max_upload_mb} MB "
                "(ATELIER_MAX_UPLOAD_MB)")
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    raiser = tb.tb_frame.f_locals.get("self") if tb is not None else None
    max_parts = getattr(raiser, "max_parts", None)
    if max_parts is not None and getattr(raiser, "_parts_decoded", 0) > max_parts:
        return f"the form has more than {max_parts} parts (ATELIER_MAX_FORM_PARTS)"
    if cfg.get("MAX_FORM_MEMORY_SIZE"):
        return (f"a text field of the form is larger than {cfg['MAX_FORM_MEMORY_SIZE'] // 1024} KB "
                "(parameters are small; files go in file fields)")
    return f"the request is larger than the {settings.max_upload_mb} MB limit (ATELIER_MAX_UPLOAD_MB)"


# -- submitting -----------------------------------------------------------------------------------
#: Deepest nesting accepted in a JSON value from a client (parameters are flat; lists of numbers at most).
MAX_JSON_DEPTH = 20
#: Longest integer literal accepted in client JSON (far beyond any parameter, far below Python's limit).
MAX_INT_DIGITS = 40


def _refuse_int(literal: str) -> int:
    if len(literal.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"a number has {len(literal.lstrip('-'))} digits; at most {MAX_INT_DIGITS} are accepted")
    return int(literal)


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")


def _depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        deepest = max(deepest, d)
        if d > MAX_JSON_DEPTH:
            break
        children = v.values() if isinstance(v, dict) else v if isinstance(v, list) else ()
        stack.extend((c, d + 1) for c in children)
    return deepest


def parse_json_object(raw: str | bytes, name: str | None, empty_ok: bool = True) -> dict[str, Any]:
    """Client JSON that must be an object; any JSON the parser refuses (syntax, nesting, huge numbers,
    NaN) is a 400 naming ``name``, never a 500."""
    if not raw.strip():
        if empty_ok:
            return {}
        raise UserError(f"{name or 'the body'} is empty; send a JSON object", name, 400)
    what = name or "the body"
    try:
        value = json.loads(raw, parse_int=_refuse_int, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise UserError(f"{what} is not valid JSON: {exc.msg} (at character {exc.pos})", name, 400) from None
    except RecursionError:
        raise UserError(f"{what} is nested too deeply (at most {MAX_JSON_DEPTH} levels)", name, 400) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"{what} is not acceptable JSON: {quote(str(exc))[1:-1]}", name, 400) from None
    if not isinstance(value, dict):
        raise UserError(f"{what} must be a JSON object", name, 400)
    if _depth(value) > MAX_JSON_DEPTH:
        raise UserError(f"{what} is nested too deeply (at most {MAX_JSON_DEPTH} levels)", name, 400)
    return value


def json_object_field(name: str) -> dict[str, Any]:
    """A multipart/form field holding a JSON object (empty = ``{}``); 400 naming the field otherwise."""
    return parse_json_object(request.form.get(name, ""), name)


def json_body() -> dict[str, Any]:
    """The request's JSON body as an object (400 naming the problem otherwise)."""
    return parse_json_object(request.get_data(cache=True), None, empty_ok=False)


def _read_submission() -> tuple[Any, Any, str, list[Upload]]:
    """``(kind, params, priority, uploads)`` from a multipart form or a JSON body."""
    if request.mimetype == "application/json":
        body = json_body()
        params = body.get("params") or {}
        return body.get("kind"), params, body.get("priority") or "normal", []
    if request.mimetype not in ("multipart/form-data", "application/x-www-form-urlencoded"):
        raise UserError("send multipart/form-data (with files) or application/json", None, 415)
    params = json_object_field("params")
    uploads = [Upload(role=field, filename=f.filename or field, data=f.read(), content_type=f.mimetype or "")
               for field, f in request.files.items(multi=True)]
    return request.form.get("kind"), params, request.form.get("priority") or "normal", uploads


@bp.post("/jobs")
def create_job():  # type: ignore[no-untyped-def]
    """Submit a job (202). With an ``Idempotency-Key`` header, repeating the same request returns the job
    the first one created (200, ``Idempotent-Replayed: true``); the same key for another request is 409."""
    kind, params, priority, uploads = _read_submission()
    key = request.headers.get("Idempotency-Key")
    job, created = submit_idempotent(deps.services(), key, kind, params, uploads, priority=priority)
    if created and deps.enqueue(job.id, job.priority):
        job = _job_or_404(job.id)  # as recorded, with its dispatch
    resp = jsonify(job_json(job))
    resp.status_code = 202 if created else 200
    resp.headers["Location"] = f"/api/v1/jobs/{job.id}"
    if not created:
        resp.headers["Idempotent-Replayed"] = "true"
    return resp


# -- reading --------------------------------------------------------------------------------------
def _job_or_404(job_id: str):  # type: ignore[no-untyped-def]
    job = repo.get_job(deps.services().sessions, job_id)
    if job is None:
        raise UserError(f"there is no job with id {quote(job_id)}", "id", 404)
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


@bp.post("/jobs/<job_id>/retry")
def retry_job(job_id: str):  # type: ignore[no-untyped-def]
    """Run a failed or canceled job again (202): back in the queue with its attempts starting over; a
    training job continues from its newest checkpoint."""
    job = _job_or_404(job_id)
    status = repo.retry(deps.services().sessions, job_id)
    if status not in ("failed", "canceled"):
        raise UserError(f"only a failed or canceled job can be retried; this one is {status}", "id", 409)
    deps.enqueue(job_id, job.priority)
    return jsonify(job_json(_job_or_404(job_id))), 202


@bp.post("/jobs/<job_id>/cancel")
def cancel_job(job_id: str):  # type: ignore[no-untyped-def]
    job = _job_or_404(job_id)
    if job.status in TERMINAL_STATUSES:
        raise UserError(f"the job has already {'been canceled' if job.status == 'canceled' else job.status}; "
                        "there is nothing to cancel", "id", 409)
    status = repo.request_cancel(deps.services().sessions, job_id)
    if status in TERMINAL_STATUSES and status != "canceled":  # it ended between the read and the update
        raise UserError(f"the job has already {status}; there is nothing to cancel", "id", 409)
    return jsonify(job_json(_job_or_404(job_id))), 202


def _send_stored(key: str, content_type: str, name: str, download: bool = False):  # type: ignore[no-untyped-def]
    """A stored file, typed by what it decoded to at upload (never the client's header): images the
    pages show are inline, everything else is an attachment; both under a sandboxing CSP."""
    path = deps.services().storage.path(key)
    if not path.is_file():
        abort(404, "the file is gone from storage")
    mimetype = content_type if content_type in SERVED_TYPES else "application/octet-stream"
    resp = send_file(path, mimetype=mimetype, as_attachment=False, max_age=0)
    return file_headers(resp, mimetype, name, download)


@bp.get("/jobs/<job_id>/outputs/<name>")
def job_output(job_id: str, name: str):  # type: ignore[no-untyped-def]
    job = _job_or_404(job_id)
    for f in job.files:
        if f.direction == "output" and f.name == name:
            return _send_stored(f.path, f.content_type, f.name, download=bool(request.args.get("download")))
    raise UserError(f"job {job_id} has no output named {quote(name)}", "name", 404)


@bp.get("/jobs/<job_id>/inputs/<name>")
def job_input(job_id: str, name: str):  # type: ignore[no-untyped-def]
    job = _job_or_404(job_id)
    for f in job.files:
        if f.direction == "input" and f.name == name:
            return _send_stored(f.path, f.content_type, f.name, download=bool(request.args.get("download")))
    raise UserError(f"job {job_id} has no input named {quote(name)}", "name", 404)


@bp.get("/jobs/<job_id>/preview")
def job_preview(job_id: str):  # type: ignore[no-untyped-def]
    job = _job_or_404(job_id)
    if not job.preview_path:
        raise UserError("this job has no preview yet", "preview", 404)
    return _send_stored(job.preview_path, "image/jpeg", "preview.jpg")


@bp.get("/jobs/<job_id>/metrics")
def job_metrics(job_id: str):  # type: ignore[no-untyped-def]
    job = _job_or_404(job_id)
    return jsonify({"job_id": job.id, "latest": job.metrics,
                    "series": repo.metric_series(deps.services().sessions, job.id)})


@bp.get("/jobs/<job_id>/events")
def job_events(job_id: str):  # type: ignore[no-untyped-def]
    from web.serialize import iso  # times go through the one serialiser (UTC, ``Z``), as in job_json

    _job_or_404(job_id)
    rows = repo.events(deps.services().sessions, job_id)
    return jsonify({"events": [{"at": iso(e.created_at), "level": e.level, "message": e.message} for e in rows]})


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
    """This document: generated from the URL map, the response models and the kinds' schemas."""
    return jsonify(openapi_spec(current_app))


@bp.get("/workers")
def list_workers():  # type: ignore[no-untyped-def]
    s = deps.services()
    stale = max(3 * s.settings.heartbeat_seconds, 30.0)
    return jsonify({"workers": [worker_json(w, stale) for w in repo.list_workers(s.sessions)],
                    "jobs": repo.count_by_status(s.sessions)})
