"""Registered datasets and models: rows in ``datasets``/``models`` plus files under storage.

A dataset is validated once at upload and reused by many training jobs; a model is a generator (trained
here or imported) with the options needed to rebuild it. Engines read them from a local directory.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import select

from core.errors import UserError
from core.models import Dataset, Model, new_id

if TYPE_CHECKING:  # pragma: no cover
    from core.services import Services

TABLES = {"datasets": Dataset, "models": Model}
_Row = TypeVar("_Row", Dataset, Model)


def local_path(services: "Services", table: str, resource_id: str) -> Path:
    """Local directory holding the files of a dataset or model; ``UserError`` if it does not exist."""
    row = get(services, table, resource_id)
    if row is None:
        singular = table.rstrip("s")
        raise UserError(f"there is no {singular} with id {resource_id!r}", singular, 404)
    return services.storage.path(row.path)


def get(services: "Services", table: str, resource_id: str) -> Dataset | Model | None:
    cls = TABLES[table]
    with services.sessions() as s:
        return s.get(cls, resource_id)


def list_rows(services: "Services", table: str, limit: int = 200) -> list[Any]:
    cls = TABLES[table]
    with services.sessions() as s:
        return list(s.scalars(select(cls).order_by(cls.created_at.desc()).limit(limit)))


def add_model(services: "Services", *, name: str, family: str, source_dir: Path, meta: Mapping[str, Any],
              source_job_id: str | None = None) -> Model:
    """Copy a model directory into storage and register it."""
    model_id = new_id()
    return _register(services, source_dir, Model(id=model_id, name=name[:255], family=family, path=f"models/{model_id}",
                                                 meta=dict(meta), source_job_id=source_job_id))


def add_dataset(services: "Services", *, name: str, layout: str, source_dir: Path, meta: Mapping[str, Any]) -> Dataset:
    dataset_id = new_id()
    return _register(services, source_dir, Dataset(id=dataset_id, name=name[:255], layout=layout,
                                                   path=f"datasets/{dataset_id}", meta=dict(meta)))


def _register(services: "Services", source_dir: Path, row: _Row) -> _Row:
    """Copy ``source_dir`` to the row's storage prefix, then insert the row; no row without its files,
    and no files left behind when the insert fails."""
    services.storage.put_tree(row.path, source_dir)
    try:
        with services.sessions.begin() as s:
            s.add(row)
    except Exception:
        services.storage.delete_prefix(row.path)
        raise
    return row


class ScratchDir:
    """A temporary directory under the data dir (same filesystem, so moves into storage are cheap)."""

    def __init__(self, services: "Services") -> None:
        base = services.settings.data_dir / "tmp"
        base.mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(dir=base))

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
