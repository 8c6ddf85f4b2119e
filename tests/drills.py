"""Private PostgreSQL and Redis servers that a drill may stop and restart (never the shared ones), and a
record of what each drill saw.

``PrivatePostgres`` is a throw-away cluster made with ``initdb`` in a temporary directory (as the
``postgres`` user when the tests run as root, since PostgreSQL refuses to run as root), listening on a
free port; ``PrivateRedis`` is a ``redis-server`` without persistence, so a restart loses every queued
message, as the drills want.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tests.stack import free_port

PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"))), Path("/usr/bin"))


def _as_postgres(args: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


class PrivatePostgres:
    def __init__(self, root: Path) -> None:
        # Its own directory under the system temp dir: pytest's are private to the test user, and the
        # cluster's files must belong to the postgres user when the tests run as root.
        self.root = Path(tempfile.mkdtemp(prefix="atelier-pg-"))
        self.data = self.root / "pgdata"
        self.port = free_port()
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
        out = subprocess.run(_as_postgres([str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U",
                                           "postgres", "--no-sync", "-E", "UTF8"]),
                             capture_output=True, text=True)
        assert out.returncode == 0, f"initdb failed: {out.stderr[-2000:]}"
        self.start()

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *args: str) -> None:
        out = subprocess.run(_as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), *args]),
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, f"pg_ctl {' '.join(args)} failed: {out.stdout[-1000:]}{out.stderr[-1000:]}"

    def start(self) -> None:
        self._ctl("-o", f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                        "-c max_connections=200", "-l", str(self.root / "postgres.log"), "-w", "start")

    def stop(self) -> None:
        self._ctl("-m", "fast", "-w", "stop")

    def close(self) -> None:
        try:
            self.stop()
        except AssertionError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)


class PrivateRedis:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "no", "--dir", str(self.root)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self) -> None:
        self.stop()


@dataclass
class DrillRecord:
    """What a drill counted, printed as one JSON line (the README's reliability table comes from these)."""

    drill: str
    submitted: int = 0
    succeeded: int = 0
    failed: int = 0
    canceled: int = 0
    stuck: int = 0
    duplicated: int = 0
    http_5xx: int = 0
    recovery_seconds: float | None = None
    extra: dict[str, object] = field(default_factory=dict)

    def count(self, jobs: list[dict[str, object]], expect: str = "succeeded") -> None:
        self.submitted = self.submitted or len(jobs)
        for status in ("succeeded", "failed", "canceled"):
            setattr(self, status, sum(1 for j in jobs if j["status"] == status))
        self.stuck = sum(1 for j in jobs if j["status"] in ("queued", "running"))

    def report(self) -> None:
        print("DRILL " + json.dumps(asdict(self)))
