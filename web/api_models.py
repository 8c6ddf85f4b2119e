"""The JSON API's response bodies as pydantic models: the one description of each shape, from which the
OpenAPI document (:mod:`web.openapi`) takes its schemas.

The serializers in :mod:`web.serialize` (and the views of :mod:`web.api`, :mod:`web.api_resources`,
:mod:`web.health`) build the bodies; these models describe them. ``tests/test_openapi.py`` validates real
responses against the generated document, so a field added to a serializer without being added here
(every model forbids unknown keys) fails a test instead of going undocumented.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

from core.datasets import LAYOUTS
from core.models import JOB_STATUSES, PRIORITIES
from core.webhooks import EVENTS as WEBHOOK_EVENTS

#: Every time in the API: ISO 8601 in UTC, ending with ``Z`` (``web.serialize.iso``).
UtcTime = Annotated[str, Field(pattern=r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$",
                               json_schema_extra={"format": "date-time"})]
JobStatus = Literal[JOB_STATUSES]  # type: ignore[valid-type]
Priority = Literal[PRIORITIES]  # type: ignore[valid-type]
Layout = Literal[LAYOUTS]  # type: ignore[valid-type]
WebhookEvent = Literal[WEBHOOK_EVENTS]  # type: ignore[valid-type]
JsonObject = dict[str, Any]


class ApiModel(BaseModel):
    """A response body: its keys are exactly the documented ones."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# -- errors ---------------------------------------------------------------------------------------
class ErrorItem(ApiModel):
    """One problem of a request that had several (each naming its field)."""

    field: str | None = Field(description="The parameter, form field or header at fault")
    error: str = Field(description="What is wrong, in a sentence a user understands")


class Error(ApiModel):
    """Every 4xx/5xx answer of the API: a sentence for a person and the field it is about."""

    error: str = Field(description="What went wrong and what to do, in a sentence")
    field: str | None = Field(description="The parameter, form field or header at fault (null: the request)")
    errors: list[ErrorItem] | SkipJsonSchema[None] = Field(
        default=None, description="Every problem found, when a request had several (422); `error`/`field` "
                                  "are the first")


# -- jobs -----------------------------------------------------------------------------------------
class OutputFile(ApiModel):
    name: str = Field(description="File name, unique within the job's outputs")
    url: str = Field(description="Where to fetch it (`?download=1` for an attachment)")
    content_type: str
    size: int = Field(ge=0, description="Bytes")
    sha256: str = Field(description="Hex digest of the content")


class InputFile(ApiModel):
    role: str = Field(description="The upload slot of the kind it was sent under (`content`, `style`, `images`...)")
    name: str
    url: str
    content_type: str = Field(description="What the file decoded to at upload, never the client's header")
    size: int = Field(ge=0, description="Bytes")


class JobUrls(ApiModel):
    self_: str = Field(alias="self", description="This job in the API")
    page: str = Field(description="The job's page for people")
    cancel: str = Field(description="POST: ask the job to stop")
    retry: str = Field(description="POST: run a failed or canceled job again")
    metrics: str
    events: str
    stream: str = Field(description="Server-sent events of the job (status, progress, metrics, log, completed)")
    webhooks: str = Field(description="The job's webhook deliveries")
    outputs_zip: str = Field(description="Every output in one zip (404 until there is one)")
    model: str | SkipJsonSchema[None] = Field(default=None, description="The model a training job registered")
    model_download: str | SkipJsonSchema[None] = Field(default=None, description="That model as a zip")
    translate: str | SkipJsonSchema[None] = Field(default=None, description="A translate form with that model")


class Job(ApiModel):
    """A job: what was asked, its state and progress, its files and its attempts."""

    id: str = Field(json_schema_extra={"format": "uuid"})
    kind: str = Field(description="The job kind (`GET /api/v1/kinds`)")
    name: str | None = Field(description="A label given at submit time or by `PATCH` (null: none)")
    status: JobStatus = Field(description="`queued → running → succeeded | failed | canceled`")
    progress: float = Field(ge=0, le=1, description="Fraction of the steps done")
    step: int = Field(ge=0)
    total_steps: int = Field(ge=0)
    error: str | None = Field(description="Why the job failed, in a sentence (null unless failed)")
    created_at: UtcTime
    started_at: UtcTime | None
    finished_at: UtcTime | None
    updated_at: UtcTime
    artifacts_removed_at: UtcTime | None = Field(description="When retention (`atelier gc`) removed the job's files "
                                                 "(inputs, outputs, preview, checkpoints); null while they are kept")
    params: JsonObject = Field(description="The validated parameters, defaults filled in (the kind's schema)")
    metrics: JsonObject = Field(description="Latest values (losses...) and results such as `model_id`")
    outputs: list[OutputFile]
    inputs: list[InputFile]
    preview_url: str | None = Field(description="The newest preview image (null until there is one)")
    preview_step: int | None = Field(description="The step the preview shows")
    attempt: int = Field(ge=0, description="Attempts started so far")
    max_attempts: int = Field(ge=0)
    priority: Priority
    dispatch_count: int = Field(ge=0, description="Broker messages sent for the job")
    worker: str | None = Field(description="The worker (`node:pid`) holding the job")
    cancel_requested: bool
    notices: list[str] = Field(description="Statements shown on the job page (e.g. warnings found while it ran)")
    webhook: str | None = Field(description="Where the job's events are POSTed (null: nowhere)")
    webhook_events: list[WebhookEvent] = Field(description="The events sent to `webhook`")
    queue_position: int | None = Field(ge=1, description="A queued job's place in the queue (1: next); null "
                                       "unless queued")
    estimated_start_at: UtcTime | None = Field(description="When a queued job should start, from the remaining "
                                               "time of the jobs ahead and the live workers (null: unknown or "
                                               "not queued)")
    eta_seconds: float | None = Field(ge=0, description="Seconds a running job has left, from its rate over "
                                      "recent steps (null: not running, or too early to tell)")
    urls: JobUrls


class WebhookDelivery(ApiModel):
    """One POST of a job event to its webhook, and how it went."""

    id: int
    event: WebhookEvent
    url: str
    status: Literal["pending", "delivered", "failed"] = Field(
        description="`pending`: not sent yet or another attempt is scheduled (`next_attempt_at`)")
    attempts: int = Field(ge=0)
    response_code: int | None = Field(description="The receiver's HTTP status at the last attempt (null: no answer)")
    error: str | None = Field(description="Why the last attempt failed")
    created_at: UtcTime
    next_attempt_at: UtcTime | None
    finished_at: UtcTime | None


class WebhookDeliveries(ApiModel):
    """A job's webhook deliveries, newest first. Each is signed with the owner's secret (Standard Webhooks
    headers `webhook-id`, `webhook-timestamp`, `webhook-signature`)."""

    job_id: str
    webhook: str | None
    webhook_events: list[WebhookEvent]
    deliveries: list[WebhookDelivery]


class JobList(ApiModel):
    """A page of jobs, newest first."""

    jobs: list[Job]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page (null on the last)")


class Event(ApiModel):
    at: UtcTime
    level: str = Field(description="`info`, `warning` or `error`")
    message: str


class Events(ApiModel):
    """A job's log lines, oldest first (the newest 200)."""

    events: list[Event]


class Metrics(ApiModel):
    """A job's loss series."""

    job_id: str
    latest: JsonObject = Field(description="The job's latest metrics (as in the job)")
    series: dict[str, list[Annotated[list[float], Field(min_length=2, max_length=2)]]] = Field(
        description="`{name: [[step, value], ...]}`, thinned to at most 2000 points per series")


# -- discovery ------------------------------------------------------------------------------------
class KindInput(ApiModel):
    role: str = Field(description="The multipart field name of this upload slot")
    help: str
    required: bool
    multiple: bool = Field(description="Several files under the same field name")
    accept: Literal["image", "file"] = Field(description="`image`: decoded and checked at submit; `file`: opaque")


class Kind(ApiModel):
    name: str
    title: str
    description: str
    params: JsonObject = Field(description="The kind's parameter schema (JSON Schema)")
    inputs: list[KindInput]


class Estimate(ApiModel):
    """How long a job would take once a worker starts it (``POST /api/v1/estimate``)."""

    seconds: float | None = Field(ge=0, description="Estimated seconds (null: no estimate for this kind or these "
                                  "settings, e.g. a training counted in epochs)")
    device: Literal["cpu", "cuda"] = Field(description="The device the estimate is for (the job's, else a live "
                                           "worker's)")
    basis: Literal["measured", "default", "unknown"] = Field(
        description="`measured`: from the speed a worker recorded for this kind and device; `default`: a built-in "
                    "first guess (no job of this kind has run yet); `unknown`: no estimate")
    steps: int = Field(ge=0, description="The job's steps (0: not known before it starts)")
    text: str = Field(description="The estimate in words, as the form shows it (\"about 3 min on cpu\")")


class KindList(ApiModel):
    """The job kinds and their parameter schemas."""

    kinds: list[Kind]


class Worker(ApiModel):
    """A worker process (`node:pid`) as last heard from."""

    id: str
    hostname: str
    pid: int
    queues: str
    device: str
    state: Literal["online", "busy", "stopped", "lost"] = Field(
        description="`lost`: not heard from within three heartbeats (at least 30 s)")
    current_job: str | None
    jobs_done: int = Field(ge=0)
    info: JsonObject = Field(description="What the worker reported at start (e.g. weights availability)")
    started_at: UtcTime | None
    last_seen_at: UtcTime | None
    seconds_since_seen: float | None


class WorkerList(ApiModel):
    """The workers and how many jobs are in each state."""

    workers: list[Worker]
    jobs: dict[str, int] = Field(description="Job counts by status (statuses with no job are absent)")


# -- datasets and models --------------------------------------------------------------------------
class Dataset(ApiModel):
    """A registered training dataset."""

    id: str
    name: str
    layout: Layout
    meta: JsonObject = Field(description="The validation report: counts, rejected files and why")
    created_at: UtcTime


class DatasetList(ApiModel):
    datasets: list[Dataset]


class ModelUrls(ApiModel):
    self_: str = Field(alias="self")
    download: str = Field(description="The generators (safetensors) and `meta.json` as one zip")


class Model(ApiModel):
    """A generator model, trained here or imported."""

    id: str
    name: str
    family: str = Field(description="The training kind that made it, or `imported`")
    meta: JsonObject = Field(description="Architecture options, directions, size")
    source_job_id: str | None
    created_at: UtcTime
    urls: ModelUrls


class ModelList(ApiModel):
    models: list[Model]


# -- health ---------------------------------------------------------------------------------------
class DatabaseCheck(ApiModel):
    state: Literal["ok", "error"]
    dialect: str | SkipJsonSchema[None] = None
    revision: str | SkipJsonSchema[None] = None
    detail: str | SkipJsonSchema[None] = None


class BrokerCheck(ApiModel):
    state: Literal["ok", "error"]
    transport: str | SkipJsonSchema[None] = None
    detail: str | SkipJsonSchema[None] = None


class WorkersCheck(ApiModel):
    state: Literal["ok", "degraded", "none", "error"] = Field(
        description="`degraded`: live workers without usable weights; `none`: no live worker")
    live: int | SkipJsonSchema[None] = Field(default=None, ge=0)
    workers: list[Worker]
    detail: str | SkipJsonSchema[None] = None


class ExposureCheck(ApiModel):
    state: Literal["ok", "warn"]
    bound: str = Field(description="The address the service is bound to")
    allowed_hosts: list[str]
    detail: str | SkipJsonSchema[None] = None


class Health(ApiModel):
    """The database, the broker and the workers, each with a state."""

    status: Literal["ok", "error"] = Field(description="`ok` when the database and the broker are usable")
    database: DatabaseCheck
    broker: BrokerCheck
    workers: WorkersCheck
    exposure: ExposureCheck


#: Every model the document names, in the order its components list them.
RESPONSE_MODELS: tuple[type[ApiModel], ...] = (
    Error, Job, JobList, Events, Metrics, KindList, WorkerList, Dataset, DatasetList, Model, ModelList, Health,
    WebhookDeliveries, Estimate,
)
