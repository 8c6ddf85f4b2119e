"""Database engines and sessions, for SQLite (embedded) and PostgreSQL (distributed).

SQLite runs in WAL mode with a busy timeout so the web process and a worker can write concurrently.
:func:`require_migrated` lets web and worker refuse to start on a database Alembic has not brought to
the newest revision, with a message that says which command to run.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, func, inspect, select, text
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

from core.errors import ConfigError

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            # WAL lets readers run beside one writer; the busy timeout makes a second writer wait
            # instead of failing. Job-state writes are single guarded UPDATEs, so no transaction ever
            # upgrades a stale read snapshot to a write.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    # A database that is down must make a request fail fast (503), not hang: connecting gives up after
    # 3 s, waiting for a pooled connection after 5 s.
    engine = create_engine(url, pool_size=5, max_overflow=5, pool_timeout=5, connect_args={"connect_timeout": 3})
    ping_idle_connections(engine, IDLE_PING_SECONDS)
    return engine


#: A pooled connection idle for longer than this is pinged before it is handed out.
IDLE_PING_SECONDS = 2.0


def ping_idle_connections(engine: Engine, idle_seconds: float) -> None:
    """``pool_pre_ping``, but only for connections that sat idle: a restarted database leaves the pool
    full of dead connections, which a ping replaces before a request gets one. A connection used
    moments ago needs no ping, and under load that is every checkout; pinging them all was one extra
    round trip per session (a third of a status poll's database time, two of a submit's eight). A
    database that restarts within ``idle_seconds`` of a connection's last use costs that one use a
    disconnect error (503, retried by clients), after which SQLAlchemy empties the whole pool."""

    @event.listens_for(engine, "connect")
    def _fresh(_dbapi_conn, record):  # type: ignore[no-untyped-def]
        record.info["atelier_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkin")
    def _returned(_dbapi_conn, record):  # type: ignore[no-untyped-def]
        record.info["atelier_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _handed_out(dbapi_conn, record, _proxy):  # type: ignore[no-untyped-def]
        since = record.info.get("atelier_idle_since")
        if since is not None and time.monotonic() - since < idle_seconds:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:
            raise DisconnectionError("a pooled connection did not answer its ping") from exc
        if not alive:
            raise DisconnectionError("a pooled connection did not answer its ping")


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str):  # type: ignore[no-untyped-def]
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    from alembic import command

    if url.startswith("sqlite"):
        make_engine(url).dispose()  # creates the parent directory
    command.upgrade(alembic_config(url), revision)


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def require_migrated(engine: Engine) -> None:
    """Raise :class:`ConfigError` unless the database is at the newest migration."""
    try:
        current = current_revision(engine)
    except Exception as exc:  # connection refused, bad credentials, ...
        raise ConfigError(f"cannot connect to the database {engine.url.render_as_string(hide_password=True)}: {exc}") from exc
    head = head_revision()
    if current != head:
        state = "has no tables" if current is None else f"is at revision {current}"
        raise ConfigError(
            f"the database {engine.url.render_as_string(hide_password=True)} {state}, but this version needs "
            f"revision {head}. Run `atelier db upgrade` (with the same ATELIER_DATABASE_URL) first."
        )


@contextlib.contextmanager
def advisory_lock(engine: Engine, key: int) -> Iterator[bool]:
    """One holder at a time across all processes: a PostgreSQL session advisory lock on its own
    connection, held for the ``with`` block; yields False when another process holds it. SQLite serves
    one host, whose single worker needs no lock (yields True)."""
    if engine.dialect.name != "postgresql":
        yield True
        return
    with engine.connect() as conn:
        got = bool(conn.execute(select(func.pg_try_advisory_lock(key))).scalar())
        conn.commit()
        try:
            yield got
        finally:
            if got:
                conn.execute(select(func.pg_advisory_unlock(key)))
                conn.commit()
