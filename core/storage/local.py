"""Storage in a local directory: the embedded default, and what several workers share over NFS.

Keys map to files under a root directory. Writes go to a temp file beside the target and are renamed
over it (see :mod:`core.atomic`), so a reader never sees half a file and a crash leaves no truncated
file behind a row (at most a hidden ``.<name>.*.tmp`` file, which ``atelier gc`` removes).
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO

from core.atomic import write_atomically
from core.storage.base import CHUNK, ObjectInfo, Storage, StoredObject, WorkDir, check_key


class LocalStorage(Storage):
    """Keys are files under :attr:`root`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

    def path(self, key: str) -> Path:
        """The file behind ``key``. Only this backend has one: code outside :mod:`core.storage` uses the
        interface (tests of this backend may look at the files)."""
        return self.root / check_key(key)

    def describe(self) -> str:
        return f"file://{self.root}"

    # -- writing ------------------------------------------------------------------------------------
    def put_bytes(self, key: str, data: bytes) -> StoredObject:
        write_atomically(self.path(key), lambda fh: fh.write(data))
        return StoredObject(key, len(data), hashlib.sha256(data).hexdigest())

    def put_file(self, key: str, source: Path) -> StoredObject:
        """Copy a local file in atomically (hashing as it goes)."""
        digest = hashlib.sha256()
        size = 0

        def copy(out: BinaryIO) -> None:
            nonlocal size
            with open(source, "rb") as src:
                while chunk := src.read(CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)

        write_atomically(self.path(key), copy)
        return StoredObject(key, size, digest.hexdigest())

    # -- reading ------------------------------------------------------------------------------------
    def open_read(self, key: str) -> BinaryIO:
        path = self.path(key)
        if not path.is_file():
            raise FileNotFoundError(f"nothing stored at {key!r}")
        return open(path, "rb")

    def stat(self, key: str) -> ObjectInfo | None:
        path = self.path(key)
        try:
            st = path.stat()
        except OSError:
            return None
        if not path.is_file():
            return None
        return ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, timezone.utc))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        base = self.path(prefix) if prefix else self.root
        if not base.is_dir():
            return
        for f in sorted(base.rglob("*")):
            if f.is_file() and not f.is_symlink():
                try:
                    st = f.stat()
                except OSError:  # removed while listing
                    continue
                yield ObjectInfo(f.relative_to(self.root).as_posix(), st.st_size,
                                 datetime.fromtimestamp(st.st_mtime, timezone.utc))

    def download(self, key: str, dest: Path) -> None:
        src = self.path(key)
        if not src.is_file():
            raise FileNotFoundError(f"nothing stored at {key!r}")

        def copy(out: BinaryIO) -> None:
            with open(src, "rb") as fh:
                shutil.copyfileobj(fh, out, CHUNK)

        write_atomically(Path(dest), copy)

    @contextlib.contextmanager
    def local_copy(self, key_or_prefix: str, scratch: Path | None = None) -> Iterator[Path]:
        """The stored file or directory itself: no copy on this backend (read-only by contract)."""
        path = self.path(key_or_prefix)
        if not path.exists():
            raise FileNotFoundError(f"nothing stored at {key_or_prefix!r}")
        yield path

    # -- removing -----------------------------------------------------------------------------------
    def delete(self, key: str) -> None:
        path = self.path(key)
        if path.is_file() or path.is_symlink():
            path.unlink(missing_ok=True)
            self._prune_empty_parents(path.parent)

    def delete_prefix(self, prefix: str) -> int:
        """Remove everything under ``prefix`` (a rejected submission, retention, a deleted job)."""
        target = self.path(prefix)
        if target.is_dir():
            n = sum(1 for f in target.rglob("*") if f.is_file())
            shutil.rmtree(target, ignore_errors=True)
        elif target.exists():
            target.unlink()
            n = 1
        else:
            return 0
        self._prune_empty_parents(target.parent)
        return n

    def _prune_empty_parents(self, folder: Path) -> None:
        """Empty folders left by deletions go too (up to, not including, the root)."""
        while folder != self.root and self.root in folder.parents:
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent

    def work_dir(self, prefix: str, scratch: Path) -> WorkDir:
        return WorkDir(self.path(prefix))
