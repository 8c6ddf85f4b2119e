"""JSON views of rows. The job shape is the public API contract: later issues extend it, never break it."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any
from urllib.parse import quote as _quote

from flask import url_for

from core.models import Dataset, Job, Model, Worker, as_utc


def iso(value: dt.datetime | None) -> str | None:
    v = as_utc(value)
    return v.isoformat().replace("+00:00", "Z") if v else None


def quote_path(name: str) -> str:
    """A stored file name as a URL path segment (what url_for would write)."""
    return _quote(name, safe="")


def job_timing(job: Job) -> dict[str, Any]:
    """Queue position and estimated start of a queued job; seconds left of a running one (its smoothed
    rate over recent steps, :mod:`core.estimates`), counted from its last progress write."""
    from core.estimates import queue_info
    from web import deps

    position, start, eta = None, None, None
    if job.status == "queued":
        position, start_at = queue_info(deps.services().sessions, job)
        start = iso(start_at)
    elif job.status == "running":
        left = ((job.metrics or {}).get("timing") or {}).get("eta_s")
        updated = as_utc(job.updated_at)
        if isinstance(left, (int, float)) and updated is not None:
            eta = round(max(0.0, left - (dt.datetime.now(dt.timezone.utc) - updated).total_seconds()), 1)
    return {"queue_position": position, "estimated_start_at": start, "eta_seconds": eta}


def job_json(job: Job) -> dict[str, Any]:
    """The job as the API shows it, now: its row's part, then what depends on the clock and the queue
    (``queue_position``, ``estimated_start_at``, ``eta_seconds``)."""
    return {**job_fixed_json(job), **job_timing(job)}


def job_json_bytes(fixed_prefix: bytes, job: Job) -> bytes:
    """:func:`job_json` as compact JSON, from :func:`fixed_json_prefix` of the same job: the row's part
    is encoded once per change of the row, not once per poll (the encoding was a tenth of a poll)."""
    return fixed_prefix + b"," + json.dumps(job_timing(job), separators=(",", ":")).encode()[1:] + b"\n"


def fixed_json_prefix(job: Job) -> bytes:
    """:func:`job_fixed_json` encoded, without its closing brace (see :func:`job_json_bytes`)."""
    return json.dumps(job_fixed_json(job), separators=(",", ":")).encode()[:-1]


def job_fixed_json(job: Job) -> dict[str, Any]:
    """Everything of :func:`job_json` that depends only on the row: what the job cache keeps with a job
    (:mod:`web.job_cache`); the queue position and times left are added at each request."""
    # One url_for per job, the rest by suffix: a page of 100 jobs built ~10 URLs each through the routing
    # map, 40% of the list's time. The suffixes are this blueprint's routes (tests check they resolve).
    base = url_for("api.get_job", job_id=job.id)
    outputs = [
        {"name": f.name, "url": f"{base}/outputs/{quote_path(f.name)}", "content_type": f.content_type,
         "size": f.size, "sha256": f.sha256}
        for f in job.files if f.direction == "output"
    ]
    inputs = [
        {"role": f.role, "name": f.name, "url": f"{base}/inputs/{quote_path(f.name)}",
         "content_type": f.content_type, "size": f.size}
        for f in job.files if f.direction == "input"
    ]
    preview = f"{base}/preview?step={job.preview_step}" if job.preview_path else None
    return {
        "id": job.id,
        "kind": job.kind,
        "name": job.name,
        "status": job.status,
        "progress": round(job.progress, 6),
        "step": job.step,
        "total_steps": job.total_steps,
        "error": job.error,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "updated_at": iso(job.updated_at),
        "artifacts_removed_at": iso(job.artifacts_removed_at),
        "params": job.params,
        "metrics": job.metrics,
        "outputs": outputs,
        "inputs": inputs,
        "preview_url": preview,
        "preview_step": job.preview_step,
        "attempt": job.attempt,
        "max_attempts": job.max_attempts,
        "priority": job.priority,
        "dispatch_count": job.dispatch_count,
        "worker": job.worker_id,
        "cancel_requested": job.cancel_requested,
        "notices": job.notices,
        "webhook": job.webhook,
        "webhook_events": job.webhook_events or [],
        "urls": {
            "self": base,
            "page": f"/jobs/{job.id}",
            "cancel": f"{base}/cancel",
            "retry": f"{base}/retry",
            "metrics": f"{base}/metrics",
            "events": f"{base}/events",
            "stream": f"{base}/stream",
            "webhooks": f"{base}/webhooks",
            "outputs_zip": f"{base}/outputs.zip",
            **_model_urls((job.metrics or {}).get("model_id")),
        },
    }


def _model_urls(model_id: Any) -> dict[str, str]:
    """A training job that registered a model links to it, to its download and to a translate form
    with it filled in: the next thing its user will want."""
    if not model_id:
        return {}
    return {"model": url_for("resources.get_model", model_id=model_id),
            "model_download": url_for("resources.download_model", model_id=model_id),
            "translate": url_for("pages.kind_form", kind="translate", model=model_id)}


def worker_json(w: Worker, stale_after: float) -> dict[str, Any]:
    last = as_utc(w.last_seen_at)
    age = (dt.datetime.now(dt.timezone.utc) - last).total_seconds() if last else None
    state = w.state if w.state == "stopped" or (age is not None and age <= stale_after) else "lost"
    return {"id": w.id, "hostname": w.hostname, "pid": w.pid, "queues": w.queues, "device": w.device,
            "state": state, "current_job": w.current_job_id, "jobs_done": w.jobs_done, "info": w.info,
            "started_at": iso(w.started_at), "last_seen_at": iso(w.last_seen_at),
            "seconds_since_seen": round(age, 1) if age is not None else None}


def dataset_json(d: Dataset) -> dict[str, Any]:
    return {"id": d.id, "name": d.name, "layout": d.layout, "meta": d.meta, "created_at": iso(d.created_at)}


def model_json(m: Model) -> dict[str, Any]:
    return {"id": m.id, "name": m.name, "family": m.family, "meta": m.meta, "source_job_id": m.source_job_id,
            "created_at": iso(m.created_at), "urls": {"self": url_for("resources.get_model", model_id=m.id),
                     "download": url_for("resources.download_model", model_id=m.id)}}
