"""Shared fixtures. PostgreSQL and Redis are real servers (`make test` starts them through scripts/test-prereqs.sh); a test that needs them
fails, never skips, when they are down."""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import create_engine, text

from core import db
from core.services import Services, build_services
from core.settings import Settings
from tests.s3_support import s3_server  # noqa: F401  (a session fixture: the local S3 server)

PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
REPO_ROOT = Path(__file__).resolve().parent.parent


def png_bytes(w: int = 40, h: int = 30, color: tuple[int, int, int] = (200, 80, 40), noise: bool = True) -> bytes:
    img = Image.new("RGB", (w, h), color)
    if noise:
        import random

        rng = random.Random(w * 1000 + h)
        px = img.load()
        for y in range(h):
            for x in range(w):
                px[x, y] = tuple(min(255, max(0, c + rng.randint(-60, 60))) for c in color)  # type: ignore[index]
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    name = f"atelier_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # pragma: no cover - environment problem, reported loudly
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL} ({exc}); `make test` starts it (scripts/test-prereqs.sh)")
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.execute(text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"))
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


@pytest.fixture()
def fresh_pg_url(pg_url: str) -> Iterator[str]:
    """The session database, emptied (all tables dropped) before the test."""
    engine = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    yield pg_url


@pytest.fixture()
def redis_url() -> Iterator[str]:
    import redis

    url = f"{REDIS_URL}/{int(os.environ.get('TEST_REDIS_DB', '9'))}"
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    except Exception as exc:  # pragma: no cover
        pytest.fail(f"Redis is not reachable at {url} ({exc}); `make test` starts it (scripts/test-prereqs.sh)")
    yield url
    client.flushdb()
    client.close()


def make_settings(tmp_path: Path, **kw: object) -> Settings:
    base = dict(data_dir=tmp_path / "data", vgg19_weights="random", device="cpu", progress_interval=0.05,
                heartbeat_seconds=0.5, lease_seconds=5, preview_every=5)
    base.update(kw)
    return Settings(**base)  # type: ignore[arg-type]


@pytest.fixture(params=["sqlite", "postgresql"])
def any_services(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Services]:
    """Migrated services on SQLite and on PostgreSQL (the test runs once on each)."""
    if request.param == "sqlite":
        settings = make_settings(tmp_path)
    else:
        settings = make_settings(tmp_path, database_url=request.getfixturevalue("fresh_pg_url"))
    db.upgrade(settings.resolved_database_url)
    services = build_services(settings)
    yield services
    services.close()


@pytest.fixture()
def services(tmp_path: Path) -> Iterator[Services]:
    settings = make_settings(tmp_path)
    db.upgrade(settings.resolved_database_url)
    s = build_services(settings)
    yield s
    s.close()


class RecordingCelery:
    """Stands in for the Celery app in web tests: records what the web would have enqueued."""

    class _Conf:
        task_default_queue = "gpu"

    def __init__(self) -> None:
        self.sent: list[tuple[str, list[object]]] = []
        self.conf = self._Conf()

    def send_task(self, name: str, args: list[object], **_kw: object) -> None:
        self.sent.append((name, args))


@pytest.fixture()
def celery_recorder() -> RecordingCelery:
    return RecordingCelery()


def csrf_client_class():  # type: ignore[no-untyped-def]
    """A Flask test client that, like a rendered page's form, sends the session's CSRF token with every
    POST to a page (``/api`` takes none). Page tests use it so they test the page, not the token; the CSRF
    check itself is tested with a plain client (tests/test_auth.py)."""
    from flask.testing import FlaskClient

    from web.auth import CSRF_FIELD, SESSION_CSRF

    class CsrfClient(FlaskClient):
        def post(self, *args, **kw):  # type: ignore[no-untyped-def]
            path = args[0] if args else kw.get("path", "/")
            data = kw.get("data")
            if isinstance(path, str) and not path.startswith("/api/") and (data is None or isinstance(data, dict)):
                import secrets

                with self.session_transaction() as sess:
                    token = sess.setdefault(SESSION_CSRF, secrets.token_urlsafe(16))
                kw["data"] = {CSRF_FIELD: token, **(data or {})}
            return super().post(*args, **kw)

    return CsrfClient


@pytest.fixture()
def app(services: Services, celery_recorder: RecordingCelery):  # type: ignore[no-untyped-def]
    from web import create_app

    flask_app = create_app(services=services, celery=celery_recorder)
    flask_app.config["TESTING"] = True
    flask_app.test_client_class = csrf_client_class()
    return flask_app


@pytest.fixture()
def client(app):  # type: ignore[no-untyped-def]
    return app.test_client()


@pytest.fixture()
def single_thread() -> Iterator[None]:
    """One torch thread for the test. Tiny networks and images gain nothing from a second thread, and on
    a shared 2-core machine a two-thread OpenMP run next to a busy neighbour is ~10x slower (threads spin
    at every barrier); one thread also makes results independent of the core count. Modules that run
    torch use it with ``pytestmark = pytest.mark.usefixtures("single_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
