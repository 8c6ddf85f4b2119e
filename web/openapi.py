"""The OpenAPI 3.1 document, generated: nothing in it is written twice.

- **Which operations exist** comes from the Flask URL map: every rule under ``/api/v1`` and ``/healthz``,
  with its methods and path parameters (``<job_id>`` → ``{job_id}``).
- **Response bodies** are the pydantic models of :mod:`web.api_models` (``$defs`` lifted into
  ``components/schemas``); errors are the ``Error`` model.
- **Job parameters** are each kind's own schema (``kind.schema.json_schema()``, the same one that validates
  requests), as a ``oneOf`` discriminated by ``kind``.
- **Summaries** come from the view functions' docstrings (their first sentence) unless the table names one.
- What the URL map cannot tell (which model answers, query parameters, request bodies) is the small
  :data:`OPERATIONS` table, keyed by endpoint and method. A route without an entry is still listed (marked
  ``x-undocumented``) and :func:`undocumented` names it, which ``tests/test_openapi.py`` checks is empty.
"""

from __future__ import annotations

import copy
import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from flask import Flask, current_app
from pydantic.json_schema import models_json_schema
from werkzeug.routing import Rule

from core.datasets import LAYOUTS
from core.kinds.registry import job_kinds
from core.models import JOB_STATUSES, PRIORITIES
from core.webhooks import DEFAULT_EVENTS as DEFAULT_WEBHOOK_EVENTS
from core.webhooks import EVENTS as WEBHOOK_EVENTS
from web import api_models as m

REF = "#/components/schemas/{model}"
#: Methods every Flask rule answers on its own; not documented.
IMPLICIT_METHODS = frozenset({"HEAD", "OPTIONS"})
#: The converters of Flask rules as JSON schemas (anything else is a string).
CONVERTERS: dict[str, dict[str, Any]] = {
    "default": {"type": "string", "minLength": 1, "pattern": "^[^/]+$"},
    "string": {"type": "string", "minLength": 1, "pattern": "^[^/]+$"},
    "int": {"type": "integer", "minimum": 0},
    "float": {"type": "number", "minimum": 0},
    "path": {"type": "string", "minLength": 1},
    "uuid": {"type": "string", "format": "uuid"},
}
PATH_PARAMS = {"job_id": "The job's id", "name": "A file name, as in the job's `outputs` / `inputs`",
               "dataset_id": "The dataset's id", "model_id": "The model's id"}
_RULE_ARG = re.compile(r"<(?:(?P<conv>\w+)(?:\([^)]*\))?:)?(?P<name>\w+)>")


def is_documented_path(rule: str) -> bool:
    """The rules the document covers: the JSON API and the health check."""
    return rule.startswith("/api/v1/") or rule == "/healthz"


def openapi_path(rule: str) -> str:
    """A Flask rule as an OpenAPI path: ``/jobs/<job_id>`` → ``/jobs/{job_id}``."""
    return _RULE_ARG.sub(lambda mt: "{" + mt.group("name") + "}", rule)


def documented_operations(app: Flask) -> list[tuple[Rule, str]]:
    """``(rule, method)`` for every operation of the URL map the document must describe."""
    ops = []
    for rule in app.url_map.iter_rules():
        if is_documented_path(rule.rule):
            ops.extend((rule, method) for method in sorted((rule.methods or set()) - IMPLICIT_METHODS))
    return sorted(ops, key=lambda o: (o[0].rule, o[1]))


# -- the table ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Answer:
    """A success response: a model (JSON), ``binary`` media types (a file), a plain JSON object, or
    server-sent ``events`` (the schema of one event)."""

    description: str
    model: type[m.ApiModel] | None = None
    binary: tuple[str, ...] = ()
    schema: Mapping[str, Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)  # name -> description
    events: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Operation:
    """What the URL map cannot say about one operation."""

    tag: str
    answers: Mapping[int, Answer]
    errors: Mapping[int, str] = field(default_factory=dict)  # status -> when (bodies are the Error model)
    summary: str | None = None  # else the first sentence of the view's docstring
    #: OpenAPI parameter objects (in: query), or functions building one from the app's kinds
    query: tuple[Mapping[str, Any] | Callable[[], Mapping[str, Any]], ...] = ()
    headers: tuple[Mapping[str, Any], ...] = ()  # OpenAPI parameter objects (in: header)
    body: Callable[[], dict[str, Any]] | None = None  # builds the requestBody (kinds can differ per app)


def _query(name: str, schema: Mapping[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": dict(schema), "description": description}


DOWNLOAD = _query("download", {"type": "string"},
                  "Any non-empty value (`1`): send the file as an attachment instead of inline")
FILE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/gif", "image/bmp", "image/tiff", "application/json",
              "application/zip", "application/octet-stream")
PREFER_WAIT = {
    "name": "Prefer", "in": "header", "required": False, "schema": {"type": "string"}, "example": "wait=30",
    "description": "`wait=N` (RFC 7240): hold the answer up to N seconds (at most 60, and ATELIER_MAX_WAIT_SECONDS) "
                   "until the job has ended, then answer with the job as it is; `Preference-Applied: wait=N` says "
                   "it was honoured. A value that is not a whole number is ignored, as is the preference when the "
                   "server has no free slot for a held request (ATELIER_MAX_STREAMS).",
}
#: One server-sent event of ``GET /api/v1/jobs/{id}/stream`` (see web.stream).
SSE_EVENT = {
    "type": "object", "required": ["event", "data"],
    "description": "One event. `data` is JSON: `status` {status, attempt, worker, error, cancel_requested}; "
                   "`progress` {step, total_steps, progress, metrics}; `preview` {url, step}; `metrics` {points: "
                   "[[name, step, value]]}; `log` {events: [{at, level, message}]}; `completed`: the job (as "
                   "`GET /api/v1/jobs/{id}`)",
    "properties": {
        "event": {"type": "string", "enum": ["status", "progress", "preview", "metrics", "log", "completed"]},
        "id": {"type": "string", "pattern": "^[0-9]+[.][0-9]+$",
               "description": "`<log cursor>.<metric cursor>`: send it back as `Last-Event-ID` to resume"},
        "data": {"type": "string", "contentMediaType": "application/json"},
        "retry": {"type": "integer", "description": "Milliseconds a client waits before reconnecting"},
    },
}
PREFERENCE_APPLIED = {"Preference-Applied": "`wait=N` when `Prefer: wait=N` was honoured"}
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key", "in": "header", "required": False,
    "schema": {"type": "string", "pattern": "^[!-~]{1,255}$"},
    "description": "Repeating a request with the same key returns the job the first one created (200, "
                   "`Idempotent-Replayed: true`) and stores nothing; the same key for another request is a 409.",
}


def _job_answer(description: str) -> Answer:
    return Answer(description, m.Job)


def _submit_body() -> dict[str, Any]:
    """``POST /api/v1/jobs``: multipart (parameters as a JSON part, files under the kind's roles) or, for
    kinds that take no upload, a JSON body; either way a ``oneOf`` over the kinds, by ``kind``."""
    form_refs, json_refs = {}, {}
    for kind in job_kinds().values():
        form_refs[kind.name] = REF.format(model=f"JobForm_{kind.name}")
        if not any(i.required for i in kind.inputs):
            json_refs[kind.name] = REF.format(model=f"JobRequest_{kind.name}")

    def one_of(refs: dict[str, str]) -> dict[str, Any]:
        return {"oneOf": [{"$ref": r} for r in refs.values()],
                "discriminator": {"propertyName": "kind", "mapping": refs}}

    content: dict[str, Any] = {"multipart/form-data": {
        "schema": one_of(form_refs), "encoding": {"params": {"contentType": "application/json"}}}}
    if json_refs:
        content["application/json"] = {"schema": one_of(json_refs)}
    return {"required": True, "content": content,
            "description": "The kind, its parameters (the kind's schema; defaults fill in what is left out), "
                           "the priority, and the kind's files. A JSON body suits the kinds that take no upload."}


def _dataset_body() -> dict[str, Any]:
    props = {
        "name": {"type": "string", "maxLength": 255, "description": "Default: the zip's name"},
        "layout": {"type": "string", "enum": list(LAYOUTS), "default": "unpaired",
                   "description": "`unpaired`: trainA/ and trainB/; `paired`: A/B pairs (pix2pix)"},
        "file": {"type": "string", "format": "binary", "contentMediaType": "application/zip",
                 "description": "One zip of the dataset's folders"},
        "files": {"type": "array", "items": {"type": "string", "format": "binary"},
                  "description": "Images instead of a zip; their names carry the folders (`trainA/1.jpg`)"},
    }
    return {"required": True, "content": {"multipart/form-data": {"schema": {"type": "object", "properties": props}}}}


def _demo_body() -> dict[str, Any]:
    schema = {"type": "object", "properties": {"layout": {"type": "string", "enum": list(LAYOUTS), "default": "unpaired"}}}
    return {"required": False, "content": {"application/json": {"schema": schema},
                                           "application/x-www-form-urlencoded": {"schema": schema}}}


def _model_body() -> dict[str, Any]:
    schema = {"type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "format": "binary",
                 "description": "A reference generator: `.pth` state_dict (screened, never unpickled) or `.safetensors`"},
        "options": {"$ref": REF.format(model="ImportOptions")},
    }}
    return {"required": True, "content": {"multipart/form-data": {
        "schema": schema, "encoding": {"options": {"contentType": "application/json"}}}}}


def _rename_body(description: str, nullable: bool) -> dict[str, Any]:
    """``PATCH`` bodies of jobs, datasets and models: the name is the one thing that changes."""
    name: dict[str, Any] = {"type": ["string", "null"] if nullable else "string", "maxLength": 255,
                            "description": description}
    if not nullable:
        name["minLength"] = 1
    schema = {"type": "object", "required": ["name"], "additionalProperties": False, "properties": {"name": name}}
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _rerun_body() -> dict[str, Any]:
    schema = {"type": "object", "additionalProperties": False, "properties": {
        "params": {"type": "object", "description": "Parameters to change; the rest are the job's"},
        "name": {"type": ["string", "null"], "maxLength": 255, "description": "The new job's name (default: the "
                                                                                "job's)"}}}
    return {"required": False, "content": {"application/json": {"schema": schema}}}


def _estimate_body() -> dict[str, Any]:
    schema = {"type": "object", "required": ["kind"], "properties": {
        "kind": {"type": "string", "enum": list(job_kinds())},
        "params": {"type": "object", "description": "The kind's parameters (defaults fill in the rest)"},
        "form": {"type": "boolean", "default": False,
                 "description": "Parameters as a web form sends them (strings; empty means the default)"}}}
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _kind_query() -> dict[str, Any]:
    return _query("kind", {"type": "string", "enum": list(job_kinds())}, "Only jobs of this kind")


#: ``(endpoint, method)`` → what the URL map cannot tell. A new route needs an entry here.
OPERATIONS: dict[tuple[str, str], Operation] = {
    ("api.create_job", "POST"): Operation(
        "jobs", {202: Answer("Accepted: the job, queued (or as it is after `Prefer: wait`)", m.Job,
                             headers={"Location": "The job's URL", **PREFERENCE_APPLIED}),
                 200: Answer("A replayed `Idempotency-Key`: the job the first request created", m.Job,
                             headers={"Idempotent-Replayed": "`true`", **PREFERENCE_APPLIED})},
        {400: "A malformed request (JSON, form or `Idempotency-Key`)", 409: "The `Idempotency-Key` was used for another request",
         413: "The request, a file or an image is too large", 415: "Not multipart/JSON, or a file of the wrong type",
         422: "A parameter or file is invalid; nothing is stored"},
        headers=(IDEMPOTENCY_KEY, PREFER_WAIT), body=_submit_body),
    ("api.list_jobs", "GET"): Operation(
        "jobs", {200: Answer("A page of jobs, newest first", m.JobList)},
        {400: "A bad filter, limit or cursor"}, summary="List jobs, newest first",
        query=(_query("status", {"type": "string", "enum": list(JOB_STATUSES)}, "Only jobs in this state"),
               _kind_query,
               _query("limit", {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}, "Jobs per page"),
               _query("cursor", {"type": "string"}, "The `next_cursor` of the previous page"),
               _query("q", {"type": "string", "maxLength": 255},
                      "Search: jobs whose name contains it (any case), whose id starts with it, in the status it "
                      "names, or of a kind whose name or title contains it"))),
    ("api.update_job", "PATCH"): Operation(
        "jobs", {200: _job_answer("The renamed job")},
        {400: "Not a JSON object, or a field other than `name`", 404: "No such job",
         422: "A name that is too long or has control characters"},
        summary="Rename a job", body=lambda: _rename_body("The job's new name; empty or null clears it", True)),
    ("api.job_outputs_zip", "GET"): Operation(
        "files", {200: Answer("A zip of every output, streamed", binary=("application/zip",))},
        {404: "No such job, or no outputs yet"}, summary="Every output of a job as one zip"),
    ("resources.update_dataset", "PATCH"): Operation(
        "datasets", {200: Answer("The renamed dataset", m.Dataset)},
        {400: "Not a JSON object, or a field other than `name`", 404: "No such dataset",
         422: "An empty or too long name"},
        summary="Rename a dataset", body=lambda: _rename_body("The dataset's new name", False)),
    ("resources.update_model", "PATCH"): Operation(
        "models", {200: Answer("The renamed model", m.Model)},
        {400: "Not a JSON object, or a field other than `name`", 404: "No such model",
         422: "An empty or too long name"},
        summary="Rename a model", body=lambda: _rename_body("The model's new name", False)),
    ("api.get_job", "GET"): Operation(
        "jobs", {200: Answer("The job (after `Prefer: wait`: when it ended, or when the wait ran out)", m.Job,
                             headers=PREFERENCE_APPLIED)}, {404: "No such job"}, summary="One job",
        headers=(PREFER_WAIT,)),
    ("api.job_webhooks", "GET"): Operation(
        "jobs", {200: Answer("The deliveries, newest first", m.WebhookDeliveries)}, {404: "No such job"},
        summary="A job's webhook deliveries and their outcomes"),
    ("stream.job_stream", "GET"): Operation(
        "jobs", {200: Answer("`text/event-stream`: events `status`, `progress`, `preview`, `metrics`, `log`, then "
                             "`completed` (the job) and the end", events=SSE_EVENT)},
        {404: "No such job", 503: "Every slot for open streams is taken (`Retry-After`): poll the job instead"},
        summary="Server-sent events of a job",
        query=(_query("last_event_id", {"type": "string", "pattern": "^[0-9]{1,18}[.][0-9]{1,18}$"},
                      "Resume after this event id (as the `Last-Event-ID` header does)"),),
        headers=({"name": "Last-Event-ID", "in": "header", "required": False, "schema": {"type": "string"},
                  "description": "Resume: only log lines and metric points after this event id are sent"},)),
    ("api.delete_job", "DELETE"): Operation(
        "jobs", {204: Answer("Deleted: the job's files are removed; its row stays as a tombstone (GET answers 410)")},
        {404: "No such job", 409: "The job is queued or running: cancel it first"}, summary="Delete a finished job"),
    ("api.rerun_job", "POST"): Operation(
        "jobs", {202: Answer("The new job, queued", m.Job, headers={"Location": "The new job's URL"})},
        {400: "A malformed body or an unknown field", 404: "No such job",
         409: "The job is queued or running, or one of its inputs is no longer stored",
         422: "A replaced parameter is invalid"},
        summary="Run a job again (same kind, parameters and stored inputs)", body=_rerun_body),
    ("api.estimate_job", "POST"): Operation(
        "jobs", {200: Answer("The estimate", m.Estimate)},
        {400: "A malformed JSON body", 422: "An unknown kind or an invalid parameter"},
        summary="Estimate how long a job would take", body=_estimate_body),
    ("api.cancel_job", "POST"): Operation(
        "jobs", {202: _job_answer("Cancellation requested: a queued job ends now, a running one within a step")},
        {404: "No such job", 409: "The job has already ended"}, summary="Cancel a job"),
    ("api.retry_job", "POST"): Operation(
        "jobs", {202: _job_answer("The job, back in the queue")}, {404: "No such job", 409: "The job is not failed or canceled"}),
    ("api.job_output", "GET"): Operation(
        "files", {200: Answer("The file", binary=FILE_TYPES)}, {404: "No such job or output"},
        summary="An output file", query=(DOWNLOAD,)),
    ("api.job_input", "GET"): Operation(
        "files", {200: Answer("The file", binary=FILE_TYPES)}, {404: "No such job or input"},
        summary="An uploaded input file", query=(DOWNLOAD,)),
    ("api.job_preview", "GET"): Operation(
        "files", {200: Answer("The newest preview", binary=("image/jpeg",))}, {404: "No such job, or no preview yet"},
        summary="The newest preview image",
        query=(_query("step", {"type": "integer"}, "The step of the preview wanted (as in `preview_url`): a cache key; "
                      "the newest preview is sent"),)),
    ("api.job_metrics", "GET"): Operation("jobs", {200: Answer("The series", m.Metrics)}, {404: "No such job"},
                                          summary="A job's loss series"),
    ("api.job_events", "GET"): Operation("jobs", {200: Answer("The events", m.Events)}, {404: "No such job"},
                                         summary="A job's log lines"),
    ("api.list_kinds", "GET"): Operation("discovery", {200: Answer("The kinds", m.KindList)},
                                         summary="Job kinds and their parameter schemas"),
    ("api.openapi", "GET"): Operation("discovery", {200: Answer("An OpenAPI 3.1 document", schema={"type": "object"})},
                                      ),
    ("api.list_workers", "GET"): Operation("workers", {200: Answer("The workers and job counts", m.WorkerList)},
                                           summary="Workers (state, device, current job) and job counts"),
    ("resources.list_datasets", "GET"): Operation("datasets", {200: Answer("The datasets", m.DatasetList)},
                                                  summary="Registered datasets"),
    ("resources.get_dataset", "GET"): Operation("datasets", {200: Answer("The dataset", m.Dataset)},
                                                {404: "No such dataset"}, summary="One dataset"),
    ("resources.delete_dataset", "DELETE"): Operation(
        "datasets", {204: Answer("Deleted, with its files")},
        {404: "No such dataset", 409: "Queued or running jobs use it (their ids are in the message)"},
        summary="Delete a dataset"),
    ("resources.create_dataset", "POST"): Operation(
        "datasets", {201: Answer("The dataset with its validation report", m.Dataset)},
        {400: "A malformed form", 413: "The upload or its contents exceed a limit",
         415: "Not a zip or not images", 422: "A bad layout, no usable images, or both a zip and images"},
        summary="Upload a dataset (one zip, or images)", body=_dataset_body),
    ("resources.create_demo_dataset", "POST"): Operation(
        "datasets", {201: Answer("The demo dataset", m.Dataset)},
        {400: "A malformed JSON body", 422: "An unknown layout"}, summary="Create the one-click demo dataset",
        body=_demo_body),
    ("resources.list_models", "GET"): Operation("models", {200: Answer("The models", m.ModelList)},
                                                summary="Models (trained or imported)"),
    ("resources.get_model", "GET"): Operation("models", {200: Answer("The model", m.Model)}, {404: "No such model"},
                                              summary="One model"),
    ("resources.delete_model", "DELETE"): Operation(
        "models", {204: Answer("Deleted, with its files")},
        {404: "No such model", 409: "Queued or running jobs use it (their ids are in the message)"},
        summary="Delete a model"),
    ("resources.download_model", "GET"): Operation(
        "models", {200: Answer("A zip of safetensors generators and `meta.json`", binary=("application/zip",))},
        {404: "No such model"}, summary="Download a model as a zip"),
    ("resources.import_model", "POST"): Operation(
        "models", {201: Answer("The imported model", m.Model)},
        {400: "`options` is not a JSON object", 413: "The file is too large",
         415: "Not a .pth, .pt or .safetensors file", 422: "No file, or options or weights that do not fit"},
        body=_model_body),
    ("health.healthz", "GET"): Operation(
        "health", {200: Answer("The database and the broker are usable", m.Health),
                   503: Answer("The database or the broker is not usable", m.Health)},
        summary="Database, broker and workers, each with a state"),
}
#: Errors any operation can answer (Host allow-list, database outage); POSTs also refuse other sites.
COMMON_ERRORS = {400: "The `Host` is not one this service answers to",
                 401: "`ATELIER_AUTH=on` and no valid `Authorization: Bearer` token (with `WWW-Authenticate`)",
                 503: "The database is unavailable (with `Retry-After`)"}
#: Operations that answer without a token when auth is on (see web.auth).
PUBLIC_RULES = frozenset({"/healthz", "/api/v1/openapi.json"})
POST_ERRORS = {403: "A browser request from another site's page (`Origin`)"}
TAGS = [("jobs", "Submit, follow, cancel and retry jobs"), ("files", "Inputs, outputs and previews of jobs"),
        ("discovery", "What this service offers"), ("workers", "The worker processes"),
        ("datasets", "Training data"), ("models", "Trained and imported generators"), ("health", "Liveness")]


def undocumented(app: Flask) -> list[str]:
    """``METHOD /path`` of every operation of the URL map that has no entry in :data:`OPERATIONS`."""
    return [f"{meth} {rule.rule}" for rule, meth in documented_operations(app) if (rule.endpoint, meth) not in OPERATIONS]


# -- building -------------------------------------------------------------------------------------
def first_sentence(doc: str | None) -> str | None:
    if not doc:
        return None
    text = " ".join(inspect.cleandoc(doc).split("\n\n")[0].split())
    sentence = re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0].rstrip(".")
    sentence = re.split(r":\s| \(", sentence, maxsplit=1)[0]  # the clause before details
    return _markdown(sentence) or None


def _markdown(text: str) -> str:
    """reStructuredText literals (````x````) as Markdown code (`` `x` ``)."""
    return text.replace("``", "`")


def _json(ref_or_schema: Mapping[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": dict(ref_or_schema)}}


def _error(description: str, retry_after: bool = False) -> dict[str, Any]:
    resp: dict[str, Any] = {"description": description, "content": _json({"$ref": REF.format(model="Error")})}
    if retry_after:
        resp["headers"] = {"Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "integer"}}}
    return resp


def _answer(a: Answer) -> dict[str, Any]:
    resp: dict[str, Any] = {"description": a.description}
    if a.model is not None:
        resp["content"] = _json({"$ref": REF.format(model=a.model.__name__)})
    elif a.binary:
        resp["content"] = {t: {"schema": {"type": "string", "format": "binary"}} for t in a.binary}
    elif a.schema is not None:
        resp["content"] = _json(a.schema)
    elif a.events is not None:
        resp["content"] = {"text/event-stream": {"schema": dict(a.events)}}
    if a.headers:
        resp["headers"] = {name: {"description": d, "schema": {"type": "string"}} for name, d in a.headers.items()}
    return resp


def _path_parameters(rule: Rule) -> list[dict[str, Any]]:
    params = []
    for mt in _RULE_ARG.finditer(rule.rule):
        name = mt.group("name")
        schema = dict(CONVERTERS.get(mt.group("conv") or "default", CONVERTERS["default"]))
        params.append({"name": name, "in": "path", "required": True, "schema": schema,
                       **({"description": PATH_PARAMS[name]} if name in PATH_PARAMS else {})})
    return params


def _operation(app: Flask, rule: Rule, method: str) -> dict[str, Any]:
    view = app.view_functions.get(rule.endpoint)
    doc = inspect.getdoc(view) if view is not None and view.__doc__ else None
    entry = OPERATIONS.get((rule.endpoint, method))
    several = len((rule.methods or set()) - IMPLICIT_METHODS) > 1
    op: dict[str, Any] = {"operationId": rule.endpoint.replace(".", "_") + (f"_{method.lower()}" if several else ""),
                          "summary": (entry.summary if entry else None) or first_sentence(doc) or rule.endpoint,
                          "tags": [entry.tag if entry else "undocumented"]}
    if doc:
        op["description"] = _markdown(doc)
    params = _path_parameters(rule)
    if entry is not None:
        params += [dict(q() if callable(q) else q) for q in entry.query]
        params += [copy.deepcopy(dict(h)) for h in entry.headers]
    if params:
        op["parameters"] = params
    if entry is None:  # listed, so nothing is hidden, and flagged: undocumented() names it
        op["x-undocumented"] = True
        op["responses"] = {"default": {"description": "Not documented yet"}}
        return op
    if entry.body is not None:
        op["requestBody"] = entry.body()
    responses: dict[str, Any] = {str(code): _answer(a) for code, a in sorted(entry.answers.items())}
    errors = {**COMMON_ERRORS, **(POST_ERRORS if method == "POST" else {})}
    if "<job_id>" in rule.rule:
        errors[410] = "The job was deleted (the message says when); only its owner learns that"
    if rule.rule in PUBLIC_RULES:
        errors.pop(401, None)
        op["security"] = []
    for code, when in entry.errors.items():
        common = errors.get(code) if code in COMMON_ERRORS else None
        errors[code] = f"{when}; or {common[0].lower()}{common[1:]}" if common else when
    for code, when in sorted(errors.items()):
        if str(code) not in responses:
            responses[str(code)] = _error(when, retry_after=code == 503)
    op["responses"] = dict(sorted(responses.items()))
    return op


def _tidy(node: Any) -> Any:
    """pydantic's schema, tidied for reading: no generated property titles, no ``default: null`` on a
    field that is never null (an optional key)."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k == "properties" and isinstance(v, dict):
                out[k] = {name: _strip_title(_tidy(p)) for name, p in v.items()}
            else:
                out[k] = _tidy(v)
        types = out.get("type") if isinstance(out.get("type"), list) else [out.get("type")]
        if "default" in out and out["default"] is None and None not in types and "null" not in types:
            del out["default"]
        return out
    if isinstance(node, list):
        return [_tidy(v) for v in node]
    return node


def _strip_title(schema: Any) -> Any:
    if isinstance(schema, dict) and "$ref" not in schema:
        schema.pop("title", None)
    return schema


@cache
def model_schemas() -> dict[str, Any]:
    """The response models' schemas, ``$defs`` lifted into components (built once)."""
    _, top = models_json_schema([(model, "serialization") for model in m.RESPONSE_MODELS], ref_template=REF)
    return {name: _tidy(schema) for name, schema in top.get("$defs", {}).items()}


def to_openapi_31(schema: Any) -> Any:
    """A JSON schema as OpenAPI 3.1 has it: OpenAPI 3.0's ``nullable: true`` becomes a ``null`` type."""
    if isinstance(schema, list):
        return [to_openapi_31(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: to_openapi_31(v) for k, v in schema.items() if k != "nullable"}
    if schema.get("nullable") is True:
        t = out.get("type")
        if isinstance(t, str):
            out["type"] = [t, "null"]
        elif isinstance(t, list) and "null" not in t:
            out["type"] = [*t, "null"]
        elif t is None:
            out = {"anyOf": [out, {"type": "null"}]}
        if "enum" in out and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
    return out


def lift_defs(schema: Mapping[str, Any], name: str, components: dict[str, Any]) -> dict[str, Any]:
    """Add a standalone JSON schema to ``components`` as ``name``: its local ``$defs`` become components
    ``<name>.<def>`` and its ``#/$defs/...`` references point at them."""
    schema = copy.deepcopy(dict(schema))
    defs = schema.pop("$defs", {}) or {}
    rename = {f"#/$defs/{d}": REF.format(model=f"{name}.{d}") for d in defs}

    def fix(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: (rename.get(v, v) if k == "$ref" and isinstance(v, str) else fix(v)) for k, v in node.items()}
        if isinstance(node, list):
            return [fix(v) for v in node]
        return node

    for d, sub in defs.items():
        components[f"{name}.{d}"] = to_openapi_31(fix(sub))
    components[name] = to_openapi_31(fix(schema))
    return components[name]


def _kind_schemas(components: dict[str, Any]) -> None:
    priority = {"type": "string", "enum": list(PRIORITIES), "default": "normal",
                "description": "`high` jobs are served before `normal` ones"}
    job_name = {"type": "string", "maxLength": 255, "description": "A label for the job (the list searches it)"}
    webhook = {"type": "string", "maxLength": 2048, "format": "uri",
               "description": "Where to POST the job's events: an https URL, or http to a loopback host. Each POST is "
                              "signed (Standard Webhooks headers, HMAC-SHA256 with the owner's secret)"}
    events = {"type": "array", "items": {"type": "string", "enum": list(WEBHOOK_EVENTS)}, "uniqueItems": True,
              "default": list(DEFAULT_WEBHOOK_EVENTS), "description": "The events sent to `webhook`"}
    form_events = {"type": "string", "description": "The events sent to `webhook`, comma-separated or a JSON list "
                                                    f"({', '.join(WEBHOOK_EVENTS)}; default `completed`)"}
    for kind in job_kinds().values():
        params_ref = {"$ref": REF.format(model=f"Params_{kind.name}")}
        lift_defs(kind.schema.json_schema(), f"Params_{kind.name}", components)
        kind_prop = {"type": "string", "const": kind.name, "description": kind.title}
        form_props: dict[str, Any] = {"kind": kind_prop, "params": {**params_ref}, "priority": priority,
                                      "name": job_name, "webhook": webhook, "webhook_events": form_events}
        for i in kind.inputs:
            file_schema = {"type": "string", "format": "binary", "description": i.help}
            form_props[i.role] = {"type": "array", "items": file_schema, "description": i.help} if i.multiple else file_schema
        components[f"JobForm_{kind.name}"] = {
            "type": "object", "title": kind.title, "description": kind.description or kind.title,
            "properties": form_props, "required": ["kind"] + [i.role for i in kind.inputs if i.required]}
        if not any(i.required for i in kind.inputs):
            components[f"JobRequest_{kind.name}"] = {
                "type": "object", "title": kind.title, "description": kind.description or kind.title,
                "properties": {"kind": kind_prop, "params": params_ref, "priority": priority, "name": job_name,
                               "webhook": webhook, "webhook_events": events},
                "required": ["kind"]}


def _import_options(components: dict[str, Any]) -> None:
    from core.kinds.gan import IMPORT_SCHEMA

    lift_defs(IMPORT_SCHEMA.json_schema(), "ImportOptions", components)


def openapi_spec(app: Flask | None = None) -> dict[str, Any]:
    """The document for ``app`` (default: the app of the current request)."""
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    components: dict[str, Any] = copy.deepcopy(model_schemas())
    _kind_schemas(components)
    _import_options(components)
    paths: dict[str, dict[str, Any]] = {}
    for rule, method in documented_operations(app):
        paths.setdefault(openapi_path(rule.rule), {})[method.lower()] = _operation(app, rule, method)
    used_tags = {t for p in paths.values() for op in p.values() for t in op.get("tags", ())}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Atelier API", "version": "1",
            "description": "Image-to-image translation jobs: neural style transfer, CycleGAN and pix2pix. Errors are "
                           "`{\"error\", \"field\"}` with a 4xx status; a rejected submission stores nothing. "
                           "Times are ISO 8601 in UTC (`Z`).",
        },
        "tags": [{"name": n, "description": d} for n, d in TAGS if n in used_tags]
                + ([{"name": "undocumented"}] if "undocumented" in used_tags else []),
        "paths": paths,
        "components": {"schemas": dict(sorted(components.items())), "securitySchemes": {"bearer": {
            "type": "http", "scheme": "bearer",
            "description": "With `ATELIER_AUTH=on`: a token from `atelier token create NAME` (with auth off, none)"}}},
        # Optional ({} allowed): with auth off no token is needed; public operations say `security: []`.
        "security": [{"bearer": []}, {}],
    }
