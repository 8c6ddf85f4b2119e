"""File storage behind one small interface, with a local-directory and an S3-compatible backend.

``ATELIER_STORAGE_URL`` chooses the backend: ``file:///path`` (the default: ``<data dir>/files``) or
``s3://bucket/prefix`` (endpoint, region, credentials and addressing style from the ``ATELIER_S3_*``
settings). See :mod:`core.storage.base` for the interface, :mod:`core.storage.local` and
:mod:`core.storage.s3` for the backends.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from core.storage.base import ObjectInfo, Storage, StoredObject, WorkDir, check_key
from core.storage.local import LocalStorage

if TYPE_CHECKING:  # pragma: no cover
    from core.settings import Settings

__all__ = ["LocalStorage", "ObjectInfo", "Storage", "StoredObject", "WorkDir", "check_key", "open_storage",
           "parse_storage_url"]


def parse_storage_url(url: str) -> tuple[str, str, str]:
    """``file:///path`` -> ("file", "", "/path"); ``s3://bucket/prefix`` -> ("s3", "bucket", "prefix").
    ``ValueError`` with a sentence for anything else."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise ValueError("a file storage URL is file:///absolute/path")
        return "file", "", unquote(parts.path)
    if parts.scheme == "s3":
        if not parts.netloc or parts.query or parts.fragment:
            raise ValueError("an S3 storage URL is s3://bucket or s3://bucket/prefix")
        prefix = parts.path.strip("/")
        if prefix:
            check_key(prefix)
        return "s3", parts.netloc, prefix
    raise ValueError("the storage URL must start with file:// or s3://")


def open_storage(settings: "Settings") -> Storage:
    """The backend ``settings`` name (nothing is contacted yet: an S3 client is made on first use)."""
    if not settings.storage_url:
        return LocalStorage(settings.storage_dir)
    scheme, bucket, rest = parse_storage_url(settings.storage_url)
    if scheme == "file":
        return LocalStorage(Path(rest))
    from core.storage.s3 import S3Config, S3Storage

    return S3Storage(S3Config(bucket=bucket, prefix=rest, endpoint_url=settings.s3_endpoint_url,
                              region=settings.s3_region, access_key_id=settings.s3_access_key_id,
                              secret_access_key=settings.s3_secret_access_key,
                              addressing_style=settings.s3_addressing_style))
