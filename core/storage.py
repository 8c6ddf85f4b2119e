"""File storage behind one small interface.

Rows point at files by *key* (a relative POSIX path such as ``jobs/<id>/outputs/result.png``). The
local implementation maps keys under a root directory; an object-store implementation can take its
place later without touching callers. Every write is atomic (temp file + rename), so a reader never
sees half a file and a crash never leaves a truncated output behind a row.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from core.atomic import write_atomically


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    sha256: str


def _check_key(key: str) -> str:
    if not key or PurePosixPath(key).is_absolute() or "\\" in key or any(
            part in ("", ".", "..") for part in key.split("/")):
        raise ValueError(f"invalid storage key {key!r}")
    return key


class LocalStorage:
    """Storage in a local directory (the default; shared by web and workers on one machine or NFS)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

    def path(self, key: str) -> Path:
        """Local filesystem path of ``key`` (for engines that want a path, e.g. checkpoints)."""
        return self.root / _check_key(key)

    def _write_atomically(self, key: str, write: Callable[[BinaryIO], object]) -> None:
        write_atomically(self.path(key), write)

    def put_bytes(self, key: str, data: bytes) -> StoredObject:
        self._write_atomically(key, lambda fh: fh.write(data))
        return StoredObject(key, len(data), hashlib.sha256(data).hexdigest())

    def put_file(self, key: str, source: Path) -> StoredObject:
        """Copy a local file in atomically (hashing as it goes)."""
        digest = hashlib.sha256()
        size = 0

        def copy(out: BinaryIO) -> None:
            nonlocal size
            with open(source, "rb") as src:
                while chunk := src.read(1 << 20):
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)

        self._write_atomically(key, copy)
        return StoredObject(key, size, digest.hexdigest())

    def put_tree(self, prefix: str, source_dir: Path) -> list[StoredObject]:
        """Copy every file under ``source_dir`` to keys under ``prefix``."""
        stored = []
        for f in sorted(Path(source_dir).rglob("*")):
            if f.is_file() and not f.is_symlink():
                rel = f.relative_to(source_dir).as_posix()
                stored.append(self.put_file(f"{prefix}/{rel}", f))
        return stored

    def read_bytes(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def delete_prefix(self, prefix: str) -> None:
        """Remove everything under ``prefix`` (used to clean up after a rejected submission)."""
        target = self.path(prefix)
        if target.is_dir():
            shutil.rmtree(target, ignore_errors=True)
        elif target.exists():
            target.unlink()
