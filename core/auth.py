"""API tokens and who may see what.

A token is ``atl_`` + 43 URL-safe characters (``secrets.token_urlsafe(32)``: 256 random bits). Only its
SHA-256 is stored (a slow password hash adds nothing against a 256-bit secret), with its first characters
(``prefix``) to recognise it in listings; the token itself is shown once, at creation. The token's
``name`` is the *owner* written on the jobs, datasets and models it creates.

Ownership rule (:func:`can_see`): with auth off there is no identity and everything is visible (owner
``None``); an admin token sees every row; any other token sees only the rows carrying its name. Callers
answer 404 for a row the identity cannot see, exactly as for a missing one, so ids leak nothing.

Verification reads the row on every request (no cache), so a revoked token is refused at once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from core.errors import ConfigError, UserError
from core.models import ApiToken, as_utc, utcnow
from core.settings import Settings, is_loopback

TOKEN_PREFIX = "atl_"
#: Characters of the token kept in the clear to tell tokens apart in ``atelier token list``.
SHOWN_PREFIX_CHARS = 10
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
#: ``last_used_at`` is written at most this often per token (a write per request would serialise reads).
LAST_USED_RESOLUTION = dt.timedelta(seconds=60)

SessionFactory = sessionmaker[Session]


@dataclass(frozen=True)
class Identity:
    """Who a request acts for: the token's name (the owner it writes) and whether it is an admin."""

    name: str
    admin: bool = False
    token_id: str = ""


def can_see(identity: Identity | None, owner: str | None) -> bool:
    """May ``identity`` see a row owned by ``owner``? ``None`` identity: auth is off, everything is visible."""
    if identity is None or identity.admin:
        return True
    return owner == identity.name


def owner_filter(identity: Identity | None) -> str | None:
    """The owner a listing is restricted to, or ``None`` for no restriction (auth off, or an admin)."""
    return None if identity is None or identity.admin else identity.name


def owner_of_new_rows(identity: Identity | None) -> str | None:
    """The ``owner`` written on a row created for ``identity`` (``None`` with auth off)."""
    return identity.name if identity is not None else None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class CreatedToken:
    token: str  # shown once, never stored
    row: ApiToken


def create_token(sf: SessionFactory, name: str, *, admin: bool = False) -> CreatedToken:
    """A new token for ``name``. One live token per name: a second is refused (revoke the first), so
    ``revoke NAME`` is unambiguous and a name is one owner."""
    if not NAME_RE.match(name or ""):
        raise UserError("a token name is 1 to 64 letters, digits, '_', '.', '@' or '-', starting with a letter or "
                        "digit", "name", 422)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(name=name, token_hash=hash_token(token), prefix=token[:SHOWN_PREFIX_CHARS], admin=admin,
                   webhook_secret=secrets.token_urlsafe(32))
    with sf.begin() as s:
        live = s.scalar(select(ApiToken.id).where(ApiToken.name == name, ApiToken.revoked_at.is_(None)))
        if live is not None:
            raise UserError(f"a token named {name!r} exists already; revoke it first (atelier token revoke {name})",
                            "name", 409)
        s.add(row)
    return CreatedToken(token, row)


def list_tokens(sf: SessionFactory) -> list[ApiToken]:
    with sf() as s:
        return list(s.scalars(select(ApiToken).order_by(ApiToken.created_at, ApiToken.name)))


def revoke_token(sf: SessionFactory, name: str) -> int:
    """Revoke the live tokens named ``name``; returns how many were revoked (0: none was live)."""
    with sf.begin() as s:
        res = s.execute(update(ApiToken).where(ApiToken.name == name, ApiToken.revoked_at.is_(None))
                        .values(revoked_at=utcnow()).execution_options(synchronize_session=False))
        return int(res.rowcount or 0)


def verify_token(sf: SessionFactory, token: str) -> Identity | None:
    """The identity of a live token, or ``None``. Looked up by its hash (the index does not compare the
    secret byte by byte), then the hashes are compared in constant time as well."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    digest = hash_token(token)
    with sf() as s:
        row = s.scalar(select(ApiToken).where(ApiToken.token_hash == digest))
    if row is None or not hmac.compare_digest(row.token_hash, digest):
        return None
    return _live_identity(sf, row)


def identity_by_id(sf: SessionFactory, token_id: str) -> Identity | None:
    """The identity of the token a page session was opened with, if it is still live (revocation ends the
    session at its next request)."""
    with sf() as s:
        row = s.get(ApiToken, token_id)
    return _live_identity(sf, row) if row is not None else None


def _live_identity(sf: SessionFactory, row: ApiToken) -> Identity | None:
    if row.revoked_at is not None:
        return None
    now = utcnow()
    last = as_utc(row.last_used_at)
    if last is None or now - last > LAST_USED_RESOLUTION:
        with sf.begin() as s:
            s.execute(update(ApiToken).where(ApiToken.id == row.id).values(last_used_at=now)
                      .execution_options(synchronize_session=False))
    return Identity(name=row.name, admin=bool(row.admin), token_id=row.id)


def webhook_secret_for(sf: SessionFactory, owner: str | None) -> str | None:
    """The signing secret of ``owner``'s live token (for webhooks); ``None`` when there is none."""
    if owner is None:
        return None
    with sf() as s:
        return s.scalar(select(ApiToken.webhook_secret).where(ApiToken.name == owner, ApiToken.revoked_at.is_(None)))


def bind_refusal(settings: Settings) -> str | None:
    """Why the server must not start on ``settings.host`` (``None``: it may). Auth off is only for a
    loopback address, unless ``ATELIER_AUTH=off-i-know`` says a non-loopback one is meant."""
    if settings.auth == "off" and not is_loopback(settings.host):
        return (f"refusing to serve on {settings.host}: with ATELIER_AUTH=off anyone who can reach that address can "
                "read, cancel and delete every job. Set ATELIER_AUTH=on (and create a token: atelier token create "
                "NAME --admin), or ATELIER_AUTH=off-i-know if this network is trusted, or bind to 127.0.0.1 "
                "(ATELIER_HOST).")
    return None


def require_safe_bind(settings: Settings) -> None:
    problem = bind_refusal(settings)
    if problem:
        raise ConfigError(problem)
