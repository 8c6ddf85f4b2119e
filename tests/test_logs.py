"""Logs: every line written while a job runs (ours, Celery's, a library's, from the job's threads) carries
the job id and attempt; ``ATELIER_LOG_FORMAT=json`` writes one JSON object per line."""

from __future__ import annotations

import contextvars
import io
import json
import logging
import threading
from pathlib import Path

import pytest

from core.errors import ConfigError
from core.logging_setup import bind_attempt, job_log_context, make_handler
from core.settings import load_settings
from tests.conftest import REPO_ROOT
from tests.stack import Api, Proc, base_env, run_cli, wait_until

CONTENT = REPO_ROOT / "web/static/examples/content/chelsea.png"
STYLE = REPO_ROOT / "web/static/examples/styles/starry_night.jpg"


def capture(fmt: str) -> tuple[io.StringIO, logging.Logger]:
    stream = io.StringIO()
    logger = logging.getLogger("test_logs.capture")
    logger.handlers[:] = [make_handler(fmt, stream)]
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    return stream, logger


def test_json_lines_carry_the_bound_job_in_every_thread_and_scope() -> None:
    stream, logger = capture("json")
    library = logger.getChild("library")  # any logger under the handler: a library's lines too
    logger.info("before any job")
    with job_log_context("job-1", worker="w1@host:42"):
        library.debug("claiming")
        bind_attempt(2)
        with job_log_context("job-1"):  # the runner inside the task: one binding
            library.info("multi\nline")
        context = contextvars.copy_context()
        thread = threading.Thread(target=lambda: context.run(library.warning, "from the heartbeat"))
        thread.start()
        thread.join()
        try:
            raise ValueError("boom")
        except ValueError:
            library.exception("crashed")
    logger.info("after the job")
    lines = stream.getvalue().splitlines()
    records = [json.loads(line) for line in lines]  # one object per line, even with a newline or traceback
    assert len(records) == 6
    assert {"time", "level", "logger", "message", "job_id", "attempt", "worker"} <= set(records[0])
    assert records[0]["job_id"] is None and records[-1]["job_id"] is None
    assert [(r["job_id"], r["attempt"], r["worker"]) for r in records[1:5]] == [
        ("job-1", None, "w1@host:42"), ("job-1", 2, "w1@host:42"), ("job-1", 2, "w1@host:42"),
        ("job-1", 2, "w1@host:42")]
    assert records[2]["message"] == "multi\nline" and records[3]["message"] == "from the heartbeat"
    assert records[4]["level"] == "ERROR" and "ValueError: boom" in records[4]["exc_info"]
    assert records[1]["logger"] == "test_logs.capture.library" and records[1]["time"].endswith("Z")


def test_text_lines_name_the_job_and_the_format_setting_is_validated() -> None:
    stream, logger = capture("text")
    with job_log_context("job-2", worker="w"):
        bind_attempt(1)
        logger.info("step")
    logger.info("idle")
    first, second = stream.getvalue().splitlines()
    assert first.endswith("test_logs.capture: step [job=job-2 attempt=1]") and second.endswith(": idle")
    assert load_settings({"ATELIER_LOG_FORMAT": "JSON"}).log_format == "json"
    with pytest.raises(ConfigError, match="ATELIER_LOG_FORMAT"):
        load_settings({"ATELIER_LOG_FORMAT": "xml"})


@pytest.mark.integration
def test_a_real_worker_writes_json_lines_tagged_with_the_job(tmp_path: Path, fresh_pg_url: str,
                                                              redis_url: str) -> None:
    env = base_env(tmp_path, ATELIER_DATABASE_URL=fresh_pg_url, ATELIER_BROKER_URL=redis_url)
    assert run_cli(["db", "upgrade"], env).returncode == 0
    # DEBUG: PIL logs while the job decodes its images, so a library's lines are among those checked.
    worker_env = dict(env, ATELIER_LOG_FORMAT="json", ATELIER_LOG_LEVEL="DEBUG")
    procs = [Proc(["serve"], env, tmp_path / "serve.log"),
             Proc(["worker", "--name", "wj@%h"], worker_env, tmp_path / "worker.log")]
    api = Api(int(env["ATELIER_PORT"]))
    try:
        wait_until(lambda: api.healthz()["workers"]["live"] == 1, 90, "a live worker", procs)
        job = api.submit("style_transfer", {"size": 32, "steps": 2},
                         [("content", ("c.png", CONTENT.read_bytes(), "image/png")),
                          ("style", ("s.jpg", STYLE.read_bytes(), "image/jpeg"))])
        final, _ = api.follow(job["id"], 120, procs)
        assert final["status"] == "succeeded", final
        wait_until(lambda: "succeeded in" in procs[1].output(), 10, "Celery's line about the task", procs)
    finally:
        for p in procs:
            p.stop()
    lines = [line for line in procs[1].output().splitlines() if line.strip()]
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            # Celery's signal handlers write their shutdown notice raw (no logging inside a signal
            # handler); nothing else may bypass the JSON format.
            assert line.startswith("worker: ") and "shutdown" in line, f"not a JSON line: {line!r}"
    mine = [r for r in records if r["job_id"] == job["id"]]
    assert mine, "no line names the job"
    during = [r for r in mine if r["attempt"] is not None]
    assert {r["attempt"] for r in during} == {1}
    assert all(r["worker"].startswith("wj@") and ":" in r["worker"] for r in mine)
    loggers = {r["logger"] for r in during}
    assert any(name.startswith("PIL") for name in loggers), loggers  # a library's lines, tagged
    assert "celery.app.trace" in loggers, loggers  # Celery's own "succeeded in" line, tagged too
    # Lines of the job that do not carry it would be a leak of the context; lines after it must not.
    assert not [r for r in records if r["job_id"] not in (None, job["id"])]
