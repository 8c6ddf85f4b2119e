"""Cross-site request forgery guard for every POST, pages and API alike.

Browsers send ``Origin`` with every POST (``null`` from sandboxed frames, which is refused too); a post
whose origin is another site is refused. Scripts and API clients that send no ``Origin`` are not
browsers acting for someone else and pass.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Flask, Response, jsonify, request


def install_same_origin_guard(app: Flask) -> None:
    @app.before_request
    def _same_origin_posts():  # type: ignore[no-untyped-def]
        if request.method != "POST":
            return None
        origin = request.headers.get("Origin")
        if origin and urlsplit(origin).netloc != request.host:
            message = "Requests from other sites' pages are refused."
            if request.path.startswith("/api/"):
                return jsonify({"error": message, "field": None}), 403
            return Response(message, status=403, mimetype="text/plain")
        return None
