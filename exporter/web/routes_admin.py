"""Administrative routes: configuration reload (Prometheus-style ``/-/reload``)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from exporter.runtime import Runtime

bp = Blueprint("admin", __name__)


@bp.route("/-/reload", methods=["POST", "PUT"])
def reload() -> tuple[Response, int]:
    runtime: Runtime = current_app.config["RUNTIME"]
    ok, message = runtime.reload()
    return jsonify(status="reloaded" if ok else "rejected", detail=message), 200 if ok else 400
