"""Turn a request (kind, raw params, uploads) into a stored, queued job — or a :class:`UserError`
that leaves nothing behind.

Shared by the JSON API and the web form, so both check exactly the same things: the kind, every
parameter against the kind's schema, each upload slot and the number of files in it, each image (its
header and completeness, without decoding pixels; its type is what it decodes to), the job's total
pixels, references to datasets/models, and the kind's own cross-field rules.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError

from core import resources
from core.auth import Identity, can_see, owner_of_new_rows
from core.errors import UserError, quote
from core.images import FORMAT_TYPES, check_complete, oriented_size, probe_image
from core.jobs import repository as repo
from core.jobs.runner import safe_filename
from core.kinds.base import JobKind, UploadInfo
from core.kinds.registry import get_kind, job_kinds
from core.models import PRIORITIES, Job, JobFile, new_id, utcnow
from core.services import Services
from core.webhooks import validate_webhook


@dataclass(frozen=True)
class Upload:
    role: str  # the multipart field name
    filename: str
    data: bytes
    content_type: str = ""  # what the client claimed; never trusted (the type comes from decoding)


def resolve_kind(name: Any) -> JobKind:
    if not name:
        raise UserError(f"kind is required; one of {', '.join(job_kinds())}", "kind", 422)
    kind = get_kind(str(name))
    if kind is None:
        raise UserError(f"unknown kind {quote(name)}; one of {', '.join(job_kinds())}", "kind", 422)
    return kind


def validate_uploads(services: Services, kind: JobKind, uploads: Sequence[Upload]) -> list[UploadInfo]:
    """Check every upload in the request thread without decoding pixels: its slot, the count per field,
    its header (format, size, pixel limit), that the file is complete, and the job's total pixels. Each
    image is typed by what its header says it is. Decoding happens in the worker, at the size the job
    needs (:meth:`core.kinds.context.JobContext.load_image`)."""
    settings = services.settings
    specs = {spec.role: spec for spec in kind.inputs}
    infos: list[UploadInfo] = []
    seen: dict[str, int] = {}
    total_pixels = 0
    for up in uploads:
        spec = specs.get(up.role)
        if spec is None:
            raise UserError(f"unexpected file field {quote(up.role)}; {kind.name} takes {', '.join(specs) or 'no files'}",
                            up.role, 422)
        seen[up.role] = seen.get(up.role, 0) + 1
        if seen[up.role] > 1 and not spec.multiple:
            raise UserError(f"{up.role}: only one file is allowed", up.role, 422)
        if seen[up.role] > settings.max_files_per_field:
            raise UserError(f"{up.role}: more than {settings.max_files_per_field} files in one field "
                            "(ATELIER_MAX_FILES_PER_FIELD)", up.role, 413)
        if not up.data:
            raise UserError(f"{up.role}: the file is empty", up.role, 422)
        if spec.accept == "image":
            fmt, _, _ = probe_image(up.data, up.role, settings.max_image_pixels)
            check_complete(up.data, fmt, up.role)
            w, h = oriented_size(up.data) or probe_image(up.data, up.role, settings.max_image_pixels)[1:]
            total_pixels += w * h
            if total_pixels > settings.max_job_pixels:
                raise UserError(f"{up.role}: the job's images hold more than {settings.max_job_pixels:,} pixels in "
                                "all (ATELIER_MAX_JOB_PIXELS); send fewer or smaller images", up.role, 413)
            infos.append(UploadInfo(up.role, up.filename, FORMAT_TYPES[fmt], len(up.data), w, h))
        else:
            infos.append(UploadInfo(up.role, up.filename, "application/octet-stream", len(up.data)))
    for spec in kind.inputs:
        if spec.required and not seen.get(spec.role):
            raise UserError(f"{spec.role}: a file is required ({spec.help})", spec.role, 422)
    return infos


#: What an Idempotency-Key may look like (what Stripe and the IETF draft allow, bounded).
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
#: Longest job name (the column is 255 wide).
MAX_JOB_NAME = 255


def request_hash(kind_name: Any, raw_params: Any, priority: str, uploads: Sequence[Upload],
                 name: str | None = None, webhook: Any = None) -> str:
    """What makes two submissions "the same request" for an Idempotency-Key: kind, parameters as sent,
    priority, the job's name (only when given, so older keys keep their hash), and every file's field,
    name and content."""
    body = {"kind": kind_name, "params": raw_params, "priority": priority,
            "files": [[u.role, u.filename, hashlib.sha256(u.data).hexdigest()] for u in uploads]}
    if name:
        body["name"] = name
    if webhook:  # (url, events) as sent; only when given, like the name
        body["webhook"] = webhook
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def submit_idempotent(services: Services, idempotency_key: str | None, kind_name: Any,
                      raw_params: Mapping[str, Any] | None, uploads: Sequence[Upload], *,
                      priority: str = "normal", form: bool = False, name: str | None = None,
                      webhook: Any = None, webhook_events: Any = None,
                      identity: Identity | None = None, dispatching: bool = False) -> tuple[Job, bool]:
    """:func:`submit_job` under an ``Idempotency-Key``: the same key with the same request returns the job
    it created the first time (``created`` False) and stores nothing; the same key with a different
    request is a 409. Without a key, every call creates a job."""
    if idempotency_key is None:
        return submit_job(services, kind_name, raw_params, uploads, form=form, priority=priority, name=name,
                          webhook=webhook, webhook_events=webhook_events, identity=identity,
                          dispatching=dispatching), True
    if not _IDEMPOTENCY_KEY.match(idempotency_key):
        raise UserError("Idempotency-Key must be 1 to 255 printable ASCII characters without spaces",
                        "Idempotency-Key", 400)
    digest = request_hash(kind_name, raw_params, priority, uploads, name,
                          [webhook, webhook_events] if webhook or webhook_events else None)
    for _ in range(2):  # the second round: another request with the same key won the race to insert
        existing = repo.job_by_idempotency_key(services.sessions, idempotency_key)
        if existing is not None:
            # Keys are unique across owners (one column): another owner's key is "used", never its job.
            if existing.request_hash != digest or existing.owner != owner_of_new_rows(identity):
                raise UserError("this Idempotency-Key was already used for a different request; use a new key "
                                "for a new job", "Idempotency-Key", 409)
            return existing, False
        try:
            return submit_job(services, kind_name, raw_params, uploads, form=form, priority=priority,
                              idempotency=(idempotency_key, digest), name=name, webhook=webhook,
                              webhook_events=webhook_events, identity=identity, dispatching=dispatching), True
        except IntegrityError:
            continue
    raise UserError("this Idempotency-Key is being used by another request right now; retry", "Idempotency-Key",
                    409)


def submit_job(services: Services, kind_name: Any, raw_params: Mapping[str, Any] | None,
               uploads: Sequence[Upload], *, form: bool = False, priority: str = "normal",
               idempotency: tuple[str, str] | None = None, name: str | None = None,
               webhook: Any = None, webhook_events: Any = None, identity: Identity | None = None,
               dispatching: bool = False) -> Job:
    """Validate everything, store the inputs and insert the job as ``queued``. The caller enqueues it.
    ``dispatching``: the caller sends the job's message right after this returns, so the row is inserted
    with that message already counted (``dispatched_at``, ``dispatch_count`` 1) instead of a second write
    after the send; a failed send undoes it (:func:`worker.enqueue.send_submitted`), and a process that
    dies in between leaves a job the dispatch sweep finds missing from the broker and sends.
    ``idempotency``: the client's key and the request's hash, stored with the job (unique key).
    ``webhook``/``webhook_events``: where to POST the job's events (:mod:`core.webhooks`).
    ``identity``: who submits (:mod:`core.auth`; None with auth off): the job's owner, and a dataset or model
    it names must be one this identity can see (another owner's answers like a missing one)."""
    if priority not in PRIORITIES:
        raise UserError(f"priority must be one of {', '.join(PRIORITIES)}, got {quote(priority)}", "priority", 422)
    job_name = clean_job_name(name)  # ``name`` is reused below for references and file names
    hook_url, hook_events = validate_webhook(webhook, webhook_events)
    kind = resolve_kind(kind_name)
    if raw_params is not None and not isinstance(raw_params, Mapping):
        raise UserError("params must be a JSON object", "params", 422)
    params = kind.schema.validate_form(raw_params or {}) if form else kind.schema.validate(raw_params)
    referenced: dict[str, Any] = {}
    for name, table in kind.references.items():
        value = params.get(name)
        if value:
            row = resources.get(services, table + "s", str(value))
            if row is None or not can_see(identity, row.owner):
                raise UserError(f"{name}: there is no {table} with id {quote(value)}", name, 422)
            referenced[name] = row
    if kind.check_references is not None:
        kind.check_references(params, referenced)
    infos = validate_uploads(services, kind, uploads)
    if kind.check is not None:
        kind.check(params, infos)

    job_id = new_id()
    files: list[JobFile] = []
    used: set[str] = set()
    try:
        for i, (up, info) in enumerate(zip(uploads, infos)):
            name = _unique(f"{up.role}-{i}-{safe_filename(up.filename, up.role)}", used)
            key = f"jobs/{job_id}/inputs/{name}"
            obj = services.storage.put_bytes(key, up.data)
            # The type is what the bytes decoded to (info), never the client's Content-Type.
            files.append(JobFile(direction="input", role=up.role, name=name, path=key, content_type=info.content_type,
                                 size=obj.size, sha256=hashlib.sha256(up.data).hexdigest()))
        job = Job(id=job_id, kind=kind.name, status="queued", params=params, total_steps=kind.total_steps(params),
                  max_attempts=services.settings.max_attempts, priority=priority, name=job_name,
                  owner=owner_of_new_rows(identity),
                  webhook=hook_url, webhook_events=hook_events,
                  idempotency_key=idempotency[0] if idempotency else None,
                  request_hash=idempotency[1] if idempotency else None,
                  notices=kind.notices(services.settings) if kind.notices else [],
                  dispatched_at=utcnow() if dispatching else None, dispatch_count=1 if dispatching else 0)
        return repo.create_job(services.sessions, job, files)
    except BaseException:
        services.storage.delete_prefix(f"jobs/{job_id}")
        raise


def clean_job_name(name: Any) -> str | None:
    """A job's name as stored: trimmed, at most :data:`MAX_JOB_NAME` characters, empty = none. Names are
    labels for people (the list searches them), so control characters are refused rather than kept."""
    if name is None:
        return None
    if not isinstance(name, str):
        raise UserError("name must be a string", "name", 422)
    name = " ".join(name.split())
    if len(name) > MAX_JOB_NAME:
        raise UserError(f"name is {len(name)} characters long; at most {MAX_JOB_NAME} are allowed", "name", 422)
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise UserError("name must not contain control characters", "name", 422)
    return name or None


def _unique(name: str, used: set[str]) -> str:
    candidate, n = name, 1
    while candidate in used:
        n += 1
        candidate = f"{n}-{name}"
    used.add(candidate)
    return candidate


# ---------------------------------------------------------------------------------------------------
# Run again: the same kind, parameters and inputs, read from storage (nothing is uploaded again)
# ---------------------------------------------------------------------------------------------------
def original_filename(stored_name: str, role: str) -> str:
    """The file name the client sent, from a stored input's name (``content-0-cat.png`` -> ``cat.png``)."""
    prefix = re.match(rf"^(?:\d+-)?{re.escape(role)}-\d+-(?P<name>.+)$", stored_name)
    return prefix.group("name") if prefix else stored_name


def stored_inputs(services: Services, job: Job, keep: Sequence[str] | None = None) -> list[Upload]:
    """A job's inputs as uploads, read through the storage interface (``keep``: only these stored names).
    An input removed by retention or deletion is a :class:`UserError` naming it."""
    out = []
    for f in job.files:
        if f.direction != "input" or (keep is not None and f.name not in keep):
            continue
        try:
            data = services.storage.read_bytes(f.path)
        except (FileNotFoundError, KeyError):
            raise UserError(f"{f.role}: the input {f.name} of job {job.id} is no longer stored; choose the file "
                            "again", f.role, 409) from None
        out.append(Upload(role=f.role, filename=original_filename(f.name, f.role), data=data,
                          content_type=f.content_type))
    return out


def rerun(services: Services, job_id: str, params_override: Mapping[str, Any] | None = None, *,
          identity: Identity | None = None, name: str | None = None, dispatching: bool = False) -> Job:
    """Submit a finished, failed or canceled job again: its kind, its parameters (``params_override``
    replaces some), its priority, webhook and name, and its inputs copied from storage. The new job is
    validated exactly as a new submission (the limits may have changed since). 404 for a job this
    identity cannot see, 409 for one still queued or running."""
    job = repo.get_job(services.sessions, job_id)
    if job is None or not can_see(identity, job.owner) or job.deleted_at is not None:
        raise UserError(f"there is no job with id {quote(job_id)}", "id", 404)
    if job.status not in ("succeeded", "failed", "canceled"):
        raise UserError(f"only a finished, failed or canceled job can run again; this one is {job.status}", "id", 409)
    if params_override is not None and not isinstance(params_override, Mapping):
        raise UserError("params must be a JSON object", "params", 422)
    params = {**(job.params or {}), **(params_override or {})}
    uploads = stored_inputs(services, job)
    return submit_job(services, job.kind, params, uploads, priority=job.priority,
                      name=job.name if name is None else name, webhook=job.webhook,
                      webhook_events=job.webhook_events if job.webhook else None, identity=identity,
                      dispatching=dispatching)


# ---------------------------------------------------------------------------------------------------
# Every mistake of a form at once
# ---------------------------------------------------------------------------------------------------
def upload_errors(services: Services, kind: JobKind, uploads: Sequence[Upload]) -> list[dict[str, str]]:
    """The mistakes in ``uploads`` (each file on its own, then the missing slots), as ``{field, error}``."""
    errors: list[dict[str, str]] = []
    for up in uploads:
        try:
            validate_uploads(services, kind, [up])
        except UserError as exc:
            if exc.field == up.role and not exc.message.startswith(f"{up.role}: a file is required"):
                errors.append({"field": up.role, "error": exc.message})
    roles = {up.role for up in uploads}
    for spec in kind.inputs:
        if spec.required and spec.role not in roles:
            errors.append({"field": spec.role, "error": f"{spec.role}: a file is required ({spec.help})"})
    if not errors:
        try:
            validate_uploads(services, kind, uploads)  # the limits over all files together
        except UserError as exc:
            errors.append({"field": exc.field or "", "error": exc.message})
    return errors


def valid_uploads(services: Services, kind: JobKind, uploads: Sequence[Upload]) -> list[Upload]:
    """The uploads that pass on their own (what a form keeps across an error)."""
    out = []
    for up in uploads:
        try:
            validate_uploads(services, kind, [up])
        except UserError as exc:
            if exc.field == up.role and not exc.message.startswith(f"{up.role}: a file is required"):
                continue
        out.append(up)
    return out


def all_errors(services: Services, kind: JobKind, first: UserError, form: Mapping[str, Any],
               uploads: Sequence[Upload]) -> UserError:
    """``first`` (what :func:`submit_job` raised) with the mistakes it did not get to: a parameter error
    stops it before the files are checked, and a file error comes after valid parameters only."""
    errors = list(first.errors)
    seen = {e.get("field") for e in errors}
    try:
        kind.schema.validate_form(form)
    except UserError as exc:
        errors += [e for e in exc.errors if e.get("field") not in seen]
    seen = {e.get("field") for e in errors}
    errors += [e for e in upload_errors(services, kind, uploads) if e.get("field") not in seen]
    return UserError(first.message, first.field, first.status, errors=errors)
