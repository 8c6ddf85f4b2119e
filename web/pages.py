"""Pages for people: the job forms, a job's live page, the job list, workers, models and datasets.

Every form is generated from the job kind's schema and input slots (:mod:`core.schema`,
:class:`core.kinds.base.InputSpec`), so a new kind or parameter needs no page code. Submitting goes
through :func:`core.jobs.submit.submit_job` exactly like the JSON API, so the form and the API accept and
reject the same things. The pages read rows directly for their first render; the browser then keeps
them current by polling the JSON API (``web/static/*.js``, no build step, nothing from the internet).
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, abort, current_app, redirect, render_template, request, url_for
from werkzeug.exceptions import RequestEntityTooLarge

from core import resources
from core.errors import UserError, quote
from core.images import decode_image, thumbnail_jpeg
from core.jobs import repository as repo
from core.jobs.submit import Upload, submit_job
from core.kinds.base import InputSpec, JobKind
from core.kinds.gan import DEMO_PARAMS, IMPORT_SCHEMA
from core.kinds.registry import get_kind, job_kinds
from core.models import JOB_STATUSES, TERMINAL_STATUSES, Job, utcnow
from core.schema import ParamView, Schema
from web import deps
from web.serialize import dataset_json, job_json, model_json, worker_json

bp = Blueprint("pages", __name__)

HOME_KIND = "style_transfer"
JOBS_PER_PAGE = 20
MAX_JOBS_PER_PAGE = 100
TRUTHY = ("1", "true", "yes", "on")

#: Input slots that may be filled with a bundled example instead of an upload:
#: role -> (example sub-folder, function listing the allowed file names). The listing is the whitelist.
EXAMPLE_INPUTS: dict[str, tuple[str, Callable[[], list[str]]]] = {"style": ("styles", deps.example_styles)}

#: Friendlier labels for well-known upload slots; any other slot is titled from its role name.
ROLE_TITLES = {"content": "Content photo", "style": "Style painting", "init": "Initial image"}

# -- template helpers -----------------------------------------------------------------------------
@bp.app_template_filter("ago")
def ago(when: dt.datetime | None, now: dt.datetime | None = None) -> str:
    """'3 min ago': ages are what people scan a job list for; the exact time goes in a tooltip."""
    when = repo.as_utc(when)
    if when is None:
        return ""
    secs = max(0.0, ((now or utcnow()) - when).total_seconds())
    if secs < 5:
        return "just now"
    if secs < 60:
        return f"{int(secs)} s ago"
    if secs < 3600:
        return f"{int(secs // 60)} min ago"
    if secs < 86400:
        return f"{int(secs // 3600)} h ago"
    days = int(secs // 86400)
    return f"{days} day{'s' if days != 1 else ''} ago"


@bp.app_template_filter("duration")
def duration(seconds: float | None) -> str:
    """'1 min 20 s', for how long a job ran."""
    if seconds is None:
        return ""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {(s % 3600) // 60} min"


@bp.app_template_filter("isotime")
def isotime(when: dt.datetime | None) -> str:
    when = repo.as_utc(when)
    return when.strftime("%Y-%m-%d %H:%M:%S UTC") if when else ""


@bp.app_template_filter("sentence")
def sentence(text: str) -> str:
    """Help texts are written as phrases; the form appends more sentences after them."""
    text = (text or "").strip()
    if text and text[-1] not in ".!?":
        text += "."
    return text[:1].upper() + text[1:]


@bp.app_template_filter("example_title")
def example_title(filename: str) -> str:
    """'starry_night.jpg' -> 'Starry night'."""
    stem = filename.rsplit(".", 1)[0].replace("_", " ").replace("-", " ")
    return stem[:1].upper() + stem[1:]


@bp.app_template_filter("progress_text")
def progress_text(job: Mapping[str, Any]) -> str:
    """'step 40 of 300' — the same wording web/static/job.js writes while the page updates itself."""
    status, step, total = job["status"], job.get("step") or 0, job.get("total_steps") or 0
    of = f"step {step} of {total}" if total else f"step {step}"
    if status == "queued":
        return f"Queued, waiting for a worker ({total} steps)" if total else "Queued, waiting for a worker"
    if status == "running":
        return of if step else f"Starting… ({of})"
    if status == "succeeded":
        return f"Done: {of}"
    if status == "canceled":
        return f"Canceled at {of}"
    return f"Failed at {of}"


@bp.app_template_filter("meta_value")
def meta_value(value: Any) -> str:
    """A dataset's or model's metadata value in a few characters: {'A': 32, 'B': 30} -> 'A 32 · B 30',
    [128, 96] -> '128×96'."""
    if isinstance(value, Mapping):
        return " · ".join(f"{k} {meta_value(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        if len(value) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return f"{value[0]}×{value[1]}"
        return ", ".join(meta_value(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


@bp.app_context_processor
def _layout_context() -> dict[str, Any]:
    return {"nav_kinds": [(k.name, k.title) for k in job_kinds().values()], "home_kind": HOME_KIND}


# -- forms built from a kind's schema ---------------------------------------------------------------
@dataclass(frozen=True)
class FormField:
    """One control of a job form, derived from a schema field (:class:`core.schema.ParamView`)."""

    param: ParamView
    control: str  # "number" | "text" | "select" | "checkbox"
    value: str
    checked: bool = False
    options: tuple[tuple[str, str], ...] = ()  # (value, label) for selects
    error: str | None = None
    reference: str | None = None  # "dataset" / "model" when the value names a registered row

    @property
    def name(self) -> str:
        return self.param.name

    @property
    def step(self) -> str:
        return "1" if self.param.type == "int" else "any"

    @property
    def default_text(self) -> str:
        return self.param.form_value(self.param.default)

    @property
    def is_list(self) -> bool:
        return self.param.type.endswith("_list")

    @property
    def min_attr(self) -> str:
        """Bounds go on the input only for scalar numbers (lists are text; the server checks each item)."""
        return self.param.form_value(self.param.minimum) if self.control == "number" else ""

    @property
    def max_attr(self) -> str:
        return self.param.form_value(self.param.maximum) if self.control == "number" else ""

    @property
    def range_text(self) -> str:
        lo, hi = self.param.minimum, self.param.maximum
        fmt = self.param.form_value
        if lo is not None and hi is not None:
            return f"From {fmt(lo)} to {fmt(hi)}"
        if lo is not None:
            return f"At least {fmt(lo)}"
        if hi is not None:
            return f"At most {fmt(hi)}"
        return ""


@dataclass(frozen=True)
class FileField:
    """One upload slot of a job form, optionally with bundled examples to pick instead of uploading."""

    spec: InputSpec
    error: str | None = None
    examples: tuple[str, ...] = ()
    picked: str = ""

    @property
    def role(self) -> str:
        return self.spec.role

    @property
    def title(self) -> str:
        return ROLE_TITLES.get(self.role, self.role.replace("_", " ").capitalize())

    @property
    def accept(self) -> str:
        return "image/*" if self.spec.accept == "image" else ""

    @property
    def required(self) -> bool:
        """The browser may insist on a file only when there is no example to pick instead."""
        return self.spec.required and not self.examples

    @property
    def example_field(self) -> str:
        return f"example_{self.role}"

    @property
    def example_group(self) -> str:
        return EXAMPLE_INPUTS[self.role][0] if self.examples else ""


def _reference_options(table: str, keep: Callable[[Any], bool]) -> tuple[tuple[str, str], ...]:
    rows = resources.list_rows(deps.services(), table + "s")
    return tuple((r.id, f"{r.name} · {getattr(r, 'layout', None) or getattr(r, 'family', '')} · {r.id[:8]}")
                 for r in rows if keep(r))


def accepted_rows(kind: JobKind) -> Callable[[str, Any], bool]:
    """``(param, row) -> bool``: would the kind take this row with its default parameters? The form offers
    only those (pix2pix lists paired datasets), so a choice it offers is never refused at submit."""
    def accepts(param: str, row: Any) -> bool:
        if kind.check_references is None:
            return True
        try:
            kind.check_references(kind.schema.defaults(), {param: row})
        except UserError:
            return False
        return True
    return accepts


def build_fields(schema: Schema, values: Mapping[str, str], errors: Mapping[str, str], submitted: bool,
                 references: Mapping[str, str] | None = None,
                 accepts: Callable[[str, Any], bool] | None = None) -> list[FormField]:
    """Controls for every parameter, showing ``values`` (the defaults, a prefill or what was submitted).

    ``references`` maps parameters that name a registered dataset/model to their table, so they become
    a choice among the rows (those ``accepts(param, row)`` allows) instead of a box for a pasted id.
    """
    fields = []
    for p in schema.params:
        value = values.get(p.name, p.form_value(p.default))
        error = errors.get(p.name)
        table = (references or {}).get(p.name)
        if table:
            options = _reference_options(table, lambda row, name=p.name: accepts is None or accepts(name, row))
            if p.nullable or not p.default or not options:
                options = (("", f"— choose a {table} —"),) + options
            fields.append(FormField(p, "select", value, options=options, error=error, reference=table))
        elif p.type == "bool" and p.nullable:
            # Three states (unset/yes/no) do not fit a checkbox.
            fields.append(FormField(p, "select", value, options=(("", "—"), ("true", "yes"), ("false", "no")),
                                    error=error))
        elif p.type == "bool":
            checked = (values.get(p.name, "") if submitted else value).lower() in TRUTHY
            fields.append(FormField(p, "checkbox", "true", checked=checked, error=error))
        elif p.type == "choice":
            options = tuple((c, c) for c in p.choices)
            if p.nullable:
                options = (("", "—"),) + options
            fields.append(FormField(p, "select", value, options=options, error=error))
        elif p.type in ("int", "float"):
            fields.append(FormField(p, "number", value, error=error))
        else:
            fields.append(FormField(p, "text", value, error=error))
    return fields


def build_file_fields(kind: JobKind, picked: Mapping[str, str], errors: Mapping[str, str]) -> list[FileField]:
    out = []
    for spec in kind.inputs:
        examples: tuple[str, ...] = ()
        if spec.role in EXAMPLE_INPUTS and spec.accept == "image":
            examples = tuple(EXAMPLE_INPUTS[spec.role][1]())
        out.append(FileField(spec, errors.get(spec.role), examples, picked.get(spec.role, "")))
    return out


def _example_upload(role: str, name: str) -> Upload:
    """The bytes of a bundled example, by a name checked against the listing (never a path from the user)."""
    folder, listing = EXAMPLE_INPUTS[role]
    if name not in listing():
        raise UserError(f"{role}: {quote(name)} is not one of the example paintings", role, 422)
    data = (deps.EXAMPLES_DIR / folder / name).read_bytes()
    return Upload(role=role, filename=name, data=data, content_type="image/jpeg" if name.endswith(".jpg") else "")


def read_uploads(kind: JobKind) -> list[Upload]:
    """Uploads from the multipart form plus any picked examples.

    A file input left empty still sends a part with no filename and no bytes; that means "no file",
    not "an empty file", so it is dropped here and the kind's own required-input check speaks instead.
    """
    uploads = []
    for role, f in request.files.items(multi=True):
        data = f.read()
        if not data and not f.filename:
            continue
        uploads.append(Upload(role=role, filename=f.filename or role, data=data, content_type=f.mimetype or ""))
    for spec in kind.inputs:
        name = request.form.get(f"example_{spec.role}", "").strip()
        if name and spec.role in EXAMPLE_INPUTS:
            uploads.append(_example_upload(spec.role, name))
    return uploads


def _render_form(kind: JobKind, *, values: Mapping[str, str] | None = None, picked: Mapping[str, str] | None = None,
                 error: UserError | None = None, submitted: bool = False, had_files: bool = False,
                 status: int = 200) -> tuple[str, int]:
    # Every mistake at once: each field shows its own, the summary lists them all with links.
    errors: dict[str, str] = {}
    for e in (error.errors if error is not None else []):
        if e.get("field") and e["field"] not in errors:
            errors[e["field"]] = e["error"]
    fields = build_fields(kind.schema, values or {}, errors, submitted, kind.references, accepted_rows(kind))
    files = build_file_fields(kind, picked or {}, errors)
    anchors = {f.role: f"file-{f.role}" for f in files} | {f.name: f"param-{f.name}" for f in fields}
    titles = {f.role: f.role.capitalize() for f in files} | {f.name: f.param.title for f in fields}
    summary = [(anchors[name], _labelled(message, name, titles[name])) for name, message in errors.items()
               if name in anchors]
    anchor = summary[0][0] if summary else None
    return render_template(
        "form.html", kind=kind, basic=[f for f in fields if not f.param.advanced],
        advanced=[f for f in fields if f.param.advanced], files=files, error=error, error_anchor=anchor,
        error_summary=summary,
        advanced_open=any(f.error for f in fields if f.param.advanced), had_files=had_files,
        action=url_for("pages.index") if kind.name == HOME_KIND else url_for("pages.kind_form", kind=kind.name),
    ), status


def _labelled(message: str, name: str, title: str) -> str:
    """A field's error in the summary, under the label people see rather than the parameter's name."""
    return f"{title}: {message[len(name) + 2:]}" if message.startswith(f"{name}: ") else message


def _form_view(kind: JobKind):  # type: ignore[no-untyped-def]
    """GET renders the form (query arguments prefill parameters); POST submits, enqueues and redirects."""
    param_names = {p.name for p in kind.schema.params}
    if request.method == "GET":
        prefill = {k: v for k, v in request.args.items() if k in param_names}
        return _render_form(kind, values=prefill)
    values: dict[str, str] = {}
    picked: dict[str, str] = {}
    try:
        form = request.form  # parsing the body is where an oversized upload is refused
        values = {k: v for k, v in form.items() if k in param_names}
        picked = {r: form.get(f"example_{r}", "") for r in EXAMPLE_INPUTS}
        job = submit_job(deps.services(), kind.name, form, read_uploads(kind), form=True)
    except RequestEntityTooLarge:
        limit = deps.services().settings.max_upload_mb
        return _render_form(kind, error=UserError(f"The upload is larger than the {limit} MB limit; "
                                                  "choose smaller images.", None, 413), status=413)
    except UserError as exc:
        # Browsers cannot refill file inputs, so the page says to choose the files again.
        return _render_form(kind, values=values, picked=picked, error=exc, submitted=True,
                            had_files=any(f.filename for f in request.files.values()), status=exc.status)
    deps.enqueue(job.id, job.priority)  # when the broker is down the job stays queued and is re-sent by a worker
    return redirect(url_for("pages.job_page", job_id=job.id), code=303)


@bp.route("/", methods=["GET", "POST"])
def index():  # type: ignore[no-untyped-def]
    kind = get_kind(HOME_KIND)
    if kind is None:  # pragma: no cover - the home kind is built in
        abort(404)
    return _form_view(kind)


@bp.route("/new/<kind>", methods=["GET", "POST"])
def kind_form(kind: str):  # type: ignore[no-untyped-def]
    found = get_kind(kind)
    if found is None:
        return render_template("not_found.html", what=f"There is no job kind called “{kind}”."), 404
    if found.name == HOME_KIND and request.method == "GET":
        return redirect(url_for("pages.index", **request.args), code=302)
    return _form_view(found)


@bp.get("/examples/<group>/<name>/thumb.jpg")
def example_thumb(group: str, name: str):  # type: ignore[no-untyped-def]
    """A small JPEG of a bundled example: the form shows six paintings, not six full-size files."""
    for folder, listing in EXAMPLE_INPUTS.values():
        if folder == group and name in listing():
            path = deps.EXAMPLES_DIR / folder / name
            resp = Response(_thumbnail(str(path), path.stat().st_mtime_ns), mimetype="image/jpeg")
            resp.cache_control.public = True
            resp.cache_control.max_age = 86400
            return resp
    abort(404)


@functools.lru_cache(maxsize=32)
def _thumbnail(path: str, _mtime_ns: int) -> bytes:
    with open(path, "rb") as fh:
        return thumbnail_jpeg(decode_image(fh.read(), "example"), longest=240, quality=82)


# -- a job ---------------------------------------------------------------------------------------
def _job_or_404(job_id: str) -> Job | None:
    return repo.get_job(deps.services().sessions, job_id)


def _param_rows(kind: JobKind | None, params: Mapping[str, Any]) -> list[tuple[str, str]]:
    rows = []
    for name, value in params.items():
        p = kind.schema[name] if kind is not None and name in kind.schema else None
        rows.append((p.title if p else name, p.form_value(value) if p else str(value)))
    return rows


@bp.get("/jobs/<job_id>")
def job_page(job_id: str):  # type: ignore[no-untyped-def]
    job = _job_or_404(job_id)
    if job is None:
        return render_template("not_found.html", what=f"There is no job with id “{job_id}”."), 404
    data = job_json(job)
    kind = get_kind(job.kind)
    started, finished = repo.as_utc(job.started_at), repo.as_utc(job.finished_at)
    return render_template(
        "job.html", job=data, row=job, kind=kind, title=kind.title if kind else job.kind,
        params=_param_rows(kind, job.params or {}),
        images=[o for o in data["outputs"] if o["content_type"].startswith("image/")],
        input_images=[i for i in data["inputs"] if i["content_type"].startswith("image/")],
        others=[o for o in data["outputs"] if not o["content_type"].startswith("image/")],
        events=repo.events(deps.services().sessions, job.id),
        ran_for=(finished - started).total_seconds() if started and finished else None,
        terminal=job.status in TERMINAL_STATUSES,
        workers_url=url_for("api.list_workers"),
    )


@bp.post("/jobs/<job_id>/cancel")
def cancel(job_id: str):  # type: ignore[no-untyped-def]
    """The cancel button without JavaScript (with it, the page calls the API and stays put)."""
    if _job_or_404(job_id) is None:
        return render_template("not_found.html", what=f"There is no job with id “{job_id}”."), 404
    repo.request_cancel(deps.services().sessions, job_id)
    return redirect(url_for("pages.job_page", job_id=job_id), code=303)


# -- the job list ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class JobRow:
    job: dict[str, Any]
    title: str
    created_at: dt.datetime | None
    thumb: str | None

    @property
    def active(self) -> bool:
        return self.job["status"] not in TERMINAL_STATUSES


def _thumb(data: Mapping[str, Any]) -> str | None:
    """The newest preview, else the first image output: both show what the job made."""
    if data.get("preview_url"):
        return data["preview_url"]
    for o in data.get("outputs", ()):
        if o["content_type"].startswith("image/"):
            return o["url"]
    return None


def _rows(jobs: Iterable[Job]) -> list[JobRow]:
    kinds = job_kinds()
    out = []
    for j in jobs:
        data = job_json(j)
        k = kinds.get(j.kind)
        out.append(JobRow(data, k.title if k else j.kind, j.created_at, _thumb(data)))
    return out


@bp.get("/jobs")
def jobs_list():  # type: ignore[no-untyped-def]
    notes: list[str] = []
    status = request.args.get("status") or None
    kind = request.args.get("kind") or None
    if status and status not in JOB_STATUSES:
        notes.append(f"There is no status “{status}”; showing every status.")
        status = None
    if kind and kind not in job_kinds():
        notes.append(f"There is no job kind “{kind}”; showing every kind.")
        kind = None
    try:
        limit = min(MAX_JOBS_PER_PAGE, max(1, int(request.args.get("limit", JOBS_PER_PAGE))))
    except ValueError:
        limit = JOBS_PER_PAGE
    cursor = request.args.get("cursor") or None
    sf = deps.services().sessions
    try:
        jobs, next_cursor = repo.list_jobs(sf, status=status, kind=kind, limit=limit, cursor=cursor)
    except (ValueError, UnicodeDecodeError):
        notes.append("That page link is no longer valid; showing the newest jobs.")
        cursor = None
        jobs, next_cursor = repo.list_jobs(sf, status=status, kind=kind, limit=limit)
    base = {k: v for k, v in (("status", status), ("kind", kind)) if v}
    if limit != JOBS_PER_PAGE:
        base["limit"] = str(limit)
    return render_template(
        "jobs.html", rows=_rows(jobs), status=status, kind=kind, statuses=JOB_STATUSES, notes=notes,
        counts=repo.count_by_status(sf), first_page=cursor is not None,
        first_url=url_for("pages.jobs_list", **base),
        next_url=url_for("pages.jobs_list", cursor=next_cursor, **base) if next_cursor else None,
        limit=limit, default_limit=JOBS_PER_PAGE,
    )


# -- workers, models, datasets ----------------------------------------------------------------------
@bp.get("/workers")
def workers():  # type: ignore[no-untyped-def]
    s = deps.services()
    stale = max(3 * s.settings.heartbeat_seconds, 30.0)
    rows = [worker_json(w, stale) for w in repo.list_workers(s.sessions)]
    return render_template("workers.html", workers=rows, counts=repo.count_by_status(s.sessions),
                           statuses=JOB_STATUSES, live=sum(w["state"] in ("online", "busy") for w in rows))


def _serialized(rows: Iterable[Any], to_json: Callable[[Any], dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows as the API shows them (so links such as a model's download URL come from one place), plus the
    row's datetime for the age column."""
    out = []
    for r in rows:
        item = to_json(r)
        item["created"] = r.created_at
        out.append(item)
    return out


def _kind_taking(table: str, kind_name: str) -> tuple[JobKind | None, str | None]:
    """A kind and the parameter through which it takes a dataset/model, if that kind is registered."""
    kind = get_kind(kind_name)
    if kind is None:
        return None, None
    for param, t in kind.references.items():
        if t == table:
            return kind, param
    return kind, None


@bp.get("/models")
def models():  # type: ignore[no-untyped-def]
    rows = resources.list_rows(deps.services(), "models")
    translate, model_param = _kind_taking("model", "translate")
    return render_template("models.html", models=_serialized(rows, model_json), translate=translate,
                           model_param=model_param, import_url=url_for("resources.import_model"),
                           import_fields=build_fields(IMPORT_SCHEMA, {}, {}, False))


@bp.get("/datasets")
def datasets():  # type: ignore[no-untyped-def]
    rows = resources.list_rows(deps.services(), "datasets")
    trainers = {layout: _kind_taking("dataset", name)
                for layout, name in (("unpaired", "cyclegan_train"), ("paired", "pix2pix_train"))}
    demo_kind, demo_param = trainers["unpaired"]
    return render_template(
        "datasets.html", datasets=_serialized(rows, dataset_json), trainers=trainers,
        upload_url=url_for("resources.create_dataset"), demo_url=url_for("resources.create_demo_dataset"),
        jobs_url=url_for("api.create_job"), demo_kind=demo_kind, demo_param=demo_param,
        demo_params={k: v for k, v in DEMO_PARAMS.items() if demo_kind and k in demo_kind.schema},
        max_upload_mb=current_app.config["MAX_CONTENT_LENGTH"] // (1024 * 1024),
    )
