"""Stored files over HTTP: streamed from storage in chunks, or a 302 to a presigned URL.

Nothing is read whole into memory: the response iterates over :meth:`Storage.open_read` (a local file or
an S3 body), with ``Content-Length``, ``ETag``/``Last-Modified`` and ranges as a static file server has.

With ``ATELIER_STORAGE_REDIRECTS=on`` and a backend that signs URLs (S3), a file served as an
*attachment* answers 302 to a short-lived presigned URL, so the bytes do not pass through the web
process. Type and disposition come from the row, not the client, and are part of the signature
(``response-content-type`` / ``response-content-disposition``). Images the pages show inline are
always streamed from this origin: the pages' CSP allows images from ``'self'`` only, and the sandboxing
file CSP (see :func:`web.security.file_headers`) can be set only on responses this app sends.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from flask import Response, abort, redirect, request
from werkzeug.wsgi import wrap_file

from core.storage.base import CHUNK
from web import deps
from web.security import INLINE_IMAGE_TYPES, file_headers
from web.zipstream import zip_stream


def send_stored(key: str, mimetype: str, name: str, download: bool = False) -> Response:
    """The stored ``key`` as ``mimetype`` (already checked by the caller against the types it serves)."""
    services = deps.services()
    storage, settings = services.storage, services.settings
    attachment = download or mimetype not in INLINE_IMAGE_TYPES
    if attachment and settings.storage_redirects and storage.presigns:
        disposition = file_headers(Response(), mimetype, name, True).headers["Content-Disposition"]
        url = storage.presigned_url(key, content_type=mimetype, disposition=disposition,
                                    expires_s=settings.presign_seconds)
        if url:
            resp = redirect(url, 302)
            resp.headers["Cache-Control"] = "no-store"  # the link expires; never cache the redirect
            return file_headers(resp, mimetype, name, True)
    info = storage.stat(key)
    if info is None:
        abort(404, "the file is gone from storage")
    try:
        fh = storage.open_read(key)
    except FileNotFoundError:  # removed between the stat and the open
        abort(404, "the file is gone from storage")
    resp = Response(wrap_file(request.environ, fh, CHUNK), mimetype=mimetype, direct_passthrough=True)
    resp.content_length = info.size
    resp.last_modified = info.modified
    resp.set_etag(hashlib.sha256(f"{key}\0{info.size}\0{info.modified.isoformat()}".encode()).hexdigest()[:32])
    resp.cache_control.no_cache = True
    resp = resp.make_conditional(request.environ, accept_ranges=True, complete_length=info.size)
    return file_headers(resp, mimetype, name, download)


def send_zip(files: Iterable[tuple[str, str]], filename: str) -> Response:
    """``files`` (``(name in the archive, key)``) as one zip attachment, written while it is sent."""
    resp = Response(zip_stream(deps.services().storage, files), mimetype="application/zip")
    return file_headers(resp, "application/zip", filename, True)
