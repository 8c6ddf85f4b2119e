"""Start real Atelier processes (`atelier serve`, `atelier worker`, `atelier up`) for integration
tests, and talk to them over HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from tests.conftest import REPO_ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATELIER_")}
    env.update({
        "ATELIER_DATA_DIR": str(tmp_path / "data"),
        "ATELIER_VGG19_WEIGHTS": "random",
        "ATELIER_DEVICE": "cpu",
        "ATELIER_PORT": str(free_port()),
        "ATELIER_HEARTBEAT_SECONDS": "0.5",
        "ATELIER_LEASE_SECONDS": "4",
        "ATELIER_PROGRESS_INTERVAL": "0.2",
        "ATELIER_PREVIEW_EVERY": "5",
        "ATELIER_TORCH_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra)
    return env


class Proc:
    """A child process in its own session, with its output in a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log_path = log
        self._log = open(log, "wb")
        self.popen = subprocess.Popen([sys.executable, "-m", "atelier", *args], env=env, cwd=REPO_ROOT,
                                      stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """Kill the process and its children at once (a crashed machine)."""
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()

    def stop(self, timeout: float = 20) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)  # stray pool children
        except ProcessLookupError:
            pass
        self._log.close()


def run_cli(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "atelier", *args], env=env, cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=timeout)


#: What a predicate may raise while a server is still starting (not listening, answering 503).
STARTING_UP: tuple[type[Exception], ...] = (requests.RequestException, KeyError, ValueError)


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, procs: list[Proc] = (),  # type: ignore[assignment]
               transient: tuple[type[Exception], ...] = STARTING_UP) -> Any:
    """Poll ``predicate`` until it is true; ``transient`` errors count as "not yet"."""
    deadline = time.time() + timeout
    last_exc: Exception | None = None
    while time.time() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except transient as exc:
            last_exc = exc
        time.sleep(0.1)
    logs = "\n".join(f"--- {p.log_path.name}\n{p.output()[-3000:]}" for p in procs)
    raise AssertionError(f"timed out waiting for {what} ({last_exc})\n{logs}")


class Api:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def submit(self, kind: str, params: dict[str, Any], files: list[tuple[str, tuple[str, bytes, str]]]) -> dict[str, Any]:
        import json

        resp = requests.post(f"{self.base}/api/v1/jobs", data={"kind": kind, "params": json.dumps(params)},
                             files=files, timeout=30)
        assert resp.status_code == 202, resp.text
        return resp.json()

    def job(self, job_id: str) -> dict[str, Any]:
        resp = requests.get(f"{self.base}/api/v1/jobs/{job_id}", timeout=10)
        resp.raise_for_status()
        return resp.json()

    def get(self, path: str, **kw: Any) -> requests.Response:
        return requests.get(self.base + path, timeout=10, **kw)

    def post(self, path: str, **kw: Any) -> requests.Response:
        return requests.post(self.base + path, timeout=10, **kw)

    def healthz(self) -> dict[str, Any]:
        return requests.get(f"{self.base}/healthz", timeout=5).json()

    def follow(self, job_id: str, timeout: float, procs: list[Proc] = ()) -> tuple[dict[str, Any], list[float]]:  # type: ignore[assignment]
        """Poll a job until it ends; return the final job and every progress value seen while running."""
        return self.follow_all([job_id], timeout, procs)[job_id]

    def follow_all(self, job_ids: list[str], timeout: float, procs: list[Proc] = ()  # type: ignore[assignment]
                   ) -> dict[str, tuple[dict[str, Any], list[float]]]:
        """Poll several jobs at once until all end: ``{id: (final job, progress values seen while running)}``."""
        seen: dict[str, list[float]] = {j: [] for j in job_ids}
        final: dict[str, dict[str, Any]] = {}
        deadline = time.time() + timeout
        while time.time() < deadline and len(final) < len(job_ids):
            for job_id in job_ids:
                if job_id in final:
                    continue
                job = self.job(job_id)
                if job["status"] == "running":
                    seen[job_id].append(job["progress"])
                if job["status"] in ("succeeded", "failed", "canceled"):
                    final[job_id] = job
            time.sleep(0.05)
        if len(final) < len(job_ids):
            logs = "\n".join(f"--- {p.log_path.name}\n{p.output()[-4000:]}" for p in procs)
            pending = [self.job(j) for j in job_ids if j not in final]
            raise AssertionError(f"jobs did not finish in {timeout}s: {pending}\n{logs}")
        return {j: (final[j], seen[j]) for j in job_ids}
