"""Deleting jobs, datasets and models, through the storage interface only.

- A **job** can be deleted once it has finished (succeeded, failed or canceled): everything it stored is
  under one key prefix, ``jobs/<id>/`` (``inputs/``, ``outputs/``, ``preview.jpg``, ``work/`` with a
  training's checkpoints), which is removed; its file rows go, and the job row stays as a tombstone with
  ``deleted_at`` (a GET answers 410 to its owner, lists leave it out). A model the job registered is a
  model of its own (``models/<id>/``) and stays. A queued or running job is a 409: cancel it first.
- A **dataset** or **model** can be deleted when no queued or running job references it (409 naming
  those jobs otherwise): its files (``datasets/<id>/`` / ``models/<id>/``) and its row go. A job that
  finished with it keeps its record.
"""

from __future__ import annotations

import logging
from typing import Any

from core import resources
from core.errors import UserError
from core.jobs import repository as repo
from core.kinds.registry import job_kinds
from core.services import Services

log = logging.getLogger(__name__)


def job_prefix(job_id: str) -> str:
    """The storage prefix holding everything of one job (see :mod:`core.jobs.submit` and the runner)."""
    return f"jobs/{job_id}"


def delete_job(services: Services, job_id: str) -> None:
    """Tombstone a finished job and remove its files. ``UserError`` 404 (no such job) or 409 (active)."""
    status = repo.mark_deleted(services.sessions, job_id)
    if status is None:
        raise UserError(f"there is no job with id {job_id!r}", "id", 404)
    if status in ("queued", "running"):
        raise UserError(f"the job is {status}; cancel it first (POST /api/v1/jobs/{job_id}/cancel), then delete it",
                        "id", 409)
    services.storage.delete_prefix(job_prefix(job_id))
    log.info("job %s deleted (it had %s); its files are removed", job_id, status)


def jobs_using(services: Services, table: str, resource_id: str) -> list[str]:
    """Ids of the queued and running jobs whose parameters name this dataset (``table="dataset"``) or
    model (``"model"``)."""
    params_by_kind = {name: [p for p, t in kind.references.items() if t == table]
                      for name, kind in job_kinds().items()}
    kinds = [k for k, params in params_by_kind.items() if params]
    return [job.id for job in repo.active_jobs(services.sessions, kinds)
            if any((job.params or {}).get(p) == resource_id for p in params_by_kind[job.kind])]


def delete_resource(services: Services, table: str, resource_id: str) -> None:
    """Delete a dataset (``table="datasets"``) or model (``"models"``) no active job uses."""
    singular = table.rstrip("s")
    row: Any = resources.get(services, table, resource_id)
    if row is None:
        raise UserError(f"there is no {singular} with id {resource_id!r}", "id", 404)
    users = jobs_using(services, singular, resource_id)
    if users:
        raise UserError(f"the {singular} is used by {len(users)} queued or running job(s): {', '.join(users)}; "
                        "cancel them or wait for them to finish, then delete it", "id", 409)
    cls = resources.TABLES[table]
    with services.sessions.begin() as s:
        found = s.get(cls, resource_id)
        if found is not None:
            s.delete(found)
    services.storage.delete_prefix(row.path)
    log.info("%s %s deleted with its files", singular, resource_id)
