"""Atomic file writes: readers see the old file or the new one, never half of one, and a crash leaves no
truncated file behind.

A plain module of its own so that the engines (checkpoints, model files) and storage share one
implementation without the engines knowing anything about storage keys.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def _replace_atomically(target: Path, fill: Callable[[int, Path], object]) -> None:
    """Create a temp file beside ``target``, let ``fill(fd, tmp_path)`` write and fsync it (and close
    ``fd``), then rename it over ``target``: readers see the old file or the new one, never half of one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        fill(fd, Path(tmp))
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomically(target: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write through ``write(fh)`` atomically (see :func:`_replace_atomically`). Shared by storage,
    checkpoints and local outputs."""

    def fill(fd: int, _tmp: Path) -> None:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())

    _replace_atomically(Path(target), fill)


def write_atomically_by_path(target: Path, write: Callable[[Path], object]) -> None:
    """The same for writers that insist on a file name rather than a handle (safetensors' ``save_file``):
    ``write(tmp_path)`` fills the temp file, which is then fsynced and renamed over ``target``."""

    def fill(fd: int, tmp: Path) -> None:
        os.close(fd)
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())

    _replace_atomically(Path(target), fill)
