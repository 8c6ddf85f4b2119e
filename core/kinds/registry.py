"""The explicit list of job kinds. Adding a kind means adding it here: no string dispatch, no
import-time registration."""

from __future__ import annotations

from functools import cache

from core.kinds.base import JobKind


def builtin_kinds() -> tuple[JobKind, ...]:
    from core.kinds import gan, style_transfer

    return (style_transfer.KIND, *gan.KINDS)


@cache
def job_kinds() -> dict[str, JobKind]:
    return {k.name: k for k in builtin_kinds()}


def get_kind(name: str) -> JobKind | None:
    return job_kinds().get(name)
