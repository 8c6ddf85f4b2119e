"""Files kept across a form's error, so nobody has to choose them again.

A browser cannot refill a file input, so when a submission is refused the valid files it carried are
stored under ``uploads/<token>/`` and the form carries only the opaque token (a hidden field) and the
indexes of the files to keep (checkboxes). The next submission reads them back through the storage
interface. A set of kept files belongs to the identity that sent them (another owner's token finds
nothing) and expires after :data:`KEEP_SECONDS`; ``atelier gc`` removes what is older
(:func:`stale_tokens`, :func:`discard`), and a successful submission removes its set at once.

Keys: ``uploads/<token>/manifest.json`` (owner, time, and each file's role, name, type and key) and
``uploads/<token>/<index>-<safe name>`` (the bytes).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.models import as_utc, utcnow

if TYPE_CHECKING:  # pragma: no cover
    from core.jobs.submit import Upload
    from core.services import Services

PREFIX = "uploads"
#: How long kept files wait for the next submission of their form.
KEEP_SECONDS = 6 * 3600
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{20,64}$")


@dataclass(frozen=True)
class KeptFile:
    index: int
    role: str
    filename: str
    content_type: str
    key: str
    size: int


def _manifest_key(token: str) -> str:
    return f"{PREFIX}/{token}/manifest.json"


def keep(services: "Services", uploads: Sequence["Upload"], owner: str | None) -> str | None:
    """Store ``uploads``; returns the token that finds them again (None when there is nothing to keep)."""
    from core.jobs.runner import safe_filename

    if not uploads:
        return None
    token = secrets.token_urlsafe(24)
    files = []
    for i, up in enumerate(uploads):
        key = f"{PREFIX}/{token}/{i}-{safe_filename(up.filename, up.role)}"
        obj = services.storage.put_bytes(key, up.data)
        files.append({"index": i, "role": up.role, "filename": up.filename, "content_type": up.content_type,
                      "key": key, "size": obj.size})
    manifest = {"owner": owner, "created_at": utcnow().isoformat(), "files": files}
    services.storage.put_bytes(_manifest_key(token), json.dumps(manifest).encode())
    return token


def _manifest(services: "Services", token: str, owner: str | None,
              now: dt.datetime | None = None) -> dict[str, Any] | None:
    if not isinstance(token, str) or not _TOKEN.match(token):
        return None
    try:
        manifest = json.loads(services.storage.read_bytes(_manifest_key(token)))
    except (FileNotFoundError, KeyError, ValueError):
        return None
    if manifest.get("owner") != owner:
        return None
    created = as_utc(dt.datetime.fromisoformat(manifest["created_at"]))
    if ((now or utcnow()) - created).total_seconds() > KEEP_SECONDS:
        return None
    return manifest


def listing(services: "Services", token: str | None, owner: str | None) -> list[KeptFile]:
    """The files kept under ``token`` for ``owner`` (empty when unknown, expired or another owner's)."""
    manifest = _manifest(services, token, owner) if token else None
    if manifest is None:
        return []
    return [KeptFile(int(f["index"]), f["role"], f["filename"], f["content_type"], f["key"], int(f["size"]))
            for f in manifest["files"]]


def find(services: "Services", token: str, owner: str | None, index: int) -> KeptFile | None:
    for f in listing(services, token, owner):
        if f.index == index:
            return f
    return None


def read(services: "Services", token: str | None, owner: str | None, indexes: Iterable[int]) -> list["Upload"]:
    """The kept files with these indexes, as uploads (what the form sends with its new files)."""
    from core.jobs.submit import Upload

    wanted = set(indexes)
    out = []
    for f in listing(services, token, owner):
        if f.index in wanted:
            try:
                data = services.storage.read_bytes(f.key)
            except (FileNotFoundError, KeyError):
                continue
            out.append(Upload(role=f.role, filename=f.filename, data=data, content_type=f.content_type))
    return out


def discard(services: "Services", token: str | None) -> None:
    if token and _TOKEN.match(token):
        services.storage.delete_prefix(f"{PREFIX}/{token}")


def stale_tokens(services: "Services", now: dt.datetime | None = None, max_age_s: float = KEEP_SECONDS) -> list[str]:
    """Tokens whose newest file is older than ``max_age_s``: what ``atelier gc`` removes (with
    :func:`discard`). A set without a manifest (a crash between writes) is judged by its files' age."""
    now = now or utcnow()
    newest: dict[str, dt.datetime] = {}
    for obj in services.storage.list(PREFIX):
        parts = obj.key[len(PREFIX) + 1:].split("/", 1)
        if len(parts) != 2:
            continue
        modified = as_utc(obj.modified)
        if parts[0] not in newest or modified > newest[parts[0]]:
            newest[parts[0]] = modified
    return sorted(t for t, when in newest.items() if (now - when).total_seconds() > max_age_s)
