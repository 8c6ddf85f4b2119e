"""Registered datasets and models: rows in ``datasets``/``models`` plus files under storage.

A dataset is validated once at upload and reused by many training jobs; a model is a generator (trained
here or imported) with the options needed to rebuild it. Engines read them from a local directory.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import select

from core.errors import UserError
from core.models import Dataset, Model, new_id

if TYPE_CHECKING:  # pragma: no cover
    from core.services import Services

TABLES = {"datasets": Dataset, "models": Model}
_Row = TypeVar("_Row", Dataset, Model)


@contextlib.contextmanager
def local_copy(services: "Services", table: str, resource_id: str) -> Iterator[Path]:
    """A local directory holding the files of a dataset or model, for the ``with`` block (the stored one
    on the local backend, a download into this host's scratch space on an object store); ``UserError``
    if there is no such row, or its files are gone."""
    row = get(services, table, resource_id)
    singular = table.rstrip("s")
    if row is None:
        raise UserError(f"there is no {singular} with id {resource_id!r}", singular, 404)
    try:
        copy = services.storage.local_copy(row.path, services.scratch_dir)
        path = copy.__enter__()
    except FileNotFoundError:
        raise UserError(f"the files of {singular} {row.name!r} are gone from storage (removed by retention or "
                        f"by hand); register it again", singular, 410) from None
    try:
        yield path
    finally:
        copy.__exit__(None, None, None)


def get(services: "Services", table: str, resource_id: str) -> Dataset | Model | None:
    cls = TABLES[table]
    with services.sessions() as s:
        return s.get(cls, resource_id)


def list_rows(services: "Services", table: str, limit: int = 200, owner: str | None = None) -> list[Any]:
    """Newest first; ``owner``: only that owner's rows (a non-admin token), ``None``: every row."""
    cls = TABLES[table]
    q = select(cls).order_by(cls.created_at.desc()).limit(limit)
    if owner is not None:
        q = q.where(cls.owner == owner)
    with services.sessions() as s:
        return list(s.scalars(q))


def rename(services: "Services", table: str, resource_id: str, name: Any) -> Dataset | Model | None:
    """Give a dataset or model a new name (trimmed, 1 to 255 characters); ``None`` when there is no such
    row. Names are what pages and forms show, so an empty one is refused rather than stored."""
    if not isinstance(name, str) or not " ".join(name.split()):
        raise UserError("name must be a non-empty string", "name", 422)
    name = " ".join(name.split())
    if len(name) > 255:
        raise UserError(f"name is {len(name)} characters long; at most 255 are allowed", "name", 422)
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise UserError("name must not contain control characters", "name", 422)
    cls = TABLES[table]
    with services.sessions.begin() as s:
        row = s.get(cls, resource_id)
        if row is None:
            return None
        row.name = name
    return get(services, table, resource_id)


def add_model(services: "Services", *, name: str, family: str, source_dir: Path, meta: Mapping[str, Any],
              source_job_id: str | None = None, owner: str | None = None) -> Model:
    """Copy a model directory into storage and register it (``owner``: who may see it; None with auth off)."""
    model_id = new_id()
    return _register(services, source_dir, Model(id=model_id, name=name[:255], family=family, path=f"models/{model_id}",
                                                 meta=dict(meta), source_job_id=source_job_id, owner=owner))


def add_dataset(services: "Services", *, name: str, layout: str, source_dir: Path, meta: Mapping[str, Any],
                owner: str | None = None) -> Dataset:
    dataset_id = new_id()
    return _register(services, source_dir, Dataset(id=dataset_id, name=name[:255], layout=layout,
                                                   path=f"datasets/{dataset_id}", meta=dict(meta), owner=owner))


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
