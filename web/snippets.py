"""What the job page offers programs: the same job as a ``curl`` command and a Python snippet (the kind,
its parameters and its file fields exactly as ``POST /api/v1/jobs`` takes them), and the job's webhook
deliveries. Built from the job's JSON, so the snippets say what the API says."""

from __future__ import annotations

import json
import pprint
from typing import Any

from core import webhooks
from core.models import Job
from core.services import Services


def _submit_fields(job: dict[str, Any]) -> dict[str, Any]:
    """The submit-level fields of the job besides kind and params (only those that differ from defaults)."""
    fields: dict[str, Any] = {}
    if job.get("priority") and job["priority"] != "normal":
        fields["priority"] = job["priority"]
    if job.get("name"):
        fields["name"] = job["name"]
    if job.get("webhook"):
        fields["webhook"] = job["webhook"]
        fields["webhook_events"] = job.get("webhook_events") or list(webhooks.DEFAULT_EVENTS)
    return fields


def sq(text: str) -> str:
    """Single-quoted for a POSIX shell, always (``-F 'style=@painting.jpg'`` reads the same for every field)."""
    return "'" + text.replace("'", "'\"'\"'") + "'"


def curl_snippet(job: dict[str, Any], base_url: str, auth: bool) -> str:
    url = base_url.rstrip("/") + "/api/v1/jobs"
    params = json.dumps(job.get("params") or {}, separators=(",", ":"))
    lines = [f"curl -X POST {sq(url)}"]
    if auth:
        lines.append('-H "Authorization: Bearer $ATELIER_TOKEN"')
    lines.append("-H 'Prefer: wait=60'")
    inputs = job.get("inputs") or []
    extra = _submit_fields(job)
    if inputs:
        lines.append("-F " + sq(f"kind={job['kind']}"))
        lines.append("-F " + sq(f"params={params}"))
        for name, value in extra.items():
            value = ",".join(value) if isinstance(value, list) else value
            lines.append("-F " + sq(f"{name}={value}"))
        for i in inputs:
            lines.append("-F " + sq(f"{i['role']}=@{i['name']}"))
    else:
        body = json.dumps({"kind": job["kind"], "params": job.get("params") or {}, **extra}, separators=(",", ":"))
        lines.append("-H 'Content-Type: application/json'")
        lines.append("-d " + sq(body))
    return " \\\n     ".join(lines)


def python_snippet(job: dict[str, Any], base_url: str, auth: bool) -> str:
    url = base_url.rstrip("/") + "/api/v1/jobs"
    inputs = job.get("inputs") or []
    extra = _submit_fields(job)
    bearer = ", 'Authorization': 'Bearer ' + os.environ['ATELIER_TOKEN']" if auth else ""
    out = ["import json", *(["import os"] if auth else []), "", "import requests", ""]
    out.append(f"params = {pprint.pformat(job.get('params') or {}, sort_dicts=False, width=100)}")
    if inputs:
        fields = {"kind": job["kind"], **{k: (",".join(v) if isinstance(v, list) else v) for k, v in extra.items()}}
        out.append("data = {")
        out += [f"    {k!r}: {v!r}," for k, v in fields.items()]
        out += ["    'params': json.dumps(params),", "}", "files = ["]
        out += [f"    ({i['role']!r}, open({i['name']!r}, 'rb'))," for i in inputs]
        out += ["]", f"resp = requests.post({url!r}, data=data, files=files,"]
    else:
        out.append("body = {")
        out += [f"    {k!r}: {v!r}," for k, v in {"kind": job["kind"], **extra}.items()]
        out += ["    'params': params,", "}", f"resp = requests.post({url!r}, json=body,"]
    out.append(f"                     headers={{'Prefer': 'wait=60'{bearer}}}, timeout=90)")
    out += ["resp.raise_for_status()", "job = resp.json()  # finished if it ended within 60 s (Prefer: wait=60)",
            "print(job['status'], job['urls']['self'])"]
    return "\n".join(out)


def programs_context(services: Services, job: Job, data: dict[str, Any], base_url: str) -> dict[str, Any]:
    """Template variables of the job page's "For programs" panel and webhook deliveries table."""
    auth = bool(getattr(services.settings, "auth_enabled", False))
    return {"snippet_curl": curl_snippet(data, base_url, auth), "snippet_python": python_snippet(data, base_url, auth),
            "deliveries": [webhooks.delivery_json(d) for d in webhooks.deliveries(services.sessions, job.id)]
            if job.webhook else []}
