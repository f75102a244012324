"""JSON API: version and status views, AI aggregates, event push and the event schema."""

from __future__ import annotations

import functools
import json

from flask import Blueprint, Response, jsonify, request

from exporter import openapi
from exporter.events import json_schema
from exporter.runtime import Runtime
from exporter.security import PUSH_PATH
from exporter.sources.push import PushSource
from exporter.version import build_info
from exporter.web import hostinfo


@functools.cache
def _schema_body() -> bytes:
    """The schema never changes while the process runs: build and encode it once."""
    return json.dumps(json_schema(), indent=1).encode()


def blueprint(runtime: Runtime) -> Blueprint:
    bp = Blueprint("api", __name__)

    @bp.get("/api/status/version")
    def version() -> Response:
        info = build_info()
        return jsonify(version=info.version, revision=info.revision,
                       build_date=info.build_date, python_version=info.python_version)

    @bp.get("/api/status/system")
    def system_status() -> Response:
        return jsonify(hostinfo.status_view(runtime))

    @bp.get("/api/metrics/system")
    def system_metrics() -> Response:
        return jsonify(hostinfo.metrics_view(runtime))

    @bp.get("/api/status/ai")
    def ai_status() -> Response:
        probes = runtime.probes
        return jsonify(components=runtime.aggregator.components(),
                       probes=probes.status() if probes is not None else [],
                       sources={s.name: dict(zip(("ok", "detail"), s.ready(), strict=True))
                                for s in runtime.sources},
                       ingest=runtime.ingestor.stats())

    @bp.get("/api/metrics/ai")
    def ai_metrics() -> Response:
        return jsonify(runtime.aggregator.summary())

    @bp.get("/api/v1/schema")
    def schema() -> Response:
        return Response(_schema_body(), mimetype="application/json")

    @bp.get(openapi.OPENAPI_JSON_PATH)
    def openapi_json() -> Response:
        return Response(openapi.json_body(runtime.config.web.telemetry_path),
                        mimetype="application/json")

    @bp.get(openapi.OPENAPI_YAML_PATH)
    def openapi_yaml() -> Response:
        return Response(openapi.yaml_body(runtime.config.web.telemetry_path),
                        mimetype="application/yaml")

    @bp.post(PUSH_PATH)
    def push_events() -> tuple[Response, int, dict[str, str]]:
        source = runtime.source("push")
        if not isinstance(source, PushSource):
            return (jsonify(error="Not Found", status=404, detail="push ingest is disabled"),
                    404, {})
        result = source.handle_request(request)
        return jsonify(result.body), result.status, result.headers

    return bp
