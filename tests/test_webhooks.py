"""Webhooks: URL and event validation, Standard Webhooks signatures, the delivery rows and their retry
rules, the sender against a local receiver, and the whole path on the real stack (a worker process sends
start, progress and completed, signed with the server's secret, `completed` retried after a 500)."""

from __future__ import annotations

import datetime as dt
import io
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from core import webhooks
from core.errors import UserError
from core.jobs import repository as repo
from core.jobs.runner import run_job
from core.jobs.submit import Upload, submit_job
from core.models import Job, WebhookDelivery, utcnow
from core.services import Services
from tests.conftest import png_bytes
from tests.fake_kind import echo_kind  # noqa: F401  (fixture)
from worker.webhooks import WebhookSender

# -- a receiver -----------------------------------------------------------------------------------


class Receiver:
    """A local HTTP server recording every POST (time, headers, body); ``fail`` lists event types to
    answer 500 to, once each."""

    def __init__(self, fail: tuple[str, ...] = ()) -> None:
        self.got: list[tuple[float, dict[str, str], bytes]] = []
        self.fail = set(fail)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                outer.got.append((time.monotonic(), {k.lower(): v for k, v in self.headers.items()}, body))
                kind = json.loads(body).get("type", "").removeprefix("job.")
                code = 500 if kind in outer.fail else 204
                outer.fail.discard(kind)
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_a: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def payloads(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, _, body in self.got]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    r = Receiver(fail=("completed",))
    yield r
    r.close()


# -- signing --------------------------------------------------------------------------------------
def test_signature_is_the_standard_webhooks_one_and_verifies() -> None:
    # The Standard Webhooks reference vector: receivers using its libraries verify our deliveries.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    assert webhooks.sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == \
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    headers = webhooks.signed_headers("s3cret-of-a-token", "42", body)
    assert webhooks.verify("s3cret-of-a-token", headers, body)
    assert not webhooks.verify("another-secret", headers, body)
    assert not webhooks.verify("s3cret-of-a-token", headers, body + b" ")
    assert not webhooks.verify("s3cret-of-a-token", {**headers, "webhook-id": "43"}, body)
    old = webhooks.signed_headers("s3cret-of-a-token", "42", body, timestamp=int(time.time()) - 3600)
    assert not webhooks.verify("s3cret-of-a-token", old, body), "a replayed old delivery is refused"


def test_the_server_secret_is_made_once_and_kept(tmp_path: Path) -> None:
    from tests.conftest import make_settings

    settings = make_settings(tmp_path)
    first = webhooks.server_secret(settings)
    assert first.startswith("whsec_") and webhooks.server_secret(settings) == first
    assert (tmp_path / "data" / "webhook_secret").stat().st_mode & 0o077 == 0, "only the owner may read it"
    assert webhooks.server_secret(settings.with_overrides(webhook_secret="from-the-env")) == "from-the-env"


# -- validation -----------------------------------------------------------------------------------
@pytest.mark.parametrize("url", ["https://hooks.example.com/atelier?x=1", "http://127.0.0.1:8080/hook",
                                 "http://localhost/hook", "http://[::1]:9/h", "https://10.1.2.3/internal"])
def test_acceptable_webhook_urls(url: str) -> None:
    assert webhooks.validate_webhook(url, None) == (url, ["completed"])


@pytest.mark.parametrize("url, says", [
    ("http://hooks.example.com/x", "https://"), ("ftp://example.com/x", "https://"), ("hooks.example.com", "https://"),
    ("https://user:pw@example.com/x", "credentials"), ("https://169.254.169.254/latest", "link-local"),
    ("https://example.com/" + "a" * 2100, "2048"), ("https://exa mple.com/", "spaces"),
    ("https://example.com:99999/", "not a valid URL"), (12, "URL string"),
])
def test_unacceptable_webhook_urls_are_422_naming_the_field(url: Any, says: str) -> None:
    with pytest.raises(UserError) as err:
        webhooks.validate_webhook(url, None)
    assert err.value.field == "webhook" and err.value.status == 422 and says in str(err.value)


def test_webhook_events() -> None:
    hook = "https://example.com/h"
    assert webhooks.validate_webhook(hook, "completed, start")[1] == ["start", "completed"]
    assert webhooks.validate_webhook(hook, ["progress", "output"])[1] == ["progress", "output"]
    assert webhooks.validate_webhook(hook, '["start"]')[1] == ["start"]
    assert webhooks.validate_webhook(None, None) == (None, [])
    for bad, field in ((["start", "exploded"], "webhook_events"), ("{", "webhook_events"), ([1], "webhook_events")):
        with pytest.raises(UserError) as err:
            webhooks.validate_webhook(hook, bad)
        assert err.value.field == field
    with pytest.raises(UserError) as err:
        webhooks.validate_webhook(None, ["start"])
    assert err.value.field == "webhook", "events without a URL would go nowhere"


@pytest.mark.usefixtures("echo_kind")
def test_submit_takes_webhook_fields_from_a_form_or_json(client) -> None:  # type: ignore[no-untyped-def]
    data = {"kind": "echo", "params": "{}", "image": (io.BytesIO(png_bytes()), "x.png"),
            "webhook": "https://example.com/h", "webhook_events": "start,progress,completed"}
    job = client.post("/api/v1/jobs", data=data, content_type="multipart/form-data").get_json()
    assert job["webhook"] == "https://example.com/h" and job["webhook_events"] == ["start", "progress", "completed"]
    data = {"kind": "echo", "params": "{}", "image": (io.BytesIO(png_bytes()), "x.png"), "webhook": "http://evil.com/"}
    bad = client.post("/api/v1/jobs", data=data, content_type="multipart/form-data")
    assert bad.status_code == 422 and bad.get_json()["field"] == "webhook"
    bad = client.post("/api/v1/jobs", json={"kind": "cyclegan_train", "params": {}, "webhook": "https://e.com/",
                                            "webhook_events": ["finished"]})
    assert bad.status_code == 422 and bad.get_json()["field"] == "webhook_events"
    assert client.get("/api/v1/jobs?limit=100").get_json()["jobs"][0]["id"] == job["id"], "nothing stored"
    listing = client.get(f"/api/v1/jobs/{job['id']}/webhooks").get_json()
    assert listing == {"job_id": job["id"], "webhook": "https://example.com/h",
                       "webhook_events": ["start", "progress", "completed"], "deliveries": []}


# -- rows and retries -----------------------------------------------------------------------------
def _job(services: Services, url: str, events: list[str], steps: int = 3) -> Job:
    return submit_job(services, "echo", {"steps": steps}, [Upload("image", "x.png", png_bytes())], webhook=url,
                      webhook_events=events)


@pytest.mark.usefixtures("echo_kind")
def test_attempt_outcomes_and_the_retry_rules(services: Services) -> None:
    job = _job(services, "https://example.com/h", ["start", "progress", "completed"])
    sf = services.sessions
    now = utcnow()

    def row(event: str) -> WebhookDelivery:
        did = webhooks.enqueue(sf, job.id, job.webhook, event, {"type": f"job.{event}"}, now=now)
        claimed = webhooks.claim(sf, did, now=now)
        assert claimed is not None and webhooks.claim(sf, did, now=now) is None, "one sender wins"
        return claimed

    completed = row("completed")
    assert webhooks.record(sf, completed, response_code=503, error="HTTP 503", now=now) == "pending"
    [listed] = [d for d in webhooks.deliveries(sf, job.id) if d.id == completed.id]
    assert listed.attempts == 1 and listed.response_code == 503
    assert webhooks.due(sf, now=now) == []
    assert webhooks.due(sf, now=now + dt.timedelta(seconds=1.1)) == [(completed.id, job.id)]
    assert webhooks.record(sf, completed, response_code=None, error="no answer within 5 s", now=now) == "pending"
    assert webhooks.record(sf, completed, response_code=429, error="HTTP 429",
                           now=now + dt.timedelta(minutes=60)) == "failed", "an hour at most"
    assert webhooks.record(sf, row("completed"), response_code=404, error="HTTP 404", now=now) == "failed"
    assert webhooks.record(sf, row("completed"), response_code=204, error=None, now=now) == "delivered"
    assert webhooks.record(sf, row("progress"), response_code=500, error="HTTP 500", now=now) == "failed", \
        "progress is not retried (the next one supersedes it)"
    start = row("start")
    assert webhooks.record(sf, start, response_code=500, error="x", now=now) == "pending"
    assert webhooks.backoff_s(1) == 1 and webhooks.backoff_s(4) == 8 and webhooks.backoff_s(30) == 300


@pytest.mark.usefixtures("echo_kind")
def test_every_end_of_a_job_gets_one_completed_delivery(services: Services) -> None:
    wanted = _job(services, "https://example.com/h", ["completed"])
    not_wanted = _job(services, "https://example.com/h", ["start"])
    queued_then_canceled = _job(services, "https://example.com/h", ["completed"])
    assert run_job(services, wanted.id, "w").status == "succeeded"
    assert run_job(services, not_wanted.id, "w").status == "succeeded"
    repo.request_cancel(services.sessions, queued_then_canceled.id)  # ends in a web request: no worker involved
    made = webhooks.enqueue_completions(services)
    assert len(made) == 2 and webhooks.enqueue_completions(services) == [], "once per end"
    [d] = webhooks.deliveries(services.sessions, wanted.id)
    assert d.event == "completed" and d.payload["type"] == "job.completed"
    data = d.payload["data"]
    assert data["status"] == "succeeded" and data["outputs"][0]["url"].startswith("http://127.0.0.1:8000/api/v1/jobs/")
    assert [x.event for x in webhooks.deliveries(services.sessions, queued_then_canceled.id)] == ["completed"]
    assert [x.event for x in webhooks.deliveries(services.sessions, not_wanted.id)] == ["start"]
    # A retried job that ends again is completed again.
    repo.retry(services.sessions, queued_then_canceled.id)
    with services.sessions.begin() as s:
        s.execute(update(Job).where(Job.id == queued_then_canceled.id)
                  .values(status="failed", finished_at=utcnow() + dt.timedelta(seconds=1)))
    assert len(webhooks.enqueue_completions(services, now=utcnow() + dt.timedelta(seconds=2))) == 1


@pytest.mark.usefixtures("echo_kind")
def test_progress_rows_are_at_least_two_seconds_apart(services: Services) -> None:
    job = _job(services, "https://example.com/h", ["progress"])
    clock = [100.0]
    emitter = webhooks.WebhookEmitter(services, job, clock=lambda: clock[0])
    for step in range(1, 41):  # 40 reports over 5 s, one every 0.125 s
        emitter.progress(step, 40, {"loss": 1.0 / step})
        clock[0] += 0.125
    rows = webhooks.deliveries(services.sessions, job.id)
    assert [r.payload["data"]["step"] for r in reversed(rows)] == [1, 17, 33]
    silent = webhooks.WebhookEmitter(services, _job(services, "https://example.com/h", ["completed"]))
    silent.progress(1, 2, {})
    silent.start(1, "w")
    assert not silent.wants("progress")


@pytest.mark.usefixtures("echo_kind")
def test_the_sender_signs_retries_and_records(services: Services, receiver: Receiver) -> None:
    job = _job(services, receiver.url, ["start", "progress", "output", "completed"])
    assert run_job(services, job.id, "w").status == "succeeded"
    sender = WebhookSender(services, timeout=2)
    try:
        assert sender.sweep() >= 4  # start, progress, output, completed (answered 500)
        time.sleep(1.1)
        assert sender.sweep() == 1  # completed again, after its backoff
    finally:
        sender.stop()
    secret = webhooks.server_secret(services.settings)
    kinds = [p["type"] for p in receiver.payloads()]
    assert kinds[0] == "job.start" and kinds[-2:] == ["job.completed", "job.completed"]
    assert {"job.progress", "job.output"} <= set(kinds)
    for _, headers, body in receiver.got:
        assert webhooks.verify(secret, headers, body), headers
    rows = {d.event: d for d in webhooks.deliveries(services.sessions, job.id)}
    assert rows["completed"].status == "delivered" and rows["completed"].attempts == 2
    assert receiver.got[-1][1]["webhook-id"] == receiver.got[-2][1]["webhook-id"], "a retry keeps its id"


def test_a_delivery_to_an_owner_without_a_live_token_is_not_sent(services: Services, receiver: Receiver) -> None:
    job = Job(kind="echo", status="succeeded", params={}, owner="gone", webhook=receiver.url,
              webhook_events=["completed"], finished_at=utcnow())
    repo.create_job(services.sessions, job, [])
    sender = WebhookSender(services)
    try:
        sender.sweep()
    finally:
        sender.stop()
    [d] = webhooks.deliveries(services.sessions, job.id)
    assert d.status == "failed" and "no live token" in (d.error or "") and receiver.got == []


# -- the real stack -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from tests.programs_stack import programs_stack

    with programs_stack(tmp_path_factory.mktemp("webhooks")) as s:
        yield s


@pytest.mark.integration
def test_a_worker_sends_signed_events_and_retries_completed(stack, receiver: Receiver) -> None:  # type: ignore[no-untyped-def]
    from tests.programs_stack import style_files, tiny
    from tests.stack import run_cli, wait_until

    api, procs, env = stack
    # A job far longer than the test, canceled once two progress events came (time, not a step count,
    # decides how many a run sends: a faster CPU must not finish it first).
    resp = api.post("/api/v1/jobs", data={"kind": "style_transfer", "params": json.dumps(tiny(5000)),
                                          "webhook": receiver.url, "webhook_events": "start,progress,completed"},
                    files=style_files())
    assert resp.status_code == 202, resp.text
    job = resp.json()
    wait_until(lambda: len([p for p in receiver.payloads() if p["type"] == "job.progress"]) >= 2, 120,
               "two progress deliveries", procs)
    assert api.post(f"/api/v1/jobs/{job['id']}/cancel").status_code == 202
    hooks = wait_until(lambda: (h := api.get(f"/api/v1/jobs/{job['id']}/webhooks").json())["deliveries"] and all(
        d["status"] != "pending" for d in h["deliveries"]) and any(d["event"] == "completed" for d in h["deliveries"])
        and h, 120, "the deliveries to be done", procs)
    secret = run_cli(["webhook-secret"], env).stdout.strip()
    assert secret.startswith("whsec_")
    for _, headers, body in receiver.got:
        assert webhooks.verify(secret, headers, body), "signed with the secret `atelier webhook-secret` prints"
    payloads = receiver.payloads()
    kinds = [p["type"] for p in payloads]
    assert kinds[0] == "job.start" and kinds[-2:] == ["job.completed", "job.completed"], kinds
    progress = [p for p in payloads if p["type"] == "job.progress"]
    assert len(progress) >= 2, kinds
    times = [dt.datetime.fromisoformat(p["timestamp"].replace("Z", "+00:00")) for p in progress]
    gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:])]
    assert min(gaps) >= 2.0, gaps
    steps = [p["data"]["step"] for p in progress]
    assert steps == sorted(steps) and payloads[-1]["data"]["status"] == "canceled"
    assert payloads[-1]["data"]["id"] == job["id"] and payloads[-1]["data"]["step"] >= steps[-1]
    by_event = {d["event"]: d for d in hooks["deliveries"]}
    assert by_event["completed"]["status"] == "delivered" and by_event["completed"]["attempts"] == 2
    assert by_event["start"]["response_code"] == 204
    page = api.get(f"/jobs/{job['id']}").text
    assert "Webhook deliveries" in page and "delivered" in page
