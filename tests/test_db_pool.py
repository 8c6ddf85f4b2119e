"""Pooled PostgreSQL connections: pinged only after sitting idle (core.db.ping_idle_connections)."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from core import db


def test_only_idle_connections_are_pinged_and_a_dead_one_is_replaced(pg_url: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(db, "IDLE_PING_SECONDS", 0.3)
    engine = db.make_engine(pg_url)
    pings = []
    real = engine.dialect.do_ping
    monkeypatch.setattr(engine.dialect, "do_ping", lambda conn: pings.append(1) or real(conn))
    try:
        with engine.connect() as conn:
            first_pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
        for _ in range(5):  # back to back: no round trip spent on pings
            with engine.connect() as conn:
                assert conn.execute(text("SELECT pg_backend_pid()")).scalar() == first_pid
        assert pings == []
        admin = create_engine(pg_url, poolclass=NullPool)
        with admin.connect() as conn:  # what a database restart does to a pooled connection
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first_pid})
        time.sleep(0.4)
        with engine.connect() as conn:  # idle past the limit: pinged, found dead, replaced
            pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
        assert pings and pid != first_pid
    finally:
        engine.dispose()
