"""``atelier token create|list|revoke``: API tokens in the configured database (see :mod:`core.auth`).

The token is printed once, at creation, on its own line on stdout (so ``TOKEN=$(atelier token create ci
| head -1)`` works); everything else goes to stderr. Only its hash is stored.
"""

from __future__ import annotations

import argparse
import sys

from core.errors import UserError
from core.settings import Settings


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("token", help="API tokens: create, list, revoke (ATELIER_AUTH=on)")
    tsub = p.add_subparsers(dest="token_command", required=True)
    c = tsub.add_parser("create", help="create a token for NAME (the owner of what it submits); prints it once")
    c.add_argument("name")
    c.add_argument("--admin", action="store_true", help="sees every owner's jobs, datasets and models, and the workers")
    c.add_argument("--show-webhook-secret", action="store_true",
                   help="also print the secret that signs this owner's webhook deliveries")
    c.set_defaults(func=cmd_create)
    lst = tsub.add_parser("list", help="name, prefix, admin, created, last used, revoked")
    lst.set_defaults(func=cmd_list)
    r = tsub.add_parser("revoke", help="revoke NAME's token: refused from the next request on")
    r.add_argument("name")
    r.set_defaults(func=cmd_revoke)


def _services(settings: Settings):  # type: ignore[no-untyped-def]
    from core.services import build_services

    return build_services(settings)


def cmd_create(args: argparse.Namespace, settings: Settings) -> int:
    from core import auth

    services = _services(settings)
    try:
        created = auth.create_token(services.sessions, args.name, admin=args.admin)
    except UserError as exc:
        print(f"atelier: {exc}", file=sys.stderr)
        return 1
    finally:
        services.close()
    print(created.token)
    if args.show_webhook_secret:
        print(f"webhook secret: {created.row.webhook_secret}")
    print(f"token for {args.name!r}{' (admin)' if args.admin else ''} created; it is shown only now. Send it as "
          "'Authorization: Bearer <token>', or paste it on the login page.", file=sys.stderr)
    if not settings.auth_enabled:
        print("note: ATELIER_AUTH is not 'on', so the server does not ask for tokens yet.", file=sys.stderr)
    return 0


def _when(value: object) -> str:
    from core.models import as_utc

    v = as_utc(value)  # type: ignore[arg-type]
    return v.strftime("%Y-%m-%d %H:%M") if v else "-"


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    from core import auth

    services = _services(settings)
    try:
        rows = auth.list_tokens(services.sessions)
    finally:
        services.close()
    header = ("NAME", "PREFIX", "ADMIN", "CREATED", "LAST USED", "REVOKED")
    table = [header] + [(t.name, t.prefix + "…", "yes" if t.admin else "no", _when(t.created_at),
                         _when(t.last_used_at), _when(t.revoked_at)) for t in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for r in table:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


def cmd_revoke(args: argparse.Namespace, settings: Settings) -> int:
    from core import auth

    services = _services(settings)
    try:
        n = auth.revoke_token(services.sessions, args.name)
    finally:
        services.close()
    if n == 0:
        print(f"atelier: there is no live token named {args.name!r}", file=sys.stderr)
        return 1
    print(f"revoked the token of {args.name!r}", file=sys.stderr)
    return 0
