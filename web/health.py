"""``/healthz``: the database, the broker and the workers, each with a state.

Answers 200 when the database and broker are usable (a service with no live worker still accepts jobs;
they wait in the queue) and 503 otherwise. The workers' entries include whether the style-transfer
weights are usable, so a missing weights file is visible before anyone submits. ``exposure`` warns when
the service is bound to a non-loopback address without a host allow-list.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from core import db
from core.jobs import repository as repo
from core.settings import is_loopback
from web import deps
from web.serialize import worker_json

bp = Blueprint("health", __name__)


def check_database() -> dict[str, Any]:
    s = deps.services()
    try:
        current = db.current_revision(s.engine)
        head = db.head_revision()
        if current != head:
            return {"state": "error", "detail": f"at revision {current}, needs {head}: run `atelier db upgrade`"}
        return {"state": "ok", "dialect": s.engine.dialect.name, "revision": current}
    except Exception as exc:
        return {"state": "error", "detail": f"{exc.__class__.__name__}: {exc}"[:300]}


def check_broker() -> dict[str, Any]:
    state = deps.state()
    settings = state.services.settings
    if settings.embedded_broker:
        folder = settings.broker_dir / "queue"
        ok = folder.is_dir()
        return {"state": "ok" if ok else "error", "transport": "filesystem",
                **({} if ok else {"detail": f"{folder} does not exist"})}
    try:
        with state.celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return {"state": "ok", "transport": conn.transport_cls if isinstance(conn.transport_cls, str) else "redis"}
    except Exception as exc:
        return {"state": "error", "detail": f"{exc.__class__.__name__}: {exc}"[:300]}


def check_workers() -> dict[str, Any]:
    s = deps.services()
    try:
        stale = max(3 * s.settings.heartbeat_seconds, 30.0)
        workers = [worker_json(w, stale) for w in repo.list_workers(s.sessions)]
    except Exception as exc:
        return {"state": "error", "detail": str(exc)[:300], "workers": []}
    live = [w for w in workers if w["state"] in ("online", "busy")]
    weights_ok = all(w["info"].get("vgg19_weights_ok", True) for w in live)
    state = "ok" if live and weights_ok else ("degraded" if live else "none")
    out: dict[str, Any] = {"state": state, "live": len(live), "workers": workers}
    if live and not weights_ok:
        out["detail"] = next(w["info"].get("vgg19_weights") for w in live if not w["info"].get("vgg19_weights_ok", True))
    elif not live:
        out["detail"] = "no live worker: jobs wait in the queue until one starts (`atelier worker`)"
    return out


def check_exposure() -> dict[str, Any]:
    """Who can reach the service: a public bind address with no host allow-list answers to any name a
    DNS-rebinding page chooses. Never fails the health check; warns so an operator sees it."""
    settings = deps.services().settings
    hosts = settings.host_allow_list
    if is_loopback(settings.host):
        return {"state": "ok", "bound": settings.host, "allowed_hosts": list(hosts)}
    if not hosts:
        return {"state": "warn", "bound": settings.host, "allowed_hosts": [],
                "detail": f"bound to {settings.host}, a non-loopback address, with no host allow-list: any Host "
                          "name is answered (DNS rebinding). Set ATELIER_ALLOWED_HOSTS to the names clients use."}
    return {"state": "ok", "bound": settings.host, "allowed_hosts": list(hosts)}


@bp.get("/healthz")
def healthz():  # type: ignore[no-untyped-def]
    checks = {"database": check_database(), "broker": check_broker(), "workers": check_workers(),
              "exposure": check_exposure()}
    healthy = checks["database"]["state"] == "ok" and checks["broker"]["state"] == "ok"
    return jsonify({"status": "ok" if healthy else "error", **checks}), (200 if healthy else 503)
