"""The contract between the job layer and a job kind."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core.schema import Schema

if TYPE_CHECKING:  # pragma: no cover
    from core.kinds.context import JobContext


@dataclass(frozen=True)
class InputSpec:
    """One named upload slot of a kind (multipart field name = ``role``)."""

    role: str
    help: str
    required: bool = True
    multiple: bool = False  # several files under the same field name
    accept: str = "image"  # "image" (decoded and checked at submit) or "file" (opaque, e.g. a .pth)


@dataclass(frozen=True)
class UploadInfo:
    """What the submit path learned about one upload, handed to :attr:`JobKind.check`."""

    role: str
    filename: str
    content_type: str
    size: int
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True)
class JobKind:
    """A job kind.

    ``run(ctx)`` does the work, reporting through ``ctx.progress`` and storing outputs with
    ``ctx.save_output``; it raises :class:`core.errors.JobFailure` (or ``UserError``) for a failure the
    user can act on. ``check(params, uploads)`` runs at submit time for cross-field rules and raises
    :class:`core.errors.UserError`. ``total_steps(params)`` is the step count shown before the job starts.
    ``references`` maps a parameter name to the resource table it names (``"dataset"`` / ``"model"``),
    so submit can verify the id exists; ``check_references(params, {param: row})`` then judges the rows
    found (e.g. pix2pix needs a paired dataset) and raises :class:`core.errors.UserError`.
    ``notices(settings)`` returns plain statements shown on the job page (e.g. that random weights give
    results that are not artistic). ``time_limit_s`` bounds one attempt's wall time (a soft limit: the
    engine stops at its next step, a trainer after writing a checkpoint); ``ATELIER_TIME_LIMITS``
    overrides it per kind.
    """

    name: str
    title: str
    schema: Schema
    inputs: tuple[InputSpec, ...]
    run: Callable[["JobContext"], None]
    total_steps: Callable[[Mapping[str, Any]], int]
    check: Callable[[Mapping[str, Any], list[UploadInfo]], None] | None = None
    references: Mapping[str, str] = field(default_factory=dict)
    check_references: Callable[[Mapping[str, Any], Mapping[str, Any]], None] | None = None
    description: str = ""
    notices: Callable[[Any], list[str]] | None = None  # settings -> notes shown on the job page
    #: Wall time one attempt may run before it stops cleanly ("time limit exceeded"); settings override.
    time_limit_s: int = 3600
