"""JSON API: version and status views, AI aggregates, event push and the event schema."""

from __future__ import annotations

import functools
import json

from flask import Blueprint, Response, current_app, jsonify, request

from exporter.events import json_schema
from exporter.runtime import Runtime
from exporter.sources.push import PushSource
from exporter.version import build_info
from exporter.web import hostinfo

bp = Blueprint("api", __name__)


def _runtime() -> Runtime:
    runtime: Runtime = current_app.config["RUNTIME"]
    return runtime


@bp.get("/api/status/version")
def version() -> Response:
    info = build_info()
    return jsonify(version=info.version, revision=info.revision, build_date=info.build_date,
                   python_version=info.python_version)


@bp.get("/api/status/system")
def system_status() -> Response:
    return jsonify(hostinfo.status_view(_runtime()))


@bp.get("/api/metrics/system")
def system_metrics() -> Response:
    return jsonify(hostinfo.metrics_view(_runtime()))


@bp.get("/api/status/ai")
def ai_status() -> Response:
    runtime = _runtime()
    probes = runtime.services.get("probes")
    return jsonify(components=runtime.aggregator.components(),
                   probes=probes.status() if probes is not None else [],
                   sources={s.name: dict(zip(("ok", "detail"), s.ready(), strict=True))
                            for s in runtime.sources},
                   ingest=runtime.ingestor.stats())


@bp.get("/api/metrics/ai")
def ai_metrics() -> Response:
    return jsonify(_runtime().aggregator.summary())


@functools.cache
def _schema_body() -> bytes:
    """The schema never changes while the process runs: build and encode it once."""
    return json.dumps(json_schema(), indent=1).encode()


@bp.get("/api/v1/schema")
def schema() -> Response:
    return Response(_schema_body(), mimetype="application/json")


@bp.post("/api/v1/events")
def push_events() -> tuple[Response, int, dict[str, str]]:
    source = _runtime().source("push")
    if not isinstance(source, PushSource):
        return (jsonify(error="Not Found", status=404, detail="push ingest is disabled"), 404,
                {})
    result = source.handle_request(request)
    return jsonify(result.body), result.status, result.headers
