"""The storage interface every backend implements, and what backends share.

Rows point at files by *key*: a relative POSIX path such as ``jobs/<id>/outputs/result.png``. Keys are
checked here (no ``..``, no absolute paths, no empty parts), so no backend can be made to write outside
its root or prefix. Callers never build a filesystem path for an artifact: they stream with
:meth:`Storage.open_read`, write with ``put_*``, and an engine that insists on files gets a local copy
through :meth:`Storage.local_copy` (the local backend hands out its own directory, an object store
downloads). A job's persistent work directory (checkpoints) is a :class:`WorkDir`.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import BinaryIO

#: Bytes per read when streaming (downloads, hashing, copies).
CHUNK = 1 << 20


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    sha256: str


@dataclass(frozen=True)
class ObjectInfo:
    """One stored object as listed: its key, size and last modification (UTC, timezone-aware)."""

    key: str
    size: int
    modified: datetime


def check_key(key: str) -> str:
    """``key`` if it is a safe relative POSIX key, else ``ValueError`` (``..``, ``/abs``, ``a//b``, ``\\``)."""
    if not isinstance(key, str) or not key or PurePosixPath(key).is_absolute() or "\\" in key or "\x00" in key \
            or any(part in ("", ".", "..") for part in key.split("/")):
        raise ValueError(f"invalid storage key {key!r}")
    return key


def file_sha256(path: Path) -> tuple[int, str]:
    """(size, sha256 hex) of a local file, read in chunks."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


class Storage(abc.ABC):
    """What the rest of the program may do with stored files. Every write is atomic: a reader sees the
    previous object or the new one, never part of one, and a failed write leaves nothing visible."""

    #: True when :meth:`presigned_url` can hand out direct download links.
    presigns: bool = False

    # -- writing ------------------------------------------------------------------------------------
    @abc.abstractmethod
    def put_bytes(self, key: str, data: bytes) -> StoredObject:
        """Store ``data`` under ``key`` (replacing any object there)."""

    @abc.abstractmethod
    def put_file(self, key: str, source: Path) -> StoredObject:
        """Store a local file under ``key`` without reading it into memory."""

    def put_tree(self, prefix: str, source_dir: Path) -> list[StoredObject]:
        """Store every file under ``source_dir`` at ``prefix/<relative path>`` (symlinks are skipped)."""
        check_key(prefix)
        stored = []
        for f in sorted(Path(source_dir).rglob("*")):
            if f.is_file() and not f.is_symlink():
                stored.append(self.put_file(f"{prefix}/{f.relative_to(source_dir).as_posix()}", f))
        return stored

    # -- reading ------------------------------------------------------------------------------------
    @abc.abstractmethod
    def open_read(self, key: str) -> BinaryIO:
        """A binary stream of the object (close it, or use it in ``with``); ``FileNotFoundError`` if absent."""

    def read_bytes(self, key: str) -> bytes:
        """The whole object; for small files (metadata, previews) only. Stream big ones."""
        with self.open_read(key) as fh:
            return fh.read()

    def iter_chunks(self, key: str, chunk: int = CHUNK) -> Iterator[bytes]:
        """The object in chunks of at most ``chunk`` bytes (for streamed HTTP responses)."""
        with self.open_read(key) as fh:
            while data := fh.read(chunk):
                yield data

    @abc.abstractmethod
    def stat(self, key: str) -> ObjectInfo | None:
        """Size and modification time of the object, or None when there is none."""

    def exists(self, key: str) -> bool:
        return self.stat(key) is not None

    @abc.abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object under ``prefix/`` (recursively; the whole store for ``""``), in key order."""

    @abc.abstractmethod
    def download(self, key: str, dest: Path) -> None:
        """Copy the object to the local file ``dest`` (atomically: a temp file renamed into place)."""

    @contextlib.contextmanager
    def local_copy(self, key_or_prefix: str, scratch: Path | None = None) -> Iterator[Path]:
        """A local path holding the object (a file) or everything under the prefix (a directory), for
        engines that need file names (datasets, models, inputs). Read-only by contract; gone after the
        ``with`` block (the local backend hands out its own files and removes nothing). ``FileNotFoundError``
        when there is neither an object nor anything under the prefix."""
        check_key(key_or_prefix)
        tmp = Path(tempfile.mkdtemp(prefix="atelier-copy-", dir=_scratch_dir(scratch)))
        try:
            name = PurePosixPath(key_or_prefix).name
            if self.stat(key_or_prefix) is not None:
                target = tmp / name
                self.download(key_or_prefix, target)
            else:
                target = tmp / name
                found = False
                for info in self.list(key_or_prefix):
                    found = True
                    self.download(info.key, target / info.key[len(key_or_prefix) + 1:])
                if not found:
                    raise FileNotFoundError(f"nothing stored at {key_or_prefix!r}")
            yield target
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    # -- removing -----------------------------------------------------------------------------------
    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove one object (no error when it is already gone)."""

    def delete_prefix(self, prefix: str) -> int:
        """Remove the object ``prefix`` and everything under ``prefix/``; returns how many were removed."""
        check_key(prefix)
        n = 0
        if self.stat(prefix) is not None:
            self.delete(prefix)
            n += 1
        for info in list(self.list(prefix)):
            self.delete(info.key)
            n += 1
        return n

    # -- direct links -------------------------------------------------------------------------------
    def presigned_url(self, key: str, *, content_type: str, disposition: str, expires_s: int = 300) -> str | None:
        """A time-limited URL a client can download ``key`` from directly, answering with the given
        ``Content-Type`` and ``Content-Disposition`` (not the stored object's); None if unsupported."""
        return None

    # -- work directories ---------------------------------------------------------------------------
    @abc.abstractmethod
    def work_dir(self, prefix: str, scratch: Path) -> "WorkDir":
        """The persistent work directory of ``prefix`` (a job's checkpoints): see :class:`WorkDir`."""

    def describe(self) -> str:
        """Where the files are, for logs and health output (no credentials)."""
        return self.__class__.__name__


def _scratch_dir(scratch: Path | None) -> str | None:
    if scratch is None:
        return None
    Path(scratch).mkdir(parents=True, exist_ok=True)
    return str(scratch)


class WorkDir:
    """A local directory whose chosen contents persist in storage under ``prefix``.

    A training job writes checkpoints into :attr:`path` and calls :meth:`sync` after each one; an attempt on
    another host starts with :meth:`restore`, which fetches what was synced, so it resumes from the newest
    checkpoint. This base class is the local backend's: the directory *is* the stored one, so there is
    nothing to copy (files land there atomically already)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def restore(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)

    def sync(self, subdir: str = "") -> None:
        """Make ``subdir`` (a folder or file relative to :attr:`path`; all of it for ``""``) durable in
        storage: new and changed files are uploaded, stored files deleted locally are removed."""

    def close(self) -> None:
        """Release local resources (an object store's scratch copy)."""
