"""Storage in an S3-compatible object store (AWS S3, MinIO, Ceph RGW), so workers on several hosts
share artifacts without a shared filesystem.

Keys map to ``<prefix>/<key>`` in one bucket. boto3 is imported when the backend is built, so processes
on the local backend never load it.

Atomic writes: an S3 object becomes visible only when its upload completes. A single ``PutObject``
stores the whole body or nothing (S3 checks the length, and the checksum boto3 sends, before it commits
the object), and a multipart upload (``put_file`` of a file above :data:`MULTIPART_THRESHOLD`) is
invisible until ``CompleteMultipartUpload``; boto3's transfer manager aborts it when a part fails. So,
unlike a file system, no temporary key plus copy is needed: a reader (a download, another worker's
resume) sees the previous object or the new one, never part of one, and a failed upload leaves no
visible key. What can be left behind is an *incomplete multipart upload* (a process killed mid-upload);
it holds space but is never visible, and ``atelier gc`` aborts those older than its cut-off.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from core.atomic import write_atomically
from core.storage.base import CHUNK, ObjectInfo, Storage, StoredObject, WorkDir, check_key, file_sha256

#: Files above this size are uploaded in parts (several parts in parallel).
MULTIPART_THRESHOLD = 64 << 20


@dataclass(frozen=True)
class S3Config:
    bucket: str
    prefix: str = ""  # no leading/trailing slash
    endpoint_url: str = ""  # "" = AWS
    region: str = ""
    access_key_id: str = ""
    secret_access_key: str = ""
    addressing_style: str = "auto"  # "path" for MinIO/Ceph without wildcard DNS, "virtual", "auto"


def _is_missing(exc: Exception) -> bool:
    code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound")


class S3Storage(Storage):
    presigns = True

    def __init__(self, config: S3Config, client: Any = None) -> None:
        self.config = config
        self.bucket = config.bucket
        self.prefix = config.prefix.strip("/")
        self._client = client

    @property
    def client(self) -> Any:
        """The boto3 client, made on first use (thread-safe afterwards, shared by the process)."""
        if self._client is None:
            import boto3
            from botocore.config import Config

            c = self.config
            self._client = boto3.session.Session().client(
                "s3", endpoint_url=c.endpoint_url or None, region_name=c.region or None,
                aws_access_key_id=c.access_key_id or None, aws_secret_access_key=c.secret_access_key or None,
                config=Config(s3={"addressing_style": c.addressing_style}, retries={"max_attempts": 5,
                                                                                   "mode": "standard"}))
        return self._client

    def describe(self) -> str:
        where = f" at {self.config.endpoint_url}" if self.config.endpoint_url else ""
        return f"s3://{self.bucket}/{self.prefix}{where}"

    def _k(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _unk(self, full: str) -> str:
        return full[len(self.prefix) + 1:] if self.prefix else full

    # -- writing ------------------------------------------------------------------------------------
    def put_bytes(self, key: str, data: bytes) -> StoredObject:
        import hashlib

        self.client.put_object(Bucket=self.bucket, Key=self._k(key), Body=data)
        return StoredObject(key, len(data), hashlib.sha256(data).hexdigest())

    def put_file(self, key: str, source: Path) -> StoredObject:
        """Hash, then upload from the file (in parts above :data:`MULTIPART_THRESHOLD`): never whole in memory."""
        from boto3.s3.transfer import TransferConfig

        size, sha = file_sha256(Path(source))
        with open(source, "rb") as fh:
            self.client.upload_fileobj(fh, self.bucket, self._k(key),
                                       Config=TransferConfig(multipart_threshold=MULTIPART_THRESHOLD))
        return StoredObject(key, size, sha)

    # -- reading ------------------------------------------------------------------------------------
    def open_read(self, key: str) -> BinaryIO:
        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=self._k(key))
        except self.client.exceptions.NoSuchKey:
            raise FileNotFoundError(f"nothing stored at {key!r}") from None
        return resp["Body"]  # a botocore StreamingBody: read(n), close(), usable in ``with``

    def stat(self, key: str) -> ObjectInfo | None:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._k(key))
        except Exception as exc:
            if _is_missing(exc):
                return None
            raise
        return ObjectInfo(key, int(head["ContentLength"]), head["LastModified"])

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        full = (self._k(prefix) + "/") if prefix else (self.prefix + "/" if self.prefix else "")
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full)
        for page in pages:
            for obj in page.get("Contents", []):
                yield ObjectInfo(self._unk(obj["Key"]), int(obj["Size"]), obj["LastModified"])

    def download(self, key: str, dest: Path) -> None:
        with self.open_read(key) as body:
            write_atomically(Path(dest), lambda out: shutil.copyfileobj(body, out, CHUNK))

    # -- removing -----------------------------------------------------------------------------------
    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._k(key))

    def delete_prefix(self, prefix: str) -> int:
        keys = []
        if self.stat(prefix) is not None:
            keys.append(self._k(prefix))
        keys += [self._k(info.key) for info in self.list(prefix)]
        for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
            batch = [{"Key": k} for k in keys[start:start + 1000]]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
        return len(keys)

    def incomplete_uploads(self) -> Iterator[tuple[str, str, datetime]]:
        """(key, upload id, started) of multipart uploads never completed nor aborted (a killed process)."""
        pages = self.client.get_paginator("list_multipart_uploads").paginate(
            Bucket=self.bucket, Prefix=(self.prefix + "/") if self.prefix else "")
        for page in pages:
            for up in page.get("Uploads", []):
                yield self._unk(up["Key"]), up["UploadId"], up["Initiated"]

    def abort_upload(self, key: str, upload_id: str) -> None:
        self.client.abort_multipart_upload(Bucket=self.bucket, Key=self._k(key), UploadId=upload_id)

    # -- direct links -------------------------------------------------------------------------------
    def presigned_url(self, key: str, *, content_type: str, disposition: str, expires_s: int = 300) -> str | None:
        """A GET link that answers with *our* Content-Type and Content-Disposition (``response-*``
        overrides are part of the signature, so the client cannot change them)."""
        return self.client.generate_presigned_url(
            "get_object", ExpiresIn=expires_s,
            Params={"Bucket": self.bucket, "Key": self._k(key), "ResponseContentType": content_type,
                    "ResponseContentDisposition": disposition, "ResponseCacheControl": "private, max-age=0"})

    def work_dir(self, prefix: str, scratch: Path) -> WorkDir:
        check_key(prefix)
        return S3WorkDir(self, prefix, scratch)


def _is_temp(rel: str) -> bool:
    """Temp files of atomic local writes (``.<name>.<random>.tmp``): never uploaded."""
    name = rel.rsplit("/", 1)[-1]
    return name.startswith(".") and name.endswith(".tmp")


class S3WorkDir(WorkDir):
    """A scratch directory on this host mirroring ``prefix`` in the bucket. :meth:`restore` downloads
    what an earlier attempt (on any host) synced; :meth:`sync` uploads new and changed files and removes
    the stored copies of files this attempt knew and deleted (pruned checkpoints). Uploads come before
    removals, so a crash in between leaves an extra old checkpoint, never none."""

    def __init__(self, storage: S3Storage, prefix: str, scratch: Path) -> None:
        Path(scratch).mkdir(parents=True, exist_ok=True)
        super().__init__(Path(tempfile.mkdtemp(prefix="work-", dir=scratch)))
        self.storage, self.prefix = storage, prefix
        self._synced: dict[str, tuple[int, int]] = {}  # relative path -> (size, mtime_ns) last stored

    def _state(self, f: Path) -> tuple[int, int]:
        st = f.stat()
        return st.st_size, st.st_mtime_ns

    def restore(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        for info in self.storage.list(self.prefix):
            rel = info.key[len(self.prefix) + 1:]
            target = self.path / rel
            self.storage.download(info.key, target)
            self._synced[rel] = self._state(target)

    def sync(self, subdir: str = "") -> None:
        base = self.path / subdir if subdir else self.path
        local: set[str] = set()
        if base.is_file():
            files = [base]
        else:
            files = sorted(f for f in base.rglob("*") if f.is_file()) if base.is_dir() else []
        for f in files:
            rel = f.relative_to(self.path).as_posix()
            if _is_temp(rel):
                continue
            local.add(rel)
            state = self._state(f)
            if self._synced.get(rel) != state:
                self.storage.put_file(f"{self.prefix}/{rel}", f)
                self._synced[rel] = state
        if base.is_file():
            return
        # Removed here since restored or synced here: removed there too. Only those: an attempt that lost
        # its lease and runs on for a moment must not delete what the attempt that took over has stored.
        inside = (subdir.rstrip("/") + "/") if subdir else ""
        for rel in [r for r in self._synced if r.startswith(inside) and r not in local]:
            self.storage.delete(f"{self.prefix}/{rel}")
            del self._synced[rel]

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
