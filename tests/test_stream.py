"""``GET /api/v1/jobs/{id}/stream``: server-sent events of a running job from a real `atelier serve`
(progress, metric points, log lines, completed), resumed with ``Last-Event-ID``; and 50 streams open at
once leave the server answering."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.programs_stack import programs_stack, style_files, tiny
from web.stream import parse_cursor, sse


def read_events(resp: requests.Response, until: str | None = "completed",
                limit_s: float = 120) -> Iterator[dict[str, Any]]:
    """Parse a text/event-stream response into ``{"event", "id", "data"}``; comments become
    ``{"event": "comment"}``."""
    fields: dict[str, Any] = {}
    deadline = time.monotonic() + limit_s
    for line in resp.iter_lines(decode_unicode=True):
        if time.monotonic() > deadline:
            raise AssertionError("the stream ran too long")
        if line.startswith(":"):
            yield {"event": "comment"}
        elif line == "":
            if "event" in fields:
                fields["data"] = json.loads(fields["data"])
                yield fields
                if until and fields["event"] == until:
                    return
            fields = {}
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            fields[name] = fields.get(name, "") + value if name == "data" else value


def test_event_format_and_cursor() -> None:
    assert sse("progress", {"step": 3}, "7.12") == 'event: progress\nid: 7.12\ndata: {"step":3}\n\n'
    assert parse_cursor("7.12") == (7, 12)
    for junk in (None, "", "7", "a.b", "-1.2", "1.2.3", "9" * 50 + ".1"):
        assert parse_cursor(junk) == (0, 0)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    with programs_stack(tmp_path_factory.mktemp("stream")) as s:
        yield s


def submit(api: Any, steps: int) -> dict[str, Any]:
    resp = requests.post(f"{api.base}/api/v1/jobs", data={"kind": "style_transfer", "params": json.dumps(tiny(steps))},
                         files=style_files(), timeout=30)
    assert resp.status_code == 202, resp.text
    return resp.json()


@pytest.mark.integration
def test_the_stream_follows_a_running_job_and_resumes(stack) -> None:  # type: ignore[no-untyped-def]
    api, procs, _env = stack
    # A job far longer than the test: once the stream has shown it running (a step between the first and
    # the last, a preview, metric points, log lines), it is canceled, and the stream must end with that.
    # Watching, not a step count, decides when: a faster CPU cannot finish it before the stream looks.
    job = submit(api, 5000)
    events: list[dict[str, Any]] = []
    with requests.get(f"{api.base}/api/v1/jobs/{job['id']}/stream", stream=True, timeout=60) as resp:
        assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
        assert resp.headers["Cache-Control"] == "no-cache"
        canceled = False
        for event in read_events(resp, limit_s=180):
            events.append(event)
            kinds = {e["event"] for e in events}
            if not canceled and {"progress", "preview", "metrics", "log"} <= kinds and any(
                    0 < e["data"]["step"] < 5000 for e in events if e["event"] == "progress"):
                assert api.post(f"/api/v1/jobs/{job['id']}/cancel").status_code == 202
                canceled = True
    kinds = [e["event"] for e in events]
    assert kinds[0] == "status" and events[0]["data"]["status"] == "queued", kinds
    assert kinds[-1] == "completed" and events[-1]["data"]["status"] == "canceled"
    assert events[-1]["data"]["id"] == job["id"], "completed carries the job as the API has it"
    steps = [e["data"]["step"] for e in events if e["event"] == "progress"]
    assert len([s for s in steps if 0 < s < 5000]) >= 1 and steps == sorted(steps), steps
    assert "running" in [e["data"]["status"] for e in events if e["event"] == "status"]
    points = [p for e in events if e["event"] == "metrics" for p in e["data"]["points"]]
    assert {p[0] for p in points} >= {"loss"} and 0 < max(p[1] for p in points) < 5000
    logs = [m["message"] for e in events if e["event"] == "log" for m in e["data"]["events"]]
    assert any("started" in m for m in logs) and logs[-1] == "canceled at the user's request"
    ids = [tuple(map(int, e["id"].split("."))) for e in events]
    assert ids == sorted(ids), "ids only move forward"

    # Resume from the middle: the current state again, then only the lines and points after the cursor.
    middle = next(e for e in events if e["event"] == "log")
    log_cursor, metric_cursor = map(int, middle["id"].split("."))
    with requests.get(f"{api.base}/api/v1/jobs/{job['id']}/stream", headers={"Last-Event-ID": middle["id"]},
                      stream=True, timeout=30) as resp:
        resumed = list(read_events(resp))
    again = [m["message"] for e in resumed if e["event"] == "log" for m in e["data"]["events"]]
    seen_before = [m["message"] for e in events[:events.index(middle) + 1] if e["event"] == "log"
                   for m in e["data"]["events"]]
    assert again == logs[len(seen_before):], (again, logs)
    assert [e["event"] for e in resumed][0] == "status" and resumed[-1]["event"] == "completed"
    resumed_points = [p for e in resumed if e["event"] == "metrics" for p in e["data"]["points"]]
    assert len(resumed_points) == len(points) - len([p for e in events[:events.index(middle) + 1]
                                                     if e["event"] == "metrics" for p in e["data"]["points"]])
    assert all(tuple(map(int, e["id"].split("."))) >= (log_cursor, metric_cursor) for e in resumed)
    assert api.get("/api/v1/jobs/nope/stream").status_code == 404


@pytest.mark.integration
def test_fifty_open_streams_leave_the_server_answering(stack) -> None:  # type: ignore[no-untyped-def]
    api, procs, _env = stack
    job = submit(api, 400)
    opened, stop = [], threading.Event()

    def hold() -> None:
        with requests.get(f"{api.base}/api/v1/jobs/{job['id']}/stream", stream=True, timeout=60) as resp:
            opened.append(resp.status_code)
            for _ in resp.iter_content(chunk_size=None):
                if stop.is_set():
                    return

    threads = [threading.Thread(target=hold, daemon=True) for _ in range(50)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while len(opened) < 50 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert opened.count(200) == 50, opened
        for path in (f"/api/v1/jobs/{job['id']}", f"/jobs/{job['id']}"):
            started = time.monotonic()
            resp = requests.get(api.base + path, timeout=10)
            took = time.monotonic() - started
            assert resp.status_code == 200 and took < 3.0, (path, took)
    finally:
        stop.set()
        api.post(f"/api/v1/jobs/{job['id']}/cancel")
        for t in threads:
            t.join(timeout=30)
