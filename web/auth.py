"""Who a request acts for, the login form, and CSRF tokens on the pages.

**Identity.** With ``ATELIER_AUTH=on`` every ``/api/v1`` call needs ``Authorization: Bearer <token>``
(401 JSON with ``WWW-Authenticate: Bearer`` otherwise), except the OpenAPI document, which stays public
like ``/healthz``, ``/api/docs``, ``/login`` and the static files (they hold no one's data). The pages
use the same tokens through a login form that opens a Flask session (a signed cookie holding the token's
*id*, never the token): HttpOnly, SameSite=Lax, Secure when the request came over HTTPS. The token row
is read on every request (:func:`core.auth.verify_token`), so revoking a token ends its API access and
its page sessions at once. The pages' scripts call the API with that session cookie; such a call that
changes something must come from this origin (a same-origin ``Origin`` header, which browsers send with
every non-GET fetch, or an ``X-CSRF-Token`` header), so another site cannot ride on the cookie (SameSite
already keeps it off cross-site POSTs; this is the second lock). With auth off :func:`identity` is
``None`` and every row is visible, as before.

**CSRF.** Every POST to a page (not ``/api``) must carry the session's token in the ``csrf_token`` field
(templates write it with ``{{ csrf_field() }}``), with auth on or off: it costs nothing and protects a
loopback server from a cross-site form post. A small hand-written, session-bound token rather than
Flask-WTF's ``CSRFProtect``: that one also wants the API's bearer and JSON requests exempted per view,
signs time-limited tokens that expire under a page left open, and adds a dependency for ~20 lines.
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.sessions import SecureCookieSessionInterface
from markupsafe import Markup
from werkzeug.exceptions import RequestEntityTooLarge

from core import auth as core_auth
from core.auth import Identity
from core.settings import Settings

bp = Blueprint("auth", __name__)

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SESSION_TOKEN_ID = "tid"
SESSION_CSRF = "csrf"
#: Paths anyone may open with auth on: they show no one's data.
PUBLIC_PATHS = ("/healthz", "/login", "/api/v1/openapi.json", "/api/docs")
PUBLIC_PREFIXES = ("/static/",)
#: Page views whose form may be refused as too large before its CSRF field can be read: they render the
#: form again with the size error and store nothing (see :func:`_check_csrf`).
UPLOAD_FORM_VIEWS = frozenset({"pages.index", "pages.kind_form"})
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def identity() -> Identity | None:
    """The identity of the current request (``None``: auth is off)."""
    return g.get("identity")


def is_admin() -> bool:
    """Admin powers (the workers view): everyone with auth off, admin tokens with it on."""
    ident = identity()
    if ident is None:  # auth off; or a public page (login, docs) with auth on, which is no one
        return not current_app.extensions["atelier"].services.settings.auth_enabled
    return ident.admin


class _SessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie session, with ``Secure`` set per request: on when the request came over
    HTTPS, off on a plain-HTTP loopback server (a Secure cookie would never come back there)."""

    def get_cookie_secure(self, app: Flask) -> bool:  # type: ignore[override]
        return bool(request.is_secure) or bool(app.config.get("SESSION_COOKIE_SECURE"))

    def open_session(self, app: Flask, request):  # type: ignore[no-untyped-def, override]
        """Without a session cookie (every API call) the session is empty: skip building the signing
        serializer Flask builds first (a few percent of a status poll)."""
        if not request.cookies.get(self.get_cookie_name(app)):
            return self.session_class()
        return super().open_session(app, request)


def secret_key(settings: Settings) -> str:
    """``ATELIER_SECRET_KEY``, or one generated at first start and kept (mode 0600) under the data dir,
    so sessions survive a restart. Several web servers behind one name need the same key: set it."""
    if settings.secret_key:
        return settings.secret_key
    path = Path(settings.data_dir) / "secret_key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process wrote it first
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(key)
    return key


def csrf_token() -> str:
    token = session.get(SESSION_CSRF)
    if not token:
        token = secrets.token_urlsafe(32)
        session[SESSION_CSRF] = token
    return str(token)


def csrf_field() -> Markup:
    return Markup('<input type="hidden" name="{}" value="{}">').format(CSRF_FIELD, csrf_token())


def _csrf_ok(sent: str | None) -> bool:
    expected = session.get(SESSION_CSRF)
    return bool(sent and expected) and hmac.compare_digest(str(sent), str(expected))


def _is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def _unauthorized(message: str, invalid: bool) -> Response:
    resp = jsonify({"error": message, "field": "Authorization"})
    resp.status_code = 401
    resp.headers["WWW-Authenticate"] = 'Bearer realm="atelier"' + (', error="invalid_token"' if invalid else "")
    return resp


def _same_origin() -> bool:
    origin = request.headers.get("Origin")
    return bool(origin) and origin != "null" and urlsplit(origin).netloc == request.host


def _identify() -> Response | None:
    """Set ``g.identity``; refuse what needs an identity and has none."""
    g.identity = None
    settings = current_app.extensions["atelier"].services.settings
    if not settings.auth_enabled or _is_public(request.path):
        return None
    sf = current_app.extensions["atelier"].services.sessions
    api = request.path.startswith("/api/") or request.path == "/metrics"  # a scraper sends a Bearer token
    header = request.headers.get("Authorization", "")
    if api and header:
        scheme, _, token = header.partition(" ")
        ident = core_auth.verify_token(sf, token.strip()) if scheme.lower() == "bearer" else None
        if ident is None:
            return _unauthorized("the token is not valid (unknown, revoked, or not a Bearer token)", invalid=True)
        g.identity = ident
        return None
    token_id = session.get(SESSION_TOKEN_ID)
    ident = core_auth.identity_by_id(sf, str(token_id)) if token_id else None
    if ident is None:
        if token_id:
            session.pop(SESSION_TOKEN_ID, None)  # revoked: the session ends
        if api:
            return _unauthorized("this API needs a token: send 'Authorization: Bearer <token>' (atelier token create "
                                 "NAME makes one)", invalid=False)
        return redirect(url_for("auth.login", next=request.full_path if request.query_string else request.path),
                        code=303)
    if api and request.method in UNSAFE_METHODS and not (_same_origin() or _csrf_ok(request.headers.get(CSRF_HEADER))):
        return _refuse_csrf("a change through the API with a page session must come from this site's pages")
    g.identity = ident
    return None


def _refuse_csrf(message: str) -> Response:
    if request.path.startswith("/api/"):
        resp = jsonify({"error": message, "field": CSRF_FIELD})
    else:
        resp = Response(message + " Reload the page and try again.", mimetype="text/plain")
    resp.status_code = 400
    return resp


def _check_csrf() -> Response | None:
    """Every page POST carries the session's CSRF token (auth on or off)."""
    if request.method not in UNSAFE_METHODS or request.path.startswith("/api/"):
        return None
    try:
        sent = request.form.get(CSRF_FIELD)
    except RequestEntityTooLarge:
        if request.endpoint in UPLOAD_FORM_VIEWS:
            return None  # the view reads the form again, gets the same refusal, and shows it; nothing is stored
        raise
    if not _csrf_ok(sent):
        return _refuse_csrf("This form is missing its security token or the token has expired.")
    return None


def install_auth(app: Flask, settings: Settings) -> None:
    """Sessions, the identity hook and the CSRF check (after the Host/Origin checks of web.security)."""
    app.secret_key = secret_key(settings)
    app.session_interface = _SessionInterface()
    app.config.update(SESSION_COOKIE_NAME="atelier_session", SESSION_COOKIE_HTTPONLY=True,
                      SESSION_COOKIE_SAMESITE="Lax")
    app.before_request(_identify)
    app.before_request(_check_csrf)
    app.jinja_env.globals.update(csrf_token=csrf_token, csrf_field=csrf_field)
    app.register_blueprint(bp)

    @app.context_processor
    def _auth_context() -> dict[str, Any]:
        return {"auth_enabled": settings.auth_enabled, "current_identity": identity(), "is_admin": is_admin()}


def _safe_next(target: str | None) -> str:
    """Only a path on this site (never ``//other.example`` or a full URL)."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("pages.index")


@bp.route("/login", methods=["GET", "POST"])
def login():  # type: ignore[no-untyped-def]
    settings = current_app.extensions["atelier"].services.settings
    next_url = _safe_next(request.values.get("next"))
    if not settings.auth_enabled:
        return redirect(next_url, code=303)
    if request.method == "GET":
        return render_template("login.html", next_url=next_url, error=None)
    sf = current_app.extensions["atelier"].services.sessions
    ident = core_auth.verify_token(sf, request.form.get("token", "").strip())
    if ident is None:
        return render_template("login.html", next_url=next_url,
                               error="That token is not valid: unknown or revoked."), 401
    session.clear()  # a fresh session (and CSRF token) at login: nothing carried over from before
    session[SESSION_TOKEN_ID] = ident.token_id
    session[SESSION_CSRF] = secrets.token_urlsafe(32)
    return redirect(next_url, code=303)


@bp.post("/logout")
def logout():  # type: ignore[no-untyped-def]
    session.clear()
    return redirect(url_for("auth.login"), code=303)
