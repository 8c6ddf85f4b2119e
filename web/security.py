"""Request-level defences every route gets, installed by :func:`install_security`.

- **Host allow-list** (``ATELIER_ALLOWED_HOSTS``; by default the loopback names when the service is
  bound to loopback): a request whose ``Host`` is not on it gets 400 before any handler runs. A
  DNS-rebinding page reaches the service under the attacker's name (``Host: evil.example``), so it is
  refused here, whatever else it sends.
- **Same-origin POSTs**: browsers send ``Origin`` with every POST (``null`` from sandboxed frames,
  refused too); a POST whose origin's host is not on the allow-list is refused with 403. Without an
  allow-list (a service bound to a public address with none configured) the origin must at least match
  the request's own host. Scripts and API clients that send no ``Origin`` are not browsers acting for
  someone else and pass.
- **Response headers**: a strict Content-Security-Policy on every response (scripts, styles and
  connections from this origin only; no plugins, no framing, no inline code), ``nosniff``, no referrer
  to other sites. Stored files get a stricter policy of their own (see :func:`file_headers`).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Flask, Response, jsonify, request
import re

#: The pages load scripts, styles and images from this origin only and never run inline code.
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
            "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
            "frame-ancestors 'none'")
#: A stored file opened on its own can show an image and nothing else: even if a browser rendered it
#: as a document, the sandbox gives it no scripts and no origin.
FILE_CSP = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; sandbox"
#: Image types the pages show inline; every other stored file is served as a download.
INLINE_IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/webp", "image/gif"})


_HOST = re.compile(r"^(?:\[(?P<v6>[0-9a-f:.]+)\]|(?P<name>[a-z0-9.-]+))(?::(?P<port>[0-9]{1,5}))?$")


def host_is_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    """``host`` (a ``Host`` header or an origin's ``host[:port]``) names one of ``allowed``; the port is
    ignored, an entry starting with a dot matches its subdomains. Hand-written rather than werkzeug's
    ``host_is_trusted`` because that one refuses bracketed IPv6 (``[::1]:8000``), which a loopback
    service must answer to."""
    m = _HOST.match(host.strip().lower())
    if m is None:
        return False
    name = m.group("v6") or m.group("name") or ""
    for entry in allowed:
        entry = entry.strip("[]")
        if name == entry or (entry.startswith(".") and (name.endswith(entry) or name == entry[1:])):
            return True
    return False


def _refuse(message: str, field: str, status: int) -> tuple[Response, int]:
    if request.path.startswith("/api/") or request.path == "/healthz":
        return jsonify({"error": message, "field": field}), status
    return Response(message, status=status, mimetype="text/plain"), status


def install_security(app: Flask, allowed_hosts: tuple[str, ...]) -> None:
    """Install the Host check (first, before any other hook), the Origin check and the headers."""

    @app.before_request
    def _allowed_host():  # type: ignore[no-untyped-def]
        host = request.headers.get("Host", "")
        if allowed_hosts and not host_is_allowed(host, allowed_hosts):
            shown = host[:100]
            return _refuse(f"this service does not answer to the host name {shown!r}; the names it answers to "
                           "are set by ATELIER_ALLOWED_HOSTS", "Host", 400)
        return None

    @app.before_request
    def _same_origin_posts():  # type: ignore[no-untyped-def]
        if request.method != "POST":
            return None
        origin = request.headers.get("Origin")
        if origin is None:
            return None
        netloc = urlsplit(origin).netloc if origin != "null" else ""
        ok = host_is_allowed(netloc, allowed_hosts) if allowed_hosts else (netloc and netloc == request.host)
        if not ok:
            return _refuse("Requests from other sites' pages are refused.", "Origin", 403)
        return None

    @app.after_request
    def _headers(resp: Response) -> Response:
        resp.headers.setdefault("Content-Security-Policy", PAGE_CSP)
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers.setdefault("Referrer-Policy", "same-origin")
        resp.headers.setdefault("X-Frame-Options", "DENY")
        return resp


def file_headers(resp: Response, content_type: str, filename: str, download: bool) -> Response:
    """Headers of a stored input or output: shown inline only when it is an image type the pages show
    (and was typed by decoding it); anything else is an attachment. A strict sandboxing CSP either way."""
    inline = content_type in INLINE_IMAGE_TYPES and not download
    safe_name = "".join(c if c.isalnum() or c in "._-" else "_" for c in filename)[:120] or "file"
    resp.headers["Content-Disposition"] = f'{"inline" if inline else "attachment"}; filename="{safe_name}"'
    resp.headers["Content-Security-Policy"] = FILE_CSP
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp
