"""The Flask app: pages for people (:mod:`.pages`), the JSON API under ``/api/v1`` (:mod:`.api`) and
``/healthz`` (:mod:`.health`). Built by :func:`create_app` (flaskr's factory pattern); web never runs an
engine, it only stores jobs and enqueues them through :mod:`worker.enqueue`."""

from __future__ import annotations

from typing import Any

from flask import Flask

from core.services import Services, build_services
from core.settings import Settings, load_settings

#: The largest text field of a form (``params`` and the like); files have their own, larger limit.
MAX_TEXT_FIELD_BYTES = 1 << 20


def create_app(settings: Settings | None = None, *, services: Services | None = None, celery: Any = None,
               check_migrated: bool = True, metrics_dir: str | None = None) -> Flask:
    """``metrics_dir``: prometheus_client's multiprocess directory when several processes serve the app
    (``atelier serve --workers N``); None for one process."""
    from web import api, api_resources, docs, health, pages, stream
    from web.auth import install_auth
    from web.metrics import install_metrics
    from web.security import install_security
    from web.deps import WebState
    from web.job_cache import JobCache
    from web.job_cache import install as install_job_cache
    from worker.celery_app import create_celery

    settings = settings or (services.settings if services else load_settings())
    services = services or build_services(settings, check_migrated=check_migrated)
    app = Flask(__name__)
    install_security(app, settings.host_allow_list)  # first: the Host check runs before anything else
    install_auth(app, settings)  # then who the request acts for, and the pages' CSRF check
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_mb * 1024 * 1024
    app.config["MAX_FORM_MEMORY_SIZE"] = MAX_TEXT_FIELD_BYTES
    app.config["MAX_FORM_PARTS"] = settings.max_form_parts
    app.json.sort_keys = False  # type: ignore[attr-defined]
    cache = JobCache(settings.resolved_database_url)
    app.extensions["atelier"] = WebState(services=services, celery=celery or create_celery(settings), job_cache=cache)
    install_job_cache(app, cache)  # this process's writes evict the jobs they changed
    app.register_blueprint(api.bp)
    app.register_blueprint(api_resources.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(pages.bp)
    app.register_blueprint(docs.bp)
    app.register_blueprint(stream.bp)  # event streams of jobs (/api/v1/jobs/<id>/stream)
    install_metrics(app, services, app.extensions["atelier"].celery, metrics_dir)
    api.register_error_handlers(app)
    return app
