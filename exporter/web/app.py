"""Application factory: routes grouped in blueprints, the runtime passed in explicitly.

Each blueprint is built by a function that takes what its views need, typed (the runtime,
or only the probe service), and its views close over it: no view reads the runtime from
Flask's ``current_app.config``.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from exporter.runtime import Runtime
from exporter.web import routes_admin, routes_api, routes_core, routes_otlp, routes_probe
from exporter.web.auth import install as install_security
from exporter.web.reserve import install as install_reserve

log = logging.getLogger(__name__)

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                               "frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
}


def create_app(runtime: Runtime) -> Flask:
    app = Flask("ai-metrics-exporter")
    app.config["MAX_CONTENT_LENGTH"] = runtime.config.web.max_request_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.register_blueprint(routes_core.blueprint(runtime))
    app.register_blueprint(routes_api.blueprint(runtime))
    app.register_blueprint(routes_admin.blueprint(runtime))
    app.register_blueprint(routes_otlp.blueprint(runtime))
    app.register_blueprint(routes_probe.blueprint(lambda: runtime.probes))
    install_security(app, runtime)  # before `headers`: web-config headers apply last
    install_reserve(app, runtime.config.web.threads)  # runs before authentication

    @app.after_request
    def headers(response: Response) -> Response:
        response.headers.update(SECURITY_HEADERS)
        if response.mimetype == "application/json":
            response.headers["Cache-Control"] = "no-store"
        origin = runtime.config.web.cors_origin
        if origin:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"
            response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
        return response

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Response, int]:
        code = exc.code or 500
        body = jsonify(error=exc.name, status=code,
                       detail=_public_detail(code, request.method))
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            body.headers["Allow"] = ", ".join(exc.valid_methods)  # required on 405
        return body, code

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> tuple[Response, int]:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return jsonify(error="Internal Server Error", status=500), 500

    return app


def _public_detail(code: int, method: str) -> str:
    """A fixed message per status: error bodies never echo input, paths or traces."""
    return {
        404: "no such route; see / for the list",
        405: f"method {method} is not allowed on this route",
        413: "request body is too large",
        400: "bad request",
    }.get(code, "")
