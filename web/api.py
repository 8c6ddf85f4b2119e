"""The JSON API under ``/api/v1``.

Errors are JSON ``{"error": "...", "field": "..."}`` with a 4xx status; a rejected submission stores
nothing. Submitting answers 202 with the job and a ``Location`` header; the job then moves on its own.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import sqlalchemy.exc

from flask import Blueprint, Flask, Response, current_app, jsonify, render_template, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from core import deletion
from core.auth import can_see, owner_filter
from core.errors import UserError, quote
from core.jobs import repository as repo
from core.jobs.runner import safe_filename
from core.jobs.submit import Upload, clean_job_name, rerun, resolve_kind, submit_idempotent
from core.kinds.registry import job_kinds
from core.models import JOB_STATUSES, TERMINAL_STATUSES
from web import deps
from web.auth import identity, is_admin
from web.downloads import send_stored
from web.openapi import openapi_spec
from web.security import INLINE_IMAGE_TYPES, file_headers
from web.serialize import fixed_json_prefix, iso, job_json, job_json_bytes, worker_json
from web.stream import waited
from web.zipstream import zip_stream

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
        if exc.code in (404, 405):  # a page a person asked for: the site's own page, not Flask's bare one
            what = ("There is no page at this address." if exc.code == 404
                    else f"This page does not answer {request.method} requests.")
            resp = Response(render_template("not_found.html", what=what,
                                            title="Not found" if exc.code == 404 else "Not allowed"),
                            status=exc.code, mimetype="text/html")
            if exc.code == 405:
                resp.headers["Allow"] = ", ".join(exc.valid_methods or ())  # type: ignore[attr-defined]
            return resp
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


def _submitted_name() -> Any:
    """The job's optional ``name``: a submit-level field next to ``priority`` (a form field, or a key of
    the JSON body); it labels the job and is not a parameter of its kind."""
    if request.mimetype == "application/json":
        return json_body().get("name")
    return request.form.get("name")


def _submitted_webhook() -> tuple[Any, Any]:
    """``(webhook, webhook_events)``: submit-level fields like ``priority`` (form fields, or keys of the
    JSON body), validated by :func:`core.webhooks.validate_webhook`."""
    if request.mimetype == "application/json":
        body = json_body()
        return body.get("webhook"), body.get("webhook_events")
    return request.form.get("webhook"), request.form.get("webhook_events")


@bp.post("/jobs")
def create_job():  # type: ignore[no-untyped-def]
    """Submit a job (202). With an ``Idempotency-Key`` header, repeating the same request returns the job
    the first one created (200, ``Idempotent-Replayed: true``); the same key for another request is 409."""
    kind, params, priority, uploads = _read_submission()
    key = request.headers.get("Idempotency-Key")
    webhook, webhook_events = _submitted_webhook()
    job, created = submit_idempotent(deps.services(), key, kind, params, uploads, priority=priority,
                                     name=_submitted_name(), webhook=webhook, webhook_events=webhook_events,
                                     identity=identity(), dispatching=True)
    if created:
        deps.send_submitted_job(job)  # the row already counts the message: nothing to read back
    job, applied = waited(job, _job_or_404)  # Prefer: wait=N
    resp = Response(job_json_bytes(fixed_json_prefix(job), job), mimetype="application/json")
    if applied:
        resp.headers["Preference-Applied"] = applied
    resp.status_code = 202 if created else 200
    resp.headers["Location"] = f"/api/v1/jobs/{job.id}"
    if not created:
        resp.headers["Idempotent-Replayed"] = "true"
    return resp


# -- reading --------------------------------------------------------------------------------------
def _job_or_404(job_id: str, *, deleted_ok: bool = False):  # type: ignore[no-untyped-def]
    """The job, if the request's identity may see it (another owner's job is a 404, like a missing one);
    a deleted job is a 410 to its owner, saying when (``deleted_ok``: return the tombstone instead)."""
    return _visible(job_id, repo.get_job(deps.services().sessions, job_id), deleted_ok)


def _visible(job_id: str, job: Any, deleted_ok: bool = False) -> Any:
    if job is None or not can_see(identity(), job.owner):
        raise UserError(f"there is no job with id {quote(job_id)}", "id", 404)
    if job.deleted_at is not None and not deleted_ok:
        raise UserError(f"job {job_id} was deleted at {iso(job.deleted_at)}; its files are gone", "id", 410)
    return job


def _load_with_view(job_id: str) -> tuple[Any, bytes]:
    """What the job cache keeps: the job and the part of its JSON that only its row decides, encoded."""
    job = repo.get_job(deps.services().sessions, job_id)
    return job, fixed_json_prefix(job) if job is not None else b""


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
    search = search_text(request.args.get("q"))
    try:
        jobs, next_cursor = repo.list_jobs(deps.services().sessions, status=status, kind=kind, limit=limit,
                                           cursor=cursor, search=search, search_kinds=kinds_titled(search),
                                           owner=owner_filter(identity()))
    except (ValueError, UnicodeDecodeError):
        raise UserError("cursor is not valid; use the next_cursor of a previous page", "cursor", 400) from None
    return jsonify({"jobs": [job_json(j) for j in jobs], "next_cursor": next_cursor})


#: Longest search text accepted (names are at most 255 characters).
MAX_SEARCH = 255


def search_text(raw: str | None) -> str | None:
    """The list's ``q``: trimmed; 400 naming ``q`` when longer than any name could be."""
    text = (raw or "").strip()
    if len(text) > MAX_SEARCH:
        raise UserError(f"q must be at most {MAX_SEARCH} characters", "q", 400)
    if any(ord(c) < 32 or ord(c) == 127 for c in text):  # names have none; PostgreSQL refuses NUL outright
        raise UserError("q must not contain control characters", "q", 400)
    return text or None


def kinds_titled(search: str | None) -> list[str]:
    """Kinds whose title contains the search text ("style" finds style_transfer jobs by their title)."""
    if not search:
        return []
    needle = search.lower()
    return [k.name for k in job_kinds().values() if needle in k.title.lower()]


@bp.get("/jobs/<job_id>")
def get_job(job_id: str):  # type: ignore[no-untyped-def]
    """One job. With ``Prefer: wait=N`` (RFC 7240; N at most 60), the answer waits up to N seconds for the
    job to end, then gives the job as it is (``Preference-Applied: wait=N``)."""
    cached, fixed = deps.job_cache().get(job_id, _load_with_view)  # unchanged since read: no query
    job, applied = waited(_visible(job_id, cached), _job_or_404)
    if job is not cached:  # read again after a wait
        fixed = fixed_json_prefix(job)
    resp = Response(job_json_bytes(fixed, job), mimetype="application/json")
    if applied:
        resp.headers["Preference-Applied"] = applied
    return resp


@bp.patch("/jobs/<job_id>")
def update_job(job_id: str):  # type: ignore[no-untyped-def]
    """Rename a job: a JSON body ``{"name": "..."}`` (an empty string or null clears the name)."""
    _job_or_404(job_id)
    body = json_body()
    unknown = sorted(set(body) - {"name"})
    if unknown:
        raise UserError(f"only name can be changed; {quote(unknown[0])} cannot", unknown[0], 400)
    if "name" not in body:
        raise UserError("send {\"name\": ...} to rename the job", "name", 400)
    if not repo.rename_job(deps.services().sessions, job_id, clean_job_name(body["name"])):
        raise UserError(f"there is no job with id {quote(job_id)}", "id", 404)
    return jsonify(job_json(_job_or_404(job_id)))


@bp.delete("/jobs/<job_id>")
def delete_job(job_id: str):  # type: ignore[no-untyped-def]
    """Delete a finished job (204): its inputs, outputs, previews and checkpoints are removed and its row
    stays as a tombstone (a GET then answers 410 with the time). A queued or running job is a 409: cancel it
    first."""
    _job_or_404(job_id)
    deletion.delete_job(deps.services(), job_id)
    return Response(status=204)


@bp.post("/jobs/<job_id>/retry")
def retry_job(job_id: str):  # type: ignore[no-untyped-def]
    """Run a failed or canceled job again (202): back in the queue with its attempts starting over; a
    training job continues from its newest checkpoint."""
    job = _job_or_404(job_id)
    status = repo.retry(deps.services().sessions, job_id)
    if status == repo.FILES_REMOVED:
        raise UserError("this job's files were removed by retention, so it cannot run again; submit a new job",
                        "id", 409)
    if status not in ("failed", "canceled"):
        raise UserError(f"only a failed or canceled job can be retried; this one is {status}", "id", 409)
    deps.enqueue(job_id, job.priority)
    return jsonify(job_json(_job_or_404(job_id))), 202


@bp.post("/jobs/<job_id>/rerun")
def rerun_job(job_id: str):  # type: ignore[no-untyped-def]
    """Run a finished, failed or canceled job again as a new job (202): the same kind, parameters and
    inputs (copied from storage, nothing to upload); a JSON body's ``params`` replace some parameters."""
    body = json_body() if request.content_length else {}
    override = body.get("params")
    if override is not None and not isinstance(override, dict):
        raise UserError("params must be a JSON object", "params", 422)
    unknown = sorted(set(body) - {"params", "name"})
    if unknown:
        raise UserError(f"unknown field {quote(unknown[0])}; a rerun takes params and name", unknown[0], 400)
    job = rerun(deps.services(), job_id, override, identity=identity(), name=body.get("name"), dispatching=True)
    deps.send_submitted_job(job)
    resp = jsonify(job_json(job))
    resp.status_code = 202
    resp.headers["Location"] = f"/api/v1/jobs/{job.id}"
    return resp


@bp.post("/estimate")
def estimate_job():  # type: ignore[no-untyped-def]
    """How long a job would take with these parameters, before submitting it: the kind's cost model
    and the speed the workers measured on their device (:mod:`core.estimates`)."""
    from core.estimates import estimate

    body = json_body()
    kind = resolve_kind(body.get("kind"))
    raw = body.get("params") or {}
    if not isinstance(raw, dict):
        raise UserError("params must be a JSON object", "params", 422)
    form = body.get("form") is True  # the web form sends strings: empty means "the default"
    params = kind.schema.validate_form(raw) if form else kind.schema.validate(raw)
    return jsonify(estimate(deps.services().sessions, kind.name, params).to_dict())


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
    pages show are inline, everything else is an attachment; both under a sandboxing CSP. Streamed from
    storage, or a redirect to a presigned URL (see :mod:`web.downloads`)."""
    mimetype = content_type if content_type in SERVED_TYPES else "application/octet-stream"
    return send_stored(key, mimetype, name, download)


@bp.get("/jobs/<job_id>/outputs/<name>")
def job_output(job_id: str, name: str):  # type: ignore[no-untyped-def]
    job = _job_or_404(job_id)
    for f in job.files:
        if f.direction == "output" and f.name == name:
            return _send_stored(f.path, f.content_type, f.name, download=bool(request.args.get("download")))
    raise UserError(f"job {job_id} has no output named {quote(name)}", "name", 404)


@bp.get("/jobs/<job_id>/outputs.zip")
def job_outputs_zip(job_id: str):  # type: ignore[no-untyped-def]
    """Every output of the job in one zip, streamed as it is written (no copy of the outputs in memory)."""
    job = _job_or_404(job_id)
    storage = deps.services().storage
    files = [(f.name, f.path) for f in job.files if f.direction == "output"]
    if not files:
        raise UserError("this job has no outputs yet", "outputs", 404)
    resp = Response(zip_stream(storage, files), mimetype="application/zip")
    return file_headers(resp, "application/zip", f"{safe_filename(job.name or '', 'job')}-{job.id[:8]}.zip", True)


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
    _job_or_404(job_id)
    rows = repo.events(deps.services().sessions, job_id)
    return jsonify({"events": [{"at": iso(e.created_at), "level": e.level, "message": e.message} for e in rows]})


@bp.get("/jobs/<job_id>/webhooks")
def job_webhooks(job_id: str):  # type: ignore[no-untyped-def]
    """A job's webhook deliveries, newest first: event, status (pending, delivered, failed), attempts, the
    receiver's last response code and error."""
    from core import webhooks

    job = _job_or_404(job_id)
    rows = webhooks.deliveries(deps.services().sessions, job.id)
    return jsonify({"job_id": job.id, "webhook": job.webhook, "webhook_events": job.webhook_events or [],
                    "deliveries": [webhooks.delivery_json(d) for d in rows]})


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
    """Workers (hostnames, pids, current jobs) and job counts: admins only when auth is on (404 otherwise)."""
    if not is_admin():
        raise UserError("there is no such resource", None, 404)
    s = deps.services()
    stale = max(3 * s.settings.heartbeat_seconds, 30.0)
    return jsonify({"workers": [worker_json(w, stale) for w in repo.list_workers(s.sessions)],
                    "jobs": repo.count_by_status(s.sessions)})
