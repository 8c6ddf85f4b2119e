"""The handles every process needs (settings, database, storage), built once at start-up.

Web and worker both call :func:`build_services`; tests build one on a temporary directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from core.db import make_engine, make_sessionmaker, require_migrated
from core.settings import Settings
from core.storage import LocalStorage, Storage, open_storage


@dataclass
class Services:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    storage: Storage

    @property
    def scratch_dir(self) -> Path:
        """This host's scratch space (local copies of inputs, datasets and models, a job's work directory on
        an object store); never shared between hosts, and nothing in it outlives what made it."""
        return self.settings.data_dir.resolve() / "tmp"

    def close(self) -> None:
        self.engine.dispose()


def build_services(settings: Settings, *, check_migrated: bool = True) -> Services:
    """Connect to the database and storage. With ``check_migrated`` (the default for web and worker),
    refuse to continue on a database that is not at the newest migration."""
    engine = make_engine(settings.resolved_database_url)
    if check_migrated:
        try:
            require_migrated(engine)
        except Exception:
            engine.dispose()
            raise
    storage = open_storage(settings)
    if isinstance(storage, LocalStorage):
        storage.root.mkdir(parents=True, exist_ok=True)
    return Services(settings, engine, make_sessionmaker(engine), storage)
