"""The Alembic migrations create exactly the schema the models describe (no drift), on SQLite and
PostgreSQL, and web/worker refuse an unmigrated database with a message naming the command."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from core import db
from core.errors import ConfigError
from core.models import Base
from core.services import build_services
from tests.conftest import make_settings


def _drift(url: str) -> list[object]:
    engine = db.make_engine(url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": False})
            return compare_metadata(ctx, Base.metadata)
    finally:
        engine.dispose()


def test_no_drift_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    db.upgrade(url)
    assert _drift(url) == []


def test_no_drift_postgresql(fresh_pg_url: str) -> None:
    db.upgrade(fresh_pg_url)
    assert _drift(fresh_pg_url) == []


def test_drift_is_detected(tmp_path: Path) -> None:
    """The drift check itself can fail: a database one migration short differs from the models."""
    url = f"sqlite:///{tmp_path / 'm.db'}"
    engine = db.make_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE jobs (id VARCHAR(36) PRIMARY KEY)")
    engine.dispose()
    assert _drift(url) != []


def test_unmigrated_database_is_refused_with_the_command(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    with pytest.raises(ConfigError, match="atelier db upgrade"):
        build_services(settings)
    db.upgrade(settings.resolved_database_url)
    build_services(settings).close()


def test_downgrade_and_upgrade_round_trip(fresh_pg_url: str) -> None:
    from alembic import command

    db.upgrade(fresh_pg_url)
    command.downgrade(db.alembic_config(fresh_pg_url), "base")
    engine = db.make_engine(fresh_pg_url)
    assert db.current_revision(engine) is None
    engine.dispose()
    db.upgrade(fresh_pg_url)
    assert _drift(fresh_pg_url) == []


def test_an_advisory_lock_has_one_holder_at_a_time(fresh_pg_url: str, tmp_path: Path) -> None:
    """The dispatch sweep and retention runs rely on it: a second holder is refused until the first lets go."""
    engine = db.make_engine(fresh_pg_url)
    try:
        with db.advisory_lock(engine, 4242) as first:
            with db.advisory_lock(engine, 4242) as second, db.advisory_lock(engine, 4243) as other:
                assert first and not second and other
        with db.advisory_lock(engine, 4242) as again:
            assert again
    finally:
        engine.dispose()
    sqlite = db.make_engine(f"sqlite:///{tmp_path / 'l.db'}")
    with db.advisory_lock(sqlite, 4242) as a, db.advisory_lock(sqlite, 4242) as b:
        assert a and b  # one host, one worker: no lock needed
    sqlite.dispose()
