"""``/api/docs``: the API reference for people. The page is a shell; ``static/api_docs.js`` fetches the
generated OpenAPI document (``/api/v1/openapi.json``) and renders its operations and schemas, so the page
never disagrees with the API. Served from the app itself: no CDN, no inline code (the pages' CSP)."""

from __future__ import annotations

from flask import Blueprint, render_template, url_for

bp = Blueprint("docs", __name__)


@bp.get("/api/docs")
def api_docs():  # type: ignore[no-untyped-def]
    """The API reference, rendered in the browser from the OpenAPI document."""
    return render_template("api_docs.html", spec_url=url_for("api.openapi"))
