"""One real stack per test module for the "for programs" tests (Prefer: wait, webhooks, event streams):
`atelier serve` and one `atelier worker` on a PostgreSQL database of the module's own and Redis.

Starting processes costs seconds on a 2-core machine, so a module shares one stack across its tests
(they leave no job running behind them). Jobs are tiny style transfers (32 px, random weights)."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from tests.conftest import PG_ADMIN_URL, REDIS_URL, REPO_ROOT
from tests.stack import Api, Proc, base_env, run_cli, wait_until

CONTENT = REPO_ROOT / "web/static/examples/content/chelsea.png"
STYLE = REPO_ROOT / "web/static/examples/styles/starry_night.jpg"


def style_files() -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("content", ("chelsea.png", CONTENT.read_bytes(), "image/png")),
            ("style", ("starry.jpg", STYLE.read_bytes(), "image/jpeg"))]


def tiny(steps: int, **extra: Any) -> dict[str, Any]:
    """A style transfer of ``steps`` steps at 32 px: about 0.1-0.4 s a step on a busy 2-core machine."""
    return {"size": 32, "steps": steps, **extra}


@contextlib.contextmanager
def programs_stack(tmp_path: Path, **settings: str) -> Iterator[tuple[Api, list[Proc], dict[str, str]]]:
    import redis

    name = f"atelier_programs_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    redis_url = f"{REDIS_URL}/{int(os.environ.get('TEST_REDIS_DB', '9'))}"
    redis.Redis.from_url(redis_url).flushdb()
    env = base_env(tmp_path, ATELIER_DATABASE_URL=PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}",
                   ATELIER_BROKER_URL=redis_url, **settings)
    procs: list[Proc] = []
    try:
        migrated = run_cli(["db", "upgrade"], env)
        assert migrated.returncode == 0, migrated.stderr
        procs = [Proc(["serve"], env, tmp_path / "serve.log"),
                 Proc(["worker", "--name", "w1@%h"], env, tmp_path / "w1.log")]
        api = Api(int(env["ATELIER_PORT"]))
        wait_until(lambda: api.healthz()["workers"]["live"] == 1, 90, "a live worker", procs)
        yield api, procs, env
    finally:
        for p in procs:  # killed, not stopped: their database is dropped next, nothing to hand back
            p.kill()
            p.stop(timeout=1)
        with admin.connect() as conn:
            conn.execute(text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"))
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()
        redis.Redis.from_url(redis_url).flushdb()
