"""``Prefer: wait=N`` (RFC 7240) on submit and on reading a job: parsing, and on the real stack a fast job
answered finished, a slow one answered in its current state when the wait runs out."""

from __future__ import annotations

import json
import time

import pytest
import requests

from tests.programs_stack import programs_stack, style_files, tiny
from web.stream import prefer_wait


@pytest.mark.parametrize("header, wanted", [
    ("wait=10", 10), ("WAIT=3", 3), ("respond-async, wait=5", 5), ("wait=7; foo=bar", 7), ('wait="8"', 8),
    ("wait=0", 0), (None, None), ("", None), ("handling=lenient", None),
    ("wait=-1", None), ("wait=1.5", None), ("wait=soon", None), ("wait=9999999999", None), ("wait=٣", None),
])
def test_the_wait_preference_is_parsed_and_nonsense_ignored(header: str | None, wanted: int | None) -> None:
    assert prefer_wait(header) == wanted


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    with programs_stack(tmp_path_factory.mktemp("prefer"), ATELIER_MAX_WAIT_SECONDS="30") as s:
        yield s


@pytest.mark.integration
def test_prefer_wait_answers_a_fast_job_finished_and_a_slow_one_as_it_is(stack) -> None:  # type: ignore[no-untyped-def]
    api, procs, _env = stack
    # A fast job: the submit itself answers with the finished job.
    started = time.monotonic()
    resp = requests.post(f"{api.base}/api/v1/jobs", data={"kind": "style_transfer", "params": json.dumps(tiny(2))},
                         files=style_files(), headers={"Prefer": "wait=60"}, timeout=90)
    took = time.monotonic() - started
    assert resp.status_code == 202, resp.text
    assert resp.headers["Preference-Applied"] == "wait=30", "capped by ATELIER_MAX_WAIT_SECONDS"
    job = resp.json()
    assert job["status"] == "succeeded" and job["outputs"], (job["status"], took)
    assert took < 30

    # A slow job: the answer comes when the wait runs out, with the job as it is then.
    resp = requests.post(f"{api.base}/api/v1/jobs", data={"kind": "style_transfer", "params": json.dumps(tiny(400))},
                         files=style_files(), timeout=30)
    slow = resp.json()
    started = time.monotonic()
    resp = requests.get(f"{api.base}/api/v1/jobs/{slow['id']}", headers={"Prefer": "wait=2"}, timeout=30)
    took = time.monotonic() - started
    assert resp.status_code == 200 and resp.headers["Preference-Applied"] == "wait=2"
    assert resp.json()["status"] in ("queued", "running") and 1.9 <= took < 6, took
    # No preference, or one that is not a number: answered at once, nothing applied.
    for headers in ({}, {"Prefer": "wait=soon"}):
        resp = requests.get(f"{api.base}/api/v1/jobs/{slow['id']}", headers=headers, timeout=30)
        assert resp.status_code == 200 and "Preference-Applied" not in resp.headers
        assert resp.elapsed.total_seconds() < 1.5
    # The wait ends as soon as the job does (here: canceled while a request waits on it).
    canceler = __import__("threading").Timer(1.0, lambda: api.post(f"/api/v1/jobs/{slow['id']}/cancel"))
    canceler.start()
    started = time.monotonic()
    resp = requests.get(f"{api.base}/api/v1/jobs/{slow['id']}", headers={"Prefer": "wait=25"}, timeout=40)
    canceler.join()
    assert resp.json()["status"] in ("canceled", "running"), resp.json()["status"]
    if resp.json()["status"] == "running":  # cancel requested; the job stops at its next step
        resp = requests.get(f"{api.base}/api/v1/jobs/{slow['id']}", headers={"Prefer": "wait=25"}, timeout=40)
    assert resp.json()["status"] == "canceled" and time.monotonic() - started < 20
