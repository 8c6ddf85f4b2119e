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

from core import deletion, resources
from core import uploads as kept_uploads
from core.auth import can_see, owner_filter, owner_of_new_rows
from core.errors import UserError, quote
from core.images import decode_image, thumbnail_jpeg
from core.jobs import repository as repo
from core.jobs.submit import (
    Upload,
    all_errors,
    clean_job_name,
    original_filename,
    rerun,
    stored_inputs,
    submit_job,
    valid_uploads,
)
from core.kinds.base import InputSpec, JobKind
from core.kinds.gan import DEMO_PARAMS, IMPORT_SCHEMA
from core.kinds.registry import get_kind, job_kinds
from core.models import JOB_STATUSES, TERMINAL_STATUSES, Job, utcnow
from core.schema import ParamView, Schema
from web import deps, job_view
from web.auth import identity, is_admin
from web.labels import client_labels, format_metric, metric_label
from web.security import INLINE_IMAGE_TYPES
from web.serialize import dataset_json, job_json, model_json, worker_json
from web.snippets import programs_context

bp = Blueprint("pages", __name__)

HOME_KIND = "style_transfer"
JOBS_PER_PAGE = 20
MAX_JOBS_PER_PAGE = 100
TRUTHY = ("1", "true", "yes", "on")

def example_photos() -> list[str]:
    """File names of the bundled example photos, offered as content on the form."""
    return sorted(p.name for p in (deps.EXAMPLES_DIR / "content").glob("*")
                  if p.suffix.lower() in (".png", ".jpg", ".jpeg"))


#: Input slots that may be filled with a bundled example instead of an upload:
#: role -> (example sub-folder, function listing the allowed file names). The listing is the whitelist.
EXAMPLE_INPUTS: dict[str, tuple[str, Callable[[], list[str]]]] = {"style": ("styles", deps.example_styles),
                                                                  "content": ("content", example_photos)}
#: The example a fresh form starts on (a newcomer who only uploads a photo still gets a painting).
EXAMPLE_DEFAULTS = {"style": "starry_night.jpg"}
#: What an example is called on the form, per slot.
EXAMPLE_NOUNS = {"style": ("painting", "paintings"), "content": ("photo", "photos")}

#: The form field of a job's name ("name" is a parameter of the training kinds: the model's name).
JOB_NAME_FIELD = "job_name"

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
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


@bp.app_template_filter("metric_label")
def _metric_label(key: str) -> str:
    return metric_label(key)


@bp.app_template_filter("metric_value")
def _metric_value(value: Any, key: str) -> str:
    return format_metric(key, value)


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
    kept: tuple["KeptView", ...] = ()  # files from an earlier try or from the job being run again

    @property
    def role(self) -> str:
        return self.spec.role

    @property
    def example_nouns(self) -> tuple[str, str]:
        return EXAMPLE_NOUNS.get(self.role, ("example", "examples"))

    @property
    def title(self) -> str:
        return ROLE_TITLES.get(self.role, self.role.replace("_", " ").capitalize())

    @property
    def accept(self) -> str:
        return "image/*" if self.spec.accept == "image" else ""

    @property
    def required(self) -> bool:
        """The browser may insist on a file only when there is no example or kept file instead."""
        return self.spec.required and not self.examples and not self.kept

    @property
    def example_field(self) -> str:
        return f"example_{self.role}"

    @property
    def example_group(self) -> str:
        return EXAMPLE_INPUTS[self.role][0] if self.examples else ""


@dataclass(frozen=True)
class KeptView:
    """A file the form already has (a thumbnail and a "keep" checkbox instead of a file picker): a valid
    upload kept across an error (``keep_upload`` = its index under the form's token) or an input of the job
    being run again (``keep_input`` = its stored name)."""

    role: str
    field: str  # "keep_upload" | "keep_input"
    value: str
    label: str
    thumb: str
    checked: bool = True


def _kept_from_token(token: str | None, owner: str | None, checked: Iterable[int] | None = None) -> list[KeptView]:
    wanted = None if checked is None else set(checked)
    return [KeptView(f.role, "keep_upload", str(f.index), f.filename,
                     url_for("pages.kept_upload", token=token, index=f.index),
                     wanted is None or f.index in wanted)
            for f in kept_uploads.listing(deps.services(), token, owner)] if token else []


def _kept_from_job(job: Job | None, checked: Iterable[str] | None = None) -> list[KeptView]:
    if job is None:
        return []
    wanted = None if checked is None else set(checked)
    return [KeptView(f.role, "keep_input", f.name, original_filename(f.name, f.role),
                     url_for("api.job_input", job_id=job.id, name=f.name), wanted is None or f.name in wanted)
            for f in job.files if f.direction == "input"]


def _reference_options(table: str, keep: Callable[[Any], bool]) -> tuple[tuple[str, str], ...]:
    rows = resources.list_rows(deps.services(), table + "s", owner=owner_filter(identity()))
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


def build_file_fields(kind: JobKind, picked: Mapping[str, str], errors: Mapping[str, str],
                      kept: Iterable[KeptView] = ()) -> list[FileField]:
    """``picked``: the example chosen per slot; a slot absent from it starts on its default example."""
    kept = list(kept)
    out = []
    for spec in kind.inputs:
        examples: tuple[str, ...] = ()
        if spec.role in EXAMPLE_INPUTS and spec.accept == "image":
            examples = tuple(EXAMPLE_INPUTS[spec.role][1]())
        default = EXAMPLE_DEFAULTS.get(spec.role, "")
        chosen = picked.get(spec.role, default if default in examples else "")
        out.append(FileField(spec, errors.get(spec.role), examples, chosen,
                             tuple(k for k in kept if k.role == spec.role)))
    return out


def _example_upload(role: str, name: str) -> Upload:
    """The bytes of a bundled example, by a name checked against the listing (never a path from the user)."""
    folder, listing = EXAMPLE_INPUTS[role]
    if name not in listing():
        raise UserError(f"{role}: {quote(name)} is not one of the bundled examples", role, 422)
    data = (deps.EXAMPLES_DIR / folder / name).read_bytes()
    return Upload(role=role, filename=name, data=data, content_type="image/jpeg" if name.endswith(".jpg") else "")


def read_uploads(kind: JobKind) -> list[Upload]:
    """Uploads from the multipart form plus any picked examples."""
    files, examples = _form_files(kind)
    return files + examples


def _form_files(kind: JobKind) -> tuple[list[Upload], list[Upload]]:
    """(the files the form sent, the bundled examples it picked).

    A file input left empty still sends a part with no filename and no bytes; that means "no file",
    not "an empty file", so it is dropped here and the kind's own required-input check speaks instead.
    """
    uploads = []
    for role, f in request.files.items(multi=True):
        data = f.read()
        if not data and not f.filename:
            continue
        uploads.append(Upload(role=role, filename=f.filename or role, data=data, content_type=f.mimetype or ""))
    examples = []
    for spec in kind.inputs:
        name = request.form.get(f"example_{spec.role}", "").strip()
        if name and spec.role in EXAMPLE_INPUTS:
            examples.append(_example_upload(spec.role, name))
    return uploads, examples


def _render_form(kind: JobKind, *, values: Mapping[str, str] | None = None, picked: Mapping[str, str] | None = None,
                 error: UserError | None = None, submitted: bool = False, had_files: bool = False,
                 status: int = 200, kept: Iterable[KeptView] = (), hidden: Mapping[str, str] | None = None,
                 rerun_of: Job | None = None) -> tuple[str, int]:
    # Every mistake at once: each field shows its own, the summary lists them all with links, and both
    # call a field by its label ("Style layers"), never by its parameter name ("style_layers").
    raw_errors: dict[str, str] = {}
    for e in (error.errors if error is not None else []):
        if e.get("field") and e["field"] not in raw_errors:
            raw_errors[e["field"]] = e["error"]
    errors = {name: _unprefixed(message, name) for name, message in raw_errors.items()}
    fields = build_fields(kind.schema, values or {}, errors, submitted, kind.references, accepted_rows(kind))
    files = build_file_fields(kind, picked or {}, errors, kept)
    anchors = {f.role: f"file-{f.role}" for f in files} | {f.name: f"param-{f.name}" for f in fields}
    titles = {f.role: f.title for f in files} | {f.name: f.param.title for f in fields}
    summary = [(anchors[name], _labelled(message, name, titles[name])) for name, message in raw_errors.items()
               if name in anchors]
    anchor = summary[0][0] if summary else None
    message = summary[0][1] if len(summary) == 1 else (error.message if error is not None else "")
    return render_template(
        "form.html", kind=kind, basic=[f for f in fields if not f.param.advanced],
        advanced=[f for f in fields if f.param.advanced], files=files, error=error, error_anchor=anchor,
        error_summary=summary, error_message=message, hidden=hidden or {}, rerun_of=rerun_of,
        kept_any=any(f.kept for f in files),
        estimate_url=url_for("api.estimate_job"),
        advanced_open=any(f.error for f in fields if f.param.advanced), had_files=had_files,
        job_name=request.form.get(JOB_NAME_FIELD, "") if submitted else request.args.get(JOB_NAME_FIELD, ""),
        action=url_for("pages.index") if kind.name == HOME_KIND else url_for("pages.kind_form", kind=kind.name),
    ), status


def _labelled(message: str, name: str, title: str) -> str:
    """A field's error in the summary, under the label people see rather than the parameter's name."""
    rest = message[len(name) + 2:] if message.startswith(f"{name}: ") else message
    return f"{title}: {rest}"


def _unprefixed(message: str, name: str) -> str:
    """The message without its ``name: `` prefix (the field's label stands next to it on the form)."""
    rest = message[len(name) + 2:] if message.startswith(f"{name}: ") else message
    return rest[:1].upper() + rest[1:]


def _form_view(kind: JobKind):  # type: ignore[no-untyped-def]
    """GET renders the form (query arguments prefill parameters); POST submits, enqueues and redirects."""
    param_names = {p.name for p in kind.schema.params}
    if request.method == "GET":
        source = _job_or_404(request.args["from"]) if request.args.get("from") else None
        if source is not None and source.kind == kind.name:
            # Edit and run again: the job's parameters, and its stored inputs as kept files.
            prefill = {p.name: p.form_value((source.params or {}).get(p.name, p.default)) for p in kind.schema.params}
            return _render_form(kind, values=prefill, picked={r: "" for r in EXAMPLE_INPUTS},
                                kept=_kept_from_job(source), hidden={"from_job": source.id}, rerun_of=source)
        prefill = {k: v for k, v in request.args.items() if k in param_names}
        return _render_form(kind, values=prefill)
    values: dict[str, str] = {}
    picked: dict[str, str] = {}
    services = deps.services()
    owner = owner_of_new_rows(identity())
    files: list[Upload] = []
    kept: list[Upload] = []
    uploads: list[Upload] | None = None
    source: Job | None = None
    token: str | None = None
    try:
        form = request.form  # parsing the body is where an oversized upload is refused
        values = {k: v for k, v in form.items() if k in param_names}
        picked = {r: form.get(f"example_{r}", "") for r in EXAMPLE_INPUTS}
        token = form.get("kept_token") or None
        keep_idx = [int(i) for i in form.getlist("keep_upload") if i.isdigit()]
        source = _job_or_404(form["from_job"]) if form.get("from_job") else None
        files, examples = _form_files(kind)
        kept = kept_uploads.read(services, token, owner, keep_idx)
        reused = stored_inputs(services, source, form.getlist("keep_input")) if source is not None else []
        uploads = files + kept + reused + examples
        job = submit_job(services, kind.name, form, uploads, form=True, identity=identity(),
                         name=form.get(JOB_NAME_FIELD), dispatching=True)
    except RequestEntityTooLarge:
        limit = services.settings.max_upload_mb
        return _render_form(kind, error=UserError(f"The upload is larger than the {limit} MB limit; "
                                                  "choose smaller images.", None, 413), status=413)
    except UserError as exc:
        # Browsers cannot refill file inputs: the valid files are kept in storage under a new token and
        # shown as kept files; the job being run again keeps offering its inputs.
        if uploads is None:  # refused before the files were read
            return _render_form(kind, values=values, picked=picked, error=exc, submitted=True, status=exc.status)
        exc = all_errors(services, kind, exc, form, uploads)
        keep_now = valid_uploads(services, kind, files + kept)
        new_token = kept_uploads.keep(services, keep_now, owner)
        kept_uploads.discard(services, token)
        views = _kept_from_token(new_token, owner) + _kept_from_job(source, form.getlist("keep_input"))
        hidden = {k: v for k, v in (("kept_token", new_token), ("from_job", source.id if source else None)) if v}
        dropped = len(files) + len(kept) - len(keep_now)
        return _render_form(kind, values=values, picked=picked, error=exc, submitted=True, kept=views,
                            hidden=hidden, had_files=dropped > 0, rerun_of=source, status=exc.status)
    kept_uploads.discard(services, form.get("kept_token") or None)
    deps.send_submitted_job(job)  # when the broker is down the job stays queued and is sent by a worker
    return redirect(url_for("pages.job_page", job_id=job.id), code=303)


@bp.get("/uploads/<token>/<int:index>")
def kept_upload(token: str, index: int):  # type: ignore[no-untyped-def]
    """The thumbnail of a file kept across a form's error (its owner's only; images only)."""
    found = kept_uploads.find(deps.services(), token, owner_of_new_rows(identity()), index)
    if found is None or found.content_type not in INLINE_IMAGE_TYPES:
        abort(404)
    resp = Response(deps.services().storage.read_bytes(found.key), mimetype=found.content_type)
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.cache_control.private = True
    return resp


@bp.post("/jobs/<job_id>/rerun")
def rerun_job(job_id: str):  # type: ignore[no-untyped-def]
    """Run again: a new job with the same kind, parameters and stored inputs, then its page."""
    if _job_or_404(job_id) is None:
        return _no_job(job_id)
    try:
        job = rerun(deps.services(), job_id, identity=identity(), dispatching=True)
    except UserError as exc:
        return render_template("not_found.html", what=exc.message, title="Not run again"), exc.status
    deps.send_submitted_job(job)
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
    """The job if this identity may see it and it is not deleted (else None: the page answers 404)."""
    job = repo.get_job(deps.services().sessions, job_id)
    if job is None or not can_see(identity(), job.owner) or job.deleted_at is not None:
        return None
    return job


def _no_job(job_id: str):  # type: ignore[no-untyped-def]
    """404, or 410 with the time for its owner's deleted job (as the API answers)."""
    job = repo.get_job(deps.services().sessions, job_id)
    if job is not None and job.deleted_at is not None and can_see(identity(), job.owner):
        return render_template("not_found.html", what=f"Job “{job_id}” was deleted on {isotime(job.deleted_at)}; "
                                                      "its files are gone."), 410
    return render_template("not_found.html", what=f"There is no job with id “{job_id}”."), 404


@bp.get("/jobs/<job_id>")
def job_page(job_id: str):  # type: ignore[no-untyped-def]
    job = _job_or_404(job_id)
    if job is None:
        return _no_job(job_id)
    data = job_json(job)
    kind = get_kind(job.kind)
    started, finished = repo.as_utc(job.started_at), repo.as_utc(job.finished_at)
    outputs = data["outputs"]
    return render_template(
        "job.html", job=data, row=job, kind=kind, title=kind.title if kind else job.kind,
        params=job_view.param_rows(kind, job.params or {}),
        metric_rows=job_view.metric_rows(job.metrics), labels=client_labels(),
        input_groups=job_view.input_groups([i for i in data["inputs"] if i["content_type"].startswith("image/")]),
        pairs=job_view.compare_pairs(job.kind, data["inputs"], outputs),
        has_losses=job.kind not in job_view.KINDS_WITHOUT_LOSSES,
        many_outputs=len(outputs) > 1,
        images=[o for o in data["outputs"] if o["content_type"].startswith("image/")],
        input_images=[i for i in data["inputs"] if i["content_type"].startswith("image/")],
        others=[o for o in data["outputs"] if not o["content_type"].startswith("image/")],
        events=repo.events(deps.services().sessions, job.id),
        ran_for=(finished - started).total_seconds() if started and finished else None,
        terminal=job.status in TERMINAL_STATUSES,
        workers_url=url_for("api.list_workers") if is_admin() else "",  # the workers view is for admins
        **programs_context(deps.services(), job, data, request.host_url),  # snippets, webhook deliveries
    )


@bp.post("/jobs/<job_id>/cancel")
def cancel(job_id: str):  # type: ignore[no-untyped-def]
    """The cancel button without JavaScript (with it, the page calls the API and stays put)."""
    if _job_or_404(job_id) is None:
        return _no_job(job_id)
    repo.request_cancel(deps.services().sessions, job_id)
    return redirect(url_for("pages.job_page", job_id=job_id), code=303)


@bp.post("/jobs/<job_id>/retry")
def retry(job_id: str):  # type: ignore[no-untyped-def]
    """The Retry button of a failed or canceled job: the same repository call as the API's retry."""
    job = _job_or_404(job_id)
    if job is None:
        return _no_job(job_id)
    if repo.retry(deps.services().sessions, job_id) in ("failed", "canceled"):
        deps.enqueue(job_id, job.priority)
    return redirect(url_for("pages.job_page", job_id=job_id), code=303)


@bp.post("/jobs/<job_id>/delete")
def delete_job(job_id: str):  # type: ignore[no-untyped-def]
    """The Delete button of a finished job (the page asks to confirm first): then the job list."""
    if _job_or_404(job_id) is None:
        return _no_job(job_id)
    try:
        deletion.delete_job(deps.services(), job_id)
    except UserError as exc:
        return render_template("not_found.html", what=exc.message), exc.status
    return redirect(url_for("pages.jobs_list"), code=303)


def _delete_resource(table: str, resource_id: str, back: str):  # type: ignore[no-untyped-def]
    row = resources.get(deps.services(), table, resource_id)
    if row is None or not can_see(identity(), row.owner):
        return render_template("not_found.html", what=f"There is no {table.rstrip('s')} with id “{resource_id}”."), 404
    try:
        deletion.delete_resource(deps.services(), table, resource_id)
    except UserError as exc:
        return render_template("not_found.html", what=exc.message), exc.status
    return redirect(url_for(back), code=303)


@bp.post("/datasets/<dataset_id>/delete")
def delete_dataset(dataset_id: str):  # type: ignore[no-untyped-def]
    """The Delete button of a dataset (refused while a queued or running job uses it)."""
    return _delete_resource("datasets", dataset_id, "pages.datasets")


@bp.post("/models/<model_id>/delete")
def delete_model(model_id: str):  # type: ignore[no-untyped-def]
    """The Delete button of a model (refused while a queued or running job uses it)."""
    return _delete_resource("models", model_id, "pages.models")


# -- names ---------------------------------------------------------------------------------------------
def _rename_back(back: str, anchor: str = ""):  # type: ignore[no-untyped-def]
    return redirect(back + anchor, code=303)


@bp.post("/jobs/<job_id>/name")
def rename_job(job_id: str):  # type: ignore[no-untyped-def]
    """The job page's name form (the API's PATCH does the same); an empty name clears it."""
    if _job_or_404(job_id) is None:
        return _no_job(job_id)
    try:
        repo.rename_job(deps.services().sessions, job_id, clean_job_name(request.form.get("name", "")))
    except UserError as exc:
        return render_template("not_found.html", what=exc.message, title="Not renamed"), exc.status
    return _rename_back(url_for("pages.job_page", job_id=job_id))


def _rename_resource(table: str, resource_id: str):  # type: ignore[no-untyped-def]
    row = resources.get(deps.services(), table, resource_id)
    if row is None or not can_see(identity(), row.owner):
        return render_template("not_found.html", what=f"There is no {table.rstrip('s')} with id “{resource_id}”."), 404
    try:
        resources.rename(deps.services(), table, resource_id, request.form.get("name", ""))
    except UserError as exc:
        return render_template("not_found.html", what=exc.message, title="Not renamed"), exc.status
    return _rename_back(url_for(f"pages.{table}"), f"#{table.rstrip('s')}-{resource_id}")


@bp.post("/datasets/<dataset_id>/name")
def rename_dataset(dataset_id: str):  # type: ignore[no-untyped-def]
    return _rename_resource("datasets", dataset_id)


@bp.post("/models/<model_id>/name")
def rename_model(model_id: str):  # type: ignore[no-untyped-def]
    return _rename_resource("models", model_id)


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
    owner = owner_filter(identity())
    q = " ".join("".join(c for c in request.args.get("q", "") if ord(c) >= 32 and ord(c) != 127).split())[:255] or None
    found = {"search": q, "search_kinds": [k.name for k in job_kinds().values() if q and q.lower() in k.title.lower()]}
    try:
        jobs, next_cursor = repo.list_jobs(sf, status=status, kind=kind, limit=limit, cursor=cursor, owner=owner,
                                           **found)
    except (ValueError, UnicodeDecodeError):
        notes.append("That page link is no longer valid; showing the newest jobs.")
        cursor = None
        jobs, next_cursor = repo.list_jobs(sf, status=status, kind=kind, limit=limit, owner=owner, **found)
    base = {k: v for k, v in (("status", status), ("kind", kind), ("q", q)) if v}
    if limit != JOBS_PER_PAGE:
        base["limit"] = str(limit)
    return render_template(
        "jobs.html", rows=_rows(jobs), status=status, kind=kind, q=q, statuses=JOB_STATUSES, notes=notes,
        counts=repo.count_by_status(sf, owner=owner), first_page=cursor is not None,
        first_url=url_for("pages.jobs_list", **base),
        next_url=url_for("pages.jobs_list", cursor=next_cursor, **base) if next_cursor else None,
        limit=limit, default_limit=JOBS_PER_PAGE,
    )


# -- workers, models, datasets ----------------------------------------------------------------------
@bp.get("/workers")
def workers():  # type: ignore[no-untyped-def]
    if not is_admin():  # hostnames and pids are for admins when auth is on
        return render_template("not_found.html", what="There is no such page."), 404
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
    rows = resources.list_rows(deps.services(), "models", owner=owner_filter(identity()))
    translate, model_param = _kind_taking("model", "translate")
    models = _serialized(rows, model_json)
    sf = deps.services().sessions
    for m in models:
        m["summary"] = job_view.model_summary(m["meta"])
        source = repo.get_job(sf, m["source_job_id"]) if m["source_job_id"] else None
        m["source_job_name"] = source.name if source is not None and source.deleted_at is None else None
    return render_template("models.html", models=models, translate=translate,
                           model_param=model_param, import_url=url_for("resources.import_model"),
                           import_fields=build_fields(IMPORT_SCHEMA, {}, {}, False))


@bp.get("/datasets")
def datasets():  # type: ignore[no-untyped-def]
    rows = resources.list_rows(deps.services(), "datasets", owner=owner_filter(identity()))
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
