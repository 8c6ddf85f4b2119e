"""The OpenAPI document is generated, complete and true:

- every operation of the URL map under ``/api/v1`` and ``/healthz`` is in it, with an entry of its own;
- real responses (Flask test client, SQLite) validate against its schemas (JSON Schema 2020-12);
- it is valid OpenAPI 3.1;
- schemathesis, run against a real ``atelier serve``, finds no 5xx and no response off the schema;
- ``/api/docs`` renders it for people.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy.exc
from jsonschema import Draft202012Validator, FormatChecker
from sqlalchemy import update

from core import resources
from core.images import encode_png
from core.jobs import repository as repo
from core.jobs.runner import run_job
from core.kinds.registry import job_kinds
from core.models import Job, Worker, utcnow
from core.services import Services
from tests.conftest import png_bytes
from tests.fake_kind import echo_kind  # noqa: F401  (fixture)
from web.openapi import OPERATIONS, lift_defs, undocumented

pytestmark = pytest.mark.usefixtures("echo_kind")

IGNORED_METHODS = {"HEAD", "OPTIONS"}
UTC_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def spec_of(client: Any) -> dict[str, Any]:
    resp = client.get("/api/v1/openapi.json")
    assert resp.status_code == 200 and resp.mimetype == "application/json"
    return resp.get_json()


# -- completeness ---------------------------------------------------------------------------------
def test_every_route_of_the_url_map_is_in_the_document(app, client) -> None:  # type: ignore[no-untyped-def]
    spec = spec_of(client)
    # From the URL map directly (not through the generator's own helpers).
    expected = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/v1") or rule.rule == "/healthz":
            path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
            for method in rule.methods - IGNORED_METHODS:
                expected.add((path, method.lower()))
                op = spec["paths"].get(path, {}).get(method.lower(), {})
                in_path = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
                assert in_path == set(rule.arguments), f"path parameters of {method} {rule.rule}"
    documented = {(path, method) for path, ops in spec["paths"].items() for method in ops}
    assert expected - documented == set(), "routes missing from the OpenAPI document"
    assert documented - expected == set(), "operations in the document that no route serves"
    assert len(expected) >= 20
    assert undocumented(app) == [], "routes without an entry in web.openapi.OPERATIONS"
    served = {(r.endpoint, m) for r in app.url_map.iter_rules() for m in r.methods - IGNORED_METHODS}
    assert set(OPERATIONS) - served == set(), "entries in web.openapi.OPERATIONS for routes that do not exist"
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            assert op["summary"] and op["responses"] and op["tags"], (method, path)
            assert "x-undocumented" not in op, (method, path)


def test_a_route_without_an_entry_is_detected(app, client) -> None:  # type: ignore[no-untyped-def]
    app.add_url_rule("/api/v1/gadgets/<int:gadget_id>", "api_gadget", lambda gadget_id: {"id": gadget_id},
                     methods=["GET", "DELETE"])
    assert undocumented(app) == ["DELETE /api/v1/gadgets/<int:gadget_id>", "GET /api/v1/gadgets/<int:gadget_id>"]
    ops = spec_of(client)["paths"]["/api/v1/gadgets/{gadget_id}"]
    assert set(ops) == {"get", "delete"} and ops["get"]["x-undocumented"] is True
    assert ops["get"]["parameters"] == [{"name": "gadget_id", "in": "path", "required": True,
                                         "schema": {"type": "integer", "minimum": 0}}]


def test_the_document_describes_submission_from_the_kinds_schemas(app, client) -> None:  # type: ignore[no-untyped-def]
    spec = spec_of(client)
    op = spec["paths"]["/api/v1/jobs"]["post"]
    assert op["summary"] == "Submit a job"  # the view's docstring
    form = op["requestBody"]["content"]["multipart/form-data"]
    mapping = form["schema"]["discriminator"]["mapping"]
    assert set(mapping) == set(job_kinds()) and "echo" in mapping
    echo = spec["components"]["schemas"]["JobForm_echo"]
    assert echo["required"] == ["kind", "image"] and echo["properties"]["image"]["format"] == "binary"
    assert echo["properties"]["params"] == {"$ref": "#/components/schemas/Params_echo"}
    assert spec["components"]["schemas"]["Params_echo"]["properties"]["steps"]["maximum"] == 1000
    json_kinds = op["requestBody"]["content"]["application/json"]["schema"]["discriminator"]["mapping"]
    assert "echo" not in json_kinds and "cyclegan_train" in json_kinds, "JSON bodies: only kinds without uploads"
    assert {p["name"] for p in op["parameters"]} == {"Idempotency-Key", "Prefer"}
    assert set(op["responses"]) >= {"200", "202", "400", "409", "413", "415", "422", "503"}
    listing = {p["name"]: p for p in spec["paths"]["/api/v1/jobs"]["get"]["parameters"]}
    assert set(listing) == {"status", "kind", "limit", "cursor", "q"} and "echo" in listing["kind"]["schema"]["enum"]
    assert {p["name"] for p in spec["paths"]["/api/v1/jobs/{job_id}/outputs/{name}"]["get"]["parameters"]} == {
        "job_id", "name", "download"}
    assert "step" in {p["name"] for p in spec["paths"]["/api/v1/jobs/{job_id}/preview"]["get"]["parameters"]}
    file_answer = spec["paths"]["/api/v1/jobs/{job_id}/outputs/{name}"]["get"]["responses"]["200"]["content"]
    assert file_answer["image/png"]["schema"] == {"type": "string", "format": "binary"}


def test_a_kind_schema_s_defs_and_nullables_become_openapi_3_1_components() -> None:
    components: dict[str, Any] = {}
    lifted = lift_defs({"type": "object", "$defs": {"Colour": {"type": "string", "enum": ["red", "blue"]}},
                        "properties": {"colour": {"$ref": "#/$defs/Colour"},
                                       "size": {"type": "integer", "nullable": True},
                                       "mode": {"type": "string", "enum": ["a", "b"], "nullable": True}}},
                       "Params_paint", components)
    assert set(components) == {"Params_paint", "Params_paint.Colour"} and lifted is components["Params_paint"]
    assert lifted["properties"]["colour"] == {"$ref": "#/components/schemas/Params_paint.Colour"}
    assert lifted["properties"]["size"] == {"type": ["integer", "null"]}
    assert lifted["properties"]["mode"] == {"type": ["string", "null"], "enum": ["a", "b", None]}


def test_the_document_is_valid_openapi_3_1(client) -> None:
    validator = pytest.importorskip("openapi_spec_validator", reason="openapi-spec-validator is not installed")
    spec = spec_of(client)
    assert spec["openapi"].startswith("3.1")
    validator.validate(spec)  # raises with the first problem


# -- real responses against the document ----------------------------------------------------------
class Contract:
    """Validates responses against the document: the operation is found by matching the request's path
    against the document's path templates; the body against the schema of its status."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.templates = [(re.compile("^" + re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(p)) + "$"), p)
                          for p in spec["paths"]]
        self.seen: set[tuple[str, str, str]] = set()

    def operation(self, method: str, url: str) -> tuple[str, dict[str, Any]]:
        path = url.split("?", 1)[0]
        matches = [t for rx, t in self.templates if rx.match(path)]
        assert matches, f"{path} is not in the document"
        template = min(matches, key=lambda t: t.count("{"))  # /datasets/demo before /datasets/{dataset_id}
        return template, self.spec["paths"][template][method.lower()]

    def check(self, resp: Any, method: str, url: str) -> Any:
        template, op = self.operation(method, url)
        status = str(resp.status_code)
        assert status in op["responses"], f"{method} {template} answered {status}, not documented"
        content = op["responses"][status].get("content", {})
        self.seen.add((method.upper(), template, status))
        if resp.status_code == 204:  # No Content: no body, and none documented
            assert not resp.data and not content, f"{method} {template} 204 has a body"
            return resp
        if resp.mimetype == "application/json":
            assert "application/json" in content, f"{method} {template} {status}: JSON not documented"
            schema = {**content["application/json"]["schema"], "components": self.spec["components"]}
            validator = Draft202012Validator(schema, format_checker=FormatChecker())
            errors = sorted(validator.iter_errors(resp.get_json()), key=lambda e: list(e.absolute_path))
            assert not errors, f"{method} {url} {status}: " + "; ".join(
                f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:5])
        elif resp.mimetype == "text/event-stream":  # each event against the documented event
            assert resp.mimetype in content, f"{method} {template} {status}: {resp.mimetype} not documented"
            validator = Draft202012Validator(content[resp.mimetype]["schema"], format_checker=FormatChecker())
            for block in resp.get_data(as_text=True).split("\n\n"):
                fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
                if "data" in fields:
                    errors = list(validator.iter_errors(fields))
                    assert not errors, f"{method} {url}: {errors[0].message}"
        else:
            assert resp.mimetype in content, f"{method} {template} {status}: {resp.mimetype} not documented"
            assert content[resp.mimetype]["schema"].get("format") == "binary"
        return resp


def test_real_responses_match_the_document(client, services: Services, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    c = Contract(spec_of(client))

    def get(url: str) -> Any:
        return c.check(client.get(url), "GET", url)

    def post(url: str, **kw: Any) -> Any:
        return c.check(client.post(url, **kw), "POST", url)

    def submit(params: dict[str, Any], headers: dict[str, str] | None = None, image: bytes | None = None) -> Any:
        data = {"kind": "echo", "params": json.dumps(params), "image": (io.BytesIO(image or png_bytes()), "cat.png")}
        return post("/api/v1/jobs", data=data, content_type="multipart/form-data", headers=headers or {})

    # jobs: submit (202, replayed 200), run, read, files, list, events, metrics
    job = submit({"steps": 5}, headers={"Idempotency-Key": "k-1"}).get_json()
    assert submit({"steps": 5}, headers={"Idempotency-Key": "k-1"}).status_code == 200
    assert submit({"steps": 6}, headers={"Idempotency-Key": "k-1"}).status_code == 409
    assert run_job(services, job["id"], "w").status == "succeeded"
    done = get(f"/api/v1/jobs/{job['id']}").get_json()
    assert done["status"] == "succeeded" and done["outputs"] and done["inputs"] and done["preview_url"]
    assert get(done["outputs"][0]["url"]).status_code == 200
    assert get(done["outputs"][0]["url"] + "?download=1").status_code == 200
    assert get(done["inputs"][0]["url"]).status_code == 200
    assert get(done["preview_url"]).status_code == 200
    queued = submit({"steps": 3}).get_json()
    assert get("/api/v1/jobs").get_json()["jobs"][0]["id"] == queued["id"]
    assert get("/api/v1/jobs?limit=1").get_json()["next_cursor"]
    assert get("/api/v1/jobs?status=succeeded&kind=echo").status_code == 200
    events = get(f"/api/v1/jobs/{job['id']}/events").get_json()["events"]
    assert events and all(UTC_TIME.match(e["at"]) for e in events), "event times are UTC with Z"
    assert get(f"/api/v1/jobs/{job['id']}/metrics").get_json()["series"]["loss"]
    # for programs: Prefer: wait, the event stream, webhook fields and deliveries
    held = c.check(client.get(f"/api/v1/jobs/{job['id']}", headers={"Prefer": "wait=5"}), "GET", f"/api/v1/jobs/{job['id']}")
    assert held.headers["Preference-Applied"] == "wait=5"
    stream = get(f"/api/v1/jobs/{job['id']}/stream")
    assert stream.mimetype == "text/event-stream" and b"event: completed" in stream.data
    assert get("/api/v1/jobs/nope/stream").status_code == 404
    hooked = post("/api/v1/jobs", data={"kind": "echo", "params": "{}", "image": (io.BytesIO(png_bytes()), "c.png"),
                                        "webhook": "http://127.0.0.1:9/hook", "webhook_events": "start,completed"},
                  content_type="multipart/form-data").get_json()
    assert hooked["webhook_events"] == ["start", "completed"]
    assert get(f"/api/v1/jobs/{hooked['id']}/webhooks").get_json()["deliveries"] == []
    assert get("/api/v1/jobs/nope/webhooks").status_code == 404
    # names, search, the outputs as one zip
    def patch(url: str, **kw: Any) -> Any:
        return c.check(client.patch(url, **kw), "PATCH", url)

    assert patch(f"/api/v1/jobs/{job['id']}", json={"name": "first try"}).get_json()["name"] == "first try"
    assert patch(f"/api/v1/jobs/{job['id']}", json={"colour": "red"}).status_code == 400
    assert patch("/api/v1/jobs/nope", json={"name": "x"}).status_code == 404
    assert patch(f"/api/v1/jobs/{job['id']}", json={"name": "x" * 300}).status_code == 422
    assert [j["id"] for j in get("/api/v1/jobs?q=FIRST").get_json()["jobs"]] == [job["id"]]
    assert get(f"/api/v1/jobs/{job['id']}/outputs.zip").mimetype == "application/zip"
    assert get(f"/api/v1/jobs/{queued['id']}/outputs.zip").status_code == 404
    # cancel, fail, retry
    assert post(f"/api/v1/jobs/{queued['id']}/cancel").status_code == 202
    failing = submit({"outcome": "fail"}).get_json()
    assert run_job(services, failing["id"], "w").status == "failed"
    assert get(f"/api/v1/jobs/{failing['id']}").get_json()["error"]
    assert post(f"/api/v1/jobs/{failing['id']}/retry").status_code == 202
    # run again (a new job, same inputs) and estimates
    again = post(f"/api/v1/jobs/{job['id']}/rerun", json={"params": {"steps": 3}})
    assert again.status_code == 202 and again.get_json()["params"]["steps"] == 3
    assert post(f"/api/v1/jobs/{job['id']}/rerun", json={"params": {"steps": 0}}).status_code == 422
    assert post(f"/api/v1/jobs/{again.get_json()['id']}/rerun").status_code == 409
    assert post("/api/v1/estimate", json={"kind": "cyclegan_train", "params": {"dataset": "x", "size": 64}}
                ).get_json()["seconds"] > 0
    assert post("/api/v1/estimate", json={"kind": "style_transfer", "params": {"size": 0}}).status_code == 422

    # discovery, workers, health
    assert {k["name"] for k in get("/api/v1/kinds").get_json()["kinds"]} >= {"echo", "style_transfer"}
    assert get("/api/v1/openapi.json").status_code == 200
    repo.register_worker(services.sessions, Worker(
        id="w1@host:42", hostname="host", pid=42, queues="gpu", device="cpu", state="online",
        info={"vgg19_weights_ok": True}, started_at=utcnow(), last_seen_at=utcnow()))
    workers = get("/api/v1/workers").get_json()
    assert workers["workers"][0]["id"] == "w1@host:42" and workers["jobs"]
    health = get("/healthz")
    assert health.status_code in (200, 503) and health.get_json()["workers"]["live"] == 1

    # datasets and models
    dataset = post("/api/v1/datasets/demo", json={"layout": "unpaired"}).get_json()
    assert get("/api/v1/datasets").get_json()["datasets"][0]["id"] == dataset["id"]
    assert get(f"/api/v1/datasets/{dataset['id']}").get_json()["meta"]["demo"] is True
    assert get("/api/v1/models").get_json() == {"models": []}
    src = services.settings.data_dir / "model-src"
    src.mkdir(parents=True)
    (src / "meta.json").write_text('{"netG": "resnet_9blocks"}')
    model = resources.add_model(services, name="m", family="cyclegan_train", source_dir=src,
                                meta={"netG": "resnet_9blocks"}, source_job_id=job["id"])
    assert get("/api/v1/models").get_json()["models"][0]["id"] == model.id
    assert get(f"/api/v1/models/{model.id}").get_json()["urls"]["download"]
    assert get(f"/api/v1/models/{model.id}/download").mimetype == "application/zip"
    assert patch(f"/api/v1/models/{model.id}", json={"name": "monet"}).get_json()["name"] == "monet"
    assert patch(f"/api/v1/models/{model.id}", json={"name": " "}).status_code == 422
    assert patch("/api/v1/models/nope", json={"name": "x"}).status_code == 404
    assert patch(f"/api/v1/datasets/{dataset['id']}", json={"name": "photos"}).get_json()["name"] == "photos"
    assert patch(f"/api/v1/datasets/{dataset['id']}", json={"layout": "paired"}).status_code == 400
    assert patch("/api/v1/datasets/nope", json={"name": "x"}).status_code == 404
    with services.sessions.begin() as s:  # a training job that registered a model links to it
        s.execute(update(Job).where(Job.id == job["id"]).values(metrics={"model_id": model.id, "loss": 0.5}))
    assert set(get(f"/api/v1/jobs/{job['id']}").get_json()["urls"]) >= {"model", "model_download", "translate"}

    # errors: every one an Error body
    assert get("/api/v1/jobs/nope").status_code == 404
    assert get("/api/v1/jobs/nope/events").status_code == 404
    assert get(f"/api/v1/jobs/{job['id']}/outputs/nope.png").status_code == 404
    assert get(f"/api/v1/jobs/{queued['id']}/preview").status_code == 404
    assert get("/api/v1/datasets/nope").status_code == 404
    assert get("/api/v1/models/nope").status_code == 404
    assert get("/api/v1/jobs?limit=0").status_code == 400
    assert post(f"/api/v1/jobs/{job['id']}/cancel").status_code == 409
    assert post(f"/api/v1/jobs/{job['id']}/retry").status_code == 409
    bad = submit({"steps": 0})
    assert bad.status_code == 422 and bad.get_json()["field"] == "steps"
    assert submit({}, image=b"not an image").status_code == 415
    assert post("/api/v1/jobs", data={"kind": "echo", "params": "{oops"}, content_type="multipart/form-data").status_code == 400
    assert post("/api/v1/jobs", data=b"kind=echo", content_type="text/plain").status_code == 415
    assert post("/api/v1/jobs", json={"kind": "cyclegan_train", "params": {"dataset": "nope"}}).status_code == 422
    assert post("/api/v1/datasets/demo", json={"layout": "sideways"}).status_code == 422
    assert post("/api/v1/datasets", data={"layout": "unpaired"}, content_type="multipart/form-data").status_code == 422
    assert post("/api/v1/models", data={}, content_type="multipart/form-data").status_code == 422
    assert post("/api/v1/jobs", data={"kind": "echo"}, headers={"Origin": "https://evil.example"}).status_code == 403
    assert c.check(client.get("/api/v1/kinds", headers={"Host": "evil.example"}), "GET", "/api/v1/kinds").status_code == 400

    # deletion: an active job is a 409, a finished one leaves a tombstone (410); datasets and models go
    def delete(url: str) -> Any:
        return c.check(client.delete(url), "DELETE", url)

    assert delete(f"/api/v1/jobs/{hooked['id']}").status_code == 409
    assert delete(f"/api/v1/jobs/{job['id']}").status_code == 204
    assert get(f"/api/v1/jobs/{job['id']}").status_code == 410
    assert delete("/api/v1/jobs/nope").status_code == 404
    assert delete(f"/api/v1/models/{model.id}").status_code == 204
    assert delete(f"/api/v1/datasets/{dataset['id']}").status_code == 204
    assert delete("/api/v1/datasets/nope").status_code == 404
    assert delete("/api/v1/models/nope").status_code == 404

    def down(*_a: Any, **_kw: Any) -> None:
        raise sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("connection refused"))

    monkeypatch.setattr(repo, "list_jobs", down)
    outage = get("/api/v1/jobs")
    assert outage.status_code == 503 and outage.headers["Retry-After"]

    answered = {(m, p) for m, p, _ in c.seen}
    json_ops = {(m.upper(), p) for p, ops in c.spec["paths"].items() for m in ops}
    assert json_ops - answered == set(), "every operation was exercised"


# -- the page -------------------------------------------------------------------------------------
def test_api_docs_page_renders_the_document_from_its_own_script(client) -> None:  # type: ignore[no-untyped-def]
    resp = client.get("/api/docs")
    assert resp.status_code == 200 and resp.mimetype == "text/html"
    page = resp.get_data(as_text=True)
    assert '<script src="/static/api_docs.js" defer></script>' in page
    assert 'data-spec-url="/api/v1/openapi.json"' in page
    assert '<a href="/api/docs" aria-current="page">API</a>' in page, "the API link in the navigation"
    assert "<script>" not in page and "style=" not in page, "no inline code (CSP script-src 'self')"
    assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
    script = client.get("/static/api_docs.js")
    assert script.status_code == 200 and b"data-spec-url" in script.data
    assert not re.search(rb"\.innerHTML\s*\+?=|insertAdjacentHTML|document\.write|https?://", script.data), \
        "no markup from the document, nothing from another origin"
    assert '<a href="/api/docs">API</a>' in client.get("/jobs").get_data(as_text=True)


# -- schemathesis against a real server -----------------------------------------------------------
#: Examples per operation and phase; ``TEST_FUZZ_EXAMPLES=200`` for a deeper run than the suite's.
FUZZ_EXAMPLES = int(os.environ.get("TEST_FUZZ_EXAMPLES", "10"))


def _quick_style_transfer(ctx: Any) -> None:
    """Stands in for the engine while the test plays the worker: the API is under test, not the
    optimisation (a real run costs ~15 s on 2 cores). Same reports and files as a real run."""
    [content] = ctx.inputs_for("content")
    img = ctx.load_image(content)
    total = int(ctx.params["steps"])
    for step in range(1, total + 1):
        ctx.progress.report(step, total, {"loss": 1.0 / step})
        if ctx.progress.preview_every and step % ctx.progress.preview_every == 0:
            ctx.progress.preview(step, lambda: img)
    ctx.save_output("result.png", encode_png(img), "image/png")


def _seed_the_server(api: Any, env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """A succeeded job (outputs, preview, metrics), a queued and a canceled one, a dataset and a model,
    so the fuzzer's requests reach past the 404s: ``{path parameter: known values}``."""
    import requests

    from core.kinds import registry
    from core.services import build_services
    from core.settings import load_settings

    files = [("content", ("photo.png", png_bytes(24, 24), "image/png")),
             ("style", ("painting.png", png_bytes(24, 24, (20, 90, 200)), "image/png"))]
    done, queued, canceled = (api.submit("style_transfer", {"size": 16, "steps": 5}, files)["id"] for _ in range(3))
    assert requests.post(f"{api.base}/api/v1/jobs/{canceled}/cancel", timeout=10).status_code == 202
    quick = {k.name: k for k in registry.job_kinds().values()}
    quick["style_transfer"] = dataclasses.replace(quick["style_transfer"], run=_quick_style_transfer)
    monkeypatch.setattr(registry, "builtin_kinds", lambda: tuple(quick.values()))
    registry.job_kinds.cache_clear()
    services = build_services(load_settings(env))
    try:
        assert run_job(services, done, "test-worker").status == "succeeded"
        src = tmp_path / "model-src"
        src.mkdir()
        (src / "meta.json").write_text("{}")
        model = resources.add_model(services, name="fuzz", family="imported", source_dir=src, meta={})
    finally:
        services.close()
        registry.job_kinds.cache_clear()
    dataset = requests.post(f"{api.base}/api/v1/datasets/demo", timeout=60).json()["id"]
    names = [f["name"] for f in api.job(done)["outputs"] + api.job(done)["inputs"]]
    return {"job_id": [done, queued, canceled], "name": names, "dataset_id": [dataset], "model_id": [model.id]}


@pytest.mark.integration
@pytest.mark.slow
def test_schemathesis_finds_no_server_error_and_no_schema_violation(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Every operation of the served document, fuzzed (positive and negative data, boundary values),
    with known ids mixed in: no 5xx, and every response matches its schema."""
    from tests.stack import Api, Proc, base_env, run_cli, wait_until

    cli = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or shutil.which("schemathesis")
    if cli is None:
        pytest.fail("schemathesis is not installed (pip install -e '.[dev]')")
    # Held requests end quickly: the fuzzer's `Prefer: wait` and streams of jobs no worker runs.
    env = base_env(tmp_path, ATELIER_MAX_WAIT_SECONDS="1", ATELIER_STREAM_MAX_SECONDS="2")
    migrated = run_cli(["db", "upgrade"], env)
    assert migrated.returncode == 0, migrated.stderr
    server = Proc(["serve", "--threads", "4"], env, tmp_path / "serve.log")
    api = Api(int(env["ATELIER_PORT"]))
    try:
        wait_until(lambda: api.get("/api/v1/kinds").status_code == 200, 60, "the server", [server])
        known = _seed_the_server(api, env, tmp_path, monkeypatch)
        config = tmp_path / "schemathesis.toml"
        config.write_text("".join(
            f'[dictionaries.{name}]\nvalues = {json.dumps(values)}\n' for name, values in known.items())
            + "[parameters]\n" + "".join(
            f'"path.{name}" = {{ dictionary = "{name}", probability = 0.7 }}\n' for name in known))
        started = time.monotonic()
        run = subprocess.run(
            [cli, "--config-file", str(config), "run", f"{api.base}/api/v1/openapi.json",
             "--checks", "not_a_server_error,response_schema_conformance",
             "--phases", "examples,coverage,fuzzing", "--max-examples", str(FUZZ_EXAMPLES), "--seed", "1",
             # One worker: hypothesis describes filters with ast.parse, which CPython 3.11 can fail
             # from two threads at once ("AST constructor recursion depth mismatch"); no slower here.
             "--workers", "1", "--request-timeout", "20", "--suppress-health-check", "all", "--no-color"],
            capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False)
        elapsed = time.monotonic() - started
        output = run.stdout + run.stderr
        cases = re.search(r"(\d+) generated, ([^\n]*)", output)
        final = [line.strip("= ") for line in output.splitlines() if re.match(r"^=+ .* in [\d.]+s =+$", line)]
        print(f"schemathesis in {elapsed:.1f} s: {cases.group(0) if cases else '?'}; {final[-1] if final else ''}")
        (tmp_path / "schemathesis.out").write_text(output)
        problems = re.search(r"^=+ (?:FAILURES|ERRORS) =+$.*?(?=^=+ (?:WARNINGS|SUMMARY) =+$)", output, re.DOTALL | re.MULTILINE)
        assert run.returncode == 0, ((problems.group(0)[:6000] if problems else output[-6000:])
                                     + f"\n(all of it: {tmp_path / 'schemathesis.out'})\n--- serve.log\n"
                                     + server.output()[-3000:])
        assert cases and int(cases.group(1)) > 0 and "failed" not in cases.group(2), output[-3000:]
    finally:
        server.stop()
