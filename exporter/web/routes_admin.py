"""Administrative routes: configuration reload (Prometheus-style ``/-/reload``)."""

from __future__ import annotations

import re

from flask import Blueprint, Response, jsonify

from exporter.runtime import Runtime
from exporter.security import RELOAD_PATH


def blueprint(runtime: Runtime) -> Blueprint:
    bp = Blueprint("admin", __name__)

    @bp.route(RELOAD_PATH, methods=["POST", "PUT"])
    def reload() -> tuple[Response, int]:
        ok, message = runtime.reload()
        if ok:
            return jsonify(status="reloaded", detail=message), 200
        # The full error (it may name a file path) goes to the log; the body names the field.
        return jsonify(status="rejected", detail=public_reload_error(message)), 400

    return bp


def public_reload_error(message: str) -> str:
    """The field, and the reason when it is plain words: a reason with a quote or a slash
    may carry a value (a secret, a URL with a password) or a file's location, so
    ``web.security.tokens_file: cannot read /etc/x: ...`` says the field only."""
    field, sep, rest = message.partition(":")
    if not (sep and re.fullmatch(r"[A-Za-z0-9_.\-]{1,100}", field)):
        return "configuration rejected; see the exporter log"
    reason = rest.strip()
    if re.fullmatch(r"[A-Za-z0-9 _.,;:()<>=`+\-]{1,200}", reason):
        return f"configuration rejected at {field}: {reason}"
    return f"configuration rejected at {field}; see the exporter log"
