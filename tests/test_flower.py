"""Flower watches the workers: a real `atelier worker` on the test Redis, Flower started against the same
broker, and Flower's HTTP API lists the worker and the task it ran (task events are on)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests
from celery import Celery

from tests.conftest import REPO_ROOT
from tests.stack import Proc, base_env, free_port, run_cli, wait_until

pytestmark = pytest.mark.integration


def test_flower_sees_the_workers_and_their_tasks(tmp_path: Path, fresh_pg_url: str, redis_url: str) -> None:
    env = base_env(tmp_path, ATELIER_DATABASE_URL=fresh_pg_url, ATELIER_BROKER_URL=redis_url)
    assert run_cli(["db", "upgrade"], env).returncode == 0
    worker = Proc(["worker", "--name", "wf@%h"], env, tmp_path / "worker.log")
    port = free_port()
    flower_log = open(tmp_path / "flower.log", "wb")
    # Flower 2 serves its API only with authentication or this explicit opt-in (a test on loopback).
    flower_env = dict(env, FLOWER_UNAUTHENTICATED_API="true")
    flower = subprocess.Popen([sys.executable, "-m", "celery", "-b", redis_url, "flower", f"--port={port}",
                               "--address=127.0.0.1"], env=flower_env, cwd=REPO_ROOT, stdout=flower_log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        def workers() -> dict:
            resp = requests.get(f"{base}/api/workers", params={"refresh": "1"}, timeout=10)
            resp.raise_for_status()
            return resp.json()

        seen = wait_until(lambda: next((w for name, w in workers().items() if name.startswith("wf@")), None), 30,
                          "Flower to list the worker", [worker])
        assert "gpu" in {q["name"] for q in seen.get("active_queues", [])}
        # A message for a job that does not exist: the worker takes it and skips it at once. Its task
        # events (sent, received, started, succeeded) reach Flower.
        task_id = str(uuid.uuid4())
        Celery(broker=redis_url, set_as_current=False).send_task(
            "atelier.run_job", args=[str(uuid.uuid4())], queue="gpu", task_id=task_id)

        def task_state() -> str | None:
            resp = requests.get(f"{base}/api/task/info/{task_id}", timeout=10)
            return resp.json().get("state") if resp.status_code == 200 else None

        assert wait_until(lambda: task_state() == "SUCCESS", 20, "Flower to see the task succeed", [worker])
        info = requests.get(f"{base}/api/task/info/{task_id}", timeout=10).json()
        assert info["name"] == "atelier.run_job" and info["worker"].startswith("wf@")
    finally:
        worker.stop()
        flower.terminate()
        try:
            flower.wait(10)
        except subprocess.TimeoutExpired:
            flower.kill()
        flower_log.close()
