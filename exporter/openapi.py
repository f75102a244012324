"""The OpenAPI 3.1 description of the exporter's HTTP API.

Served at ``GET /api/v1/openapi.json`` and ``/api/v1/openapi.yaml``; ``docs/openapi.yaml``
is generated from it (``python -m exporter.openapi``) and the test suite fails while it is
stale. The event model's JSON Schema (``exporter.events.json_schema``) is embedded: its
``$defs`` become ``components/schemas``. Every route Flask registers is described here,
and each status code a route can answer is listed with it: the route's own, those of the
web layer in front of every route (authentication 401/403, rate limits 429, the busy
503s) and those of the HTTP framing (400, 408, 413, 414, 431).
"""

from __future__ import annotations

import copy
import functools
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from exporter.events import json_schema

JSON = "application/json"
NDJSON = "application/x-ndjson"
PROTOBUF = "application/x-protobuf"
TEXT = "text/plain"
PROM_TEXT = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"

OPENAPI_JSON_PATH = "/api/v1/openapi.json"
OPENAPI_YAML_PATH = "/api/v1/openapi.yaml"

_ERROR = {"$ref": "#/components/schemas/ErrorBody"}
_PUSH_RESULT = {"$ref": "#/components/schemas/PushResult"}


def _json(schema: dict[str, Any], description: str, **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}, **extra}


def _retry(description: str, schema: dict[str, Any] = _ERROR,
           media: str = JSON) -> dict[str, Any]:
    return {"description": description,
            "headers": {"Retry-After": {"$ref": "#/components/headers/RetryAfter"}},
            "content": {media: {"schema": schema}}}


# What the web layer and the framing may answer on any route, before it runs.
_COMMON: dict[str, dict[str, Any]] = {
    "400": {"$ref": "#/components/responses/BadRequest"},
    "401": {"$ref": "#/components/responses/Unauthorized"},
    "403": {"$ref": "#/components/responses/Forbidden"},
    "408": {"$ref": "#/components/responses/Timeout"},
    "413": {"$ref": "#/components/responses/TooLarge"},
    "414": {"$ref": "#/components/responses/Framing"},
    "429": {"$ref": "#/components/responses/TooMany"},
    "431": {"$ref": "#/components/responses/Framing"},
    "503": {"$ref": "#/components/responses/Busy"},
}

_SCRAPE_TIMEOUT = {"name": "X-Prometheus-Scrape-Timeout-Seconds", "in": "header",
                   "required": False, "schema": {"type": "string"},
                   "description": "Prometheus's scrape timeout; the answer comes a little "
                                  "before it. Ignored unless a number in (0, 3600)."}


def _op(op_id: str, summary: str, tag: str, responses: dict[str, Any], *,
        parameters: list[dict[str, Any]] | None = None,
        body: dict[str, Any] | None = None, role: str = "viewer") -> dict[str, Any]:
    operation: dict[str, Any] = {"operationId": op_id, "summary": summary, "tags": [tag],
                                 "description": f"Least role: {role}."}
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = body
    merged = {**_COMMON, **responses}
    operation["responses"] = dict(sorted(merged.items()))
    return operation


def _get_json(op_id: str, summary: str, tag: str, schema: dict[str, Any],
              extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"get": _op(op_id, summary, tag, {"200": _json(schema, summary), **(extra or {})})}


_OBJECT = {"type": "object"}
_CHECKS = {"type": "object", "required": ["status", "checks"],
           "properties": {"status": {"type": "string"},
                          "checks": {"type": "object",
                                     "additionalProperties": {
                                         "type": "object", "required": ["ok"],
                                         "properties": {"ok": {"type": "boolean"}}}}}}


def _otlp(signal: str, title: str) -> dict[str, Any]:
    request = f"Export{title}ServiceRequest"
    response_schema = {"$ref": f"#/components/schemas/Export{title}ServiceResponse"}
    status = {"$ref": "#/components/schemas/RpcStatus"}
    binary = {"type": "string", "format": "binary"}

    def failure(description: str, retry: bool = False) -> dict[str, Any]:
        answer: dict[str, Any] = {"description": description,
                                  "content": {PROTOBUF: {"schema": binary},
                                              JSON: {"schema": status}}}
        if retry:
            answer["headers"] = {"Retry-After": {"$ref": "#/components/headers/RetryAfter"}}
        return answer

    responses = {
        "200": {"description": f"{request} accepted (partial_success names rejected items)",
                "content": {PROTOBUF: {"schema": binary}, JSON: {"schema": response_schema}}},
        "400": failure("the body is not a request (bad protobuf, JSON or gzip)"),
        "401": failure("a valid credential is required"),
        "403": {"$ref": "#/components/responses/Forbidden"},
        "404": {"description": "OTLP intake is disabled (sources.otlp.enabled)",
                "content": {TEXT: {"schema": {"type": "string"}}}},
        "413": failure("body over web.max_request_bytes (also after gzip)"),
        "415": failure("another Content-Type or Content-Encoding"),
        "429": {"$ref": "#/components/responses/TooMany"},
        "503": failure("nothing can be made durable now, or the server is busy", retry=True),
    }
    body = {"required": True, "description": f"an OTLP {request}, optionally gzip "
                                             "(Content-Encoding: gzip)",
            "content": {PROTOBUF: {"schema": binary},
                        JSON: {"schema": {"$ref": f"#/components/schemas/{request}"}}}}
    op = _op(f"otlp_{signal}", f"OTLP/HTTP {signal} intake", "intake", responses, body=body,
             role="operator")
    return {"post": op}


def _otlp_schemas() -> dict[str, Any]:
    """The OTLP/JSON requests, outlined (the protobuf definitions are the reference)."""
    out: dict[str, Any] = {}
    for title, field in (("Trace", "resourceSpans"), ("Metrics", "resourceMetrics"),
                         ("Logs", "resourceLogs")):
        out[f"Export{title}ServiceRequest"] = {
            "type": "object", "description": f"OTLP/JSON Export{title}ServiceRequest",
            "properties": {field: {"type": "array", "items": {"type": "object"}}}}
        out[f"Export{title}ServiceResponse"] = {
            "type": "object", "properties": {"partialSuccess": {"type": "object"}}}
    out["RpcStatus"] = {"type": "object", "description": "google.rpc.Status",
                        "properties": {"code": {"type": "integer"},
                                       "message": {"type": "string"},
                                       "details": {"type": "array"}}}
    return out


def _event_schemas() -> tuple[dict[str, Any], dict[str, Any]]:
    """(the event schema, its $defs) with references rewritten to components/schemas."""
    schema = json.loads(json.dumps(json_schema()).replace('"#/$defs/',
                                                          '"#/components/schemas/'))
    defs = schema.pop("$defs")
    schema.pop("$schema", None)
    return schema, defs


@functools.cache
def _document(telemetry_path: str) -> dict[str, Any]:
    event, event_defs = _event_schemas()
    push_body = {
        "required": True,
        "description": "events: a JSON array, one object, or NDJSON (one per line); "
                       "optionally gzip (Content-Encoding: gzip)",
        "content": {
            JSON: {"schema": {"anyOf": [{"type": "array",
                                         "items": {"$ref": "#/components/schemas/Event"}},
                                        {"$ref": "#/components/schemas/Event"}]}},
            NDJSON: {"schema": {"type": "array",
                                "description": "sent one JSON object per line",
                                "items": {"$ref": "#/components/schemas/Event"}}},
        }}
    push_responses = {
        "200": _json(_PUSH_RESULT, "every event accepted"),
        "207": _json(_PUSH_RESULT, "some events accepted, the others listed"),
        "400": _json({"anyOf": [_PUSH_RESULT, _ERROR]}, "no event accepted (or an empty "
                                                        "body, bad gzip or framing)"),
        "401": _json({"anyOf": [_PUSH_RESULT, _ERROR]}, "a valid credential is required",
                     headers={"WWW-Authenticate": {"schema": {"type": "string"}}}),
        "404": _json(_ERROR, "push ingest is disabled"),
        "413": _json({"anyOf": [_PUSH_RESULT, _ERROR]}, "body (or its decompressed form) "
                                                        "over web.max_request_bytes"),
        "415": _json(_PUSH_RESULT, "another Content-Type or Content-Encoding"),
        "503": _retry("the events cannot be made durable now (nothing counted), or the "
                      "server is busy", {"anyOf": [_PUSH_RESULT, _ERROR]}),
    }
    metrics_responses = {"200": {
        "description": "Prometheus text format, or OpenMetrics (with exemplars) when Accept "
                       "prefers it; gzip when Accept-Encoding names it",
        "content": {PROM_TEXT: {"schema": {"type": "string"}},
                    OPENMETRICS: {"schema": {"type": "string"}}}}}
    paths: dict[str, Any] = {
        "/": {"get": _op("landing", "landing page with links", "core", {
            "200": {"description": "HTML", "content": {"text/html": {
                "schema": {"type": "string"}}}}})},
        telemetry_path: {"get": _op("metrics", "Prometheus metrics", "core", metrics_responses,
                                    parameters=[_SCRAPE_TIMEOUT])},
        "/livez": _get_json("livez", "the process is alive", "health",
                            {"type": "object", "properties": {"status": {"const": "ok"}}}),
        "/readyz": _get_json("readyz", "collectors and sources have started", "health",
                             _CHECKS, {"503": _json(_CHECKS, "a check failed")}),
        "/healthz": _get_json("healthz", "host checks against health.* thresholds",
                              "health", _CHECKS, {"503": _json(_CHECKS, "a check failed")}),
        "/api/status/version": _get_json("status_version", "version and build", "status", {
            "type": "object", "required": ["version", "revision", "build_date",
                                           "python_version"],
            "properties": {k: {"type": "string"} for k in ("version", "revision",
                                                          "build_date", "python_version")}}),
        "/api/status/system": _get_json("status_system", "host summary", "status", _OBJECT),
        "/api/metrics/system": _get_json("metrics_system", "every host series as JSON",
                                         "status", _OBJECT),
        "/api/status/ai": _get_json("status_ai", "AI components, probes, sources, ingest",
                                    "status", {"type": "object", "required": [
                                        "components", "probes", "sources", "ingest"]}),
        "/api/metrics/ai": _get_json("metrics_ai", "current AI aggregates", "status", _OBJECT),
        "/api/v1/schema": _get_json("event_schema", "JSON Schema of the event model",
                                    "events", _OBJECT),
        OPENAPI_JSON_PATH: _get_json("openapi_json", "this description, JSON", "meta",
                                     _OBJECT),
        OPENAPI_YAML_PATH: {"get": _op("openapi_yaml", "this description, YAML", "meta", {
            "200": {"description": "YAML", "content": {"application/yaml": {
                "schema": _OBJECT}}}})},
        "/api/v1/events": {"post": _op("push_events", "push events", "intake", push_responses,
                                       body=push_body, role="operator")},
        "/v1/traces": _otlp("traces", "Trace"),
        "/v1/metrics": _otlp("metrics", "Metrics"),
        "/v1/logs": _otlp("logs", "Logs"),
        "/probe": {"get": _op("probe", "one component's probe series", "core", {
            "200": {"description": "the component's probe series (Prometheus text)",
                    "content": {PROM_TEXT: {"schema": {"type": "string"}}}},
            "400": _json(_ERROR, "target is not a component listed under components.probes"),
            "404": _json(_ERROR, "the probes collector is disabled")},
            parameters=[{"name": "target", "in": "query", "required": True,
                         "schema": {"type": "string"},
                         "description": "a component name under components.probes"},
                        _SCRAPE_TIMEOUT])},
    }
    reload_responses = {
        "200": _json({"$ref": "#/components/schemas/ReloadResult"}, "reloaded"),
        "400": _json({"anyOf": [{"$ref": "#/components/schemas/ReloadResult"}, _ERROR]},
                     "the new configuration was rejected; the old one stays in force"),
        "403": {"$ref": "#/components/responses/Forbidden"},
    }
    paths["/-/reload"] = {
        "post": _op("reload", "reload the configuration (web.enable_lifecycle)", "admin",
                    reload_responses, role="admin"),
        "put": _op("reload_put", "reload the configuration (web.enable_lifecycle)", "admin",
                   reload_responses, role="admin"),
    }
    schemas: dict[str, Any] = {
        "ErrorBody": {"type": "object", "required": ["error", "status"],
                      "properties": {"error": {"type": "string"},
                                     "status": {"type": "integer"},
                                     "detail": {"type": "string"},
                                     "setting": {"type": "string"}}},
        "PushResult": {"type": "object", "required": ["accepted", "rejected"], "properties": {
            "accepted": {"type": "integer", "minimum": 0},
            "rejected": {"type": "integer", "minimum": 0},
            "errors": {"type": "array", "items": {
                "type": "object", "required": ["index", "reason"],
                "properties": {"index": {"type": ["integer", "null"]},
                               "line": {"type": "integer"},
                               "reason": {"type": "string"},
                               "detail": {"type": "string"}}}},
            "errors_truncated": {"type": "boolean"}}},
        "ReloadResult": {"type": "object", "required": ["status", "detail"],
                         "properties": {"status": {"enum": ["reloaded", "rejected"]},
                                        "detail": {"type": "string"}}},
        "Event": event,
        **event_defs,
        **_otlp_schemas(),
    }
    any_error = {"anyOf": [_ERROR, _PUSH_RESULT, {"type": "string"}]}
    responses = {
        "BadRequest": {"description": "malformed request framing (Content-Length, chunked "
                                      "encoding) or a bad argument",
                       "content": {JSON: {"schema": any_error},
                                   TEXT: {"schema": {"type": "string"}}}},
        "Unauthorized": {"description": "credentials missing or wrong",
                         "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
                         "content": {JSON: {"schema": any_error}}},
        "Forbidden": {"description": "the credential's role may not call this route, a "
                                     "write from outside web.write_allowed_networks, or "
                                     "lifecycle routes disabled",
                      "content": {JSON: {"schema": _ERROR}}},
        "Timeout": {"description": "the request head or body did not arrive within "
                                   "web.header_read_timeout_seconds / "
                                   "web.body_read_timeout_seconds",
                    "content": {TEXT: {"schema": {"type": "string"}}}},
        "TooLarge": {"description": "body over web.max_request_bytes",
                     "content": {JSON: {"schema": any_error},
                                 TEXT: {"schema": {"type": "string"}}}},
        "Framing": {"description": "request line (414) or headers (431) over "
                                   "web.max_header_bytes",
                    "content": {TEXT: {"schema": {"type": "string"}}}},
        "TooMany": _retry("rate limited (push rate, web config rate limit) or too many "
                          "connections from this address"),
        "Busy": _retry("the concurrency cap (web.security.limits) or the slots of the "
                       "routes that read bodies are all taken"),
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "ai-metrics-exporter", "version": "1",
                 "description": "Prometheus exporter for AI agent systems: metrics, health, "
                                "status views and event intake (push, OTLP/HTTP)."},
        "servers": [{"url": "http://127.0.0.1:10102"}],
        "security": [{}, {"basic": []}, {"bearer": []}],
        "tags": [{"name": n} for n in ("core", "health", "status", "events", "intake",
                                       "admin", "meta")],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "basic": {"type": "http", "scheme": "basic",
                          "description": "users of the web config file "
                                         "(basic_auth_users, bcrypt)"},
                "bearer": {"type": "http", "scheme": "bearer",
                           "description": "a static token (web.security.tokens_file), a "
                                          "push token, or a JWT (web.security.jwt)"}},
            "headers": {"RetryAfter": {"description": "seconds to wait",
                                       "schema": {"type": "string"}}},
            "responses": responses,
            "schemas": schemas,
        },
    }


def document(telemetry_path: str = "/metrics") -> dict[str, Any]:
    """The description, for a given ``web.telemetry_path`` (a copy: callers may edit it)."""
    return copy.deepcopy(_document(telemetry_path))


@functools.cache
def json_body(telemetry_path: str = "/metrics") -> bytes:
    return json.dumps(_document(telemetry_path), indent=1).encode()


@functools.cache
def yaml_body(telemetry_path: str = "/metrics") -> bytes:
    return yaml.safe_dump(_document(telemetry_path), sort_keys=False, width=100,
                          allow_unicode=True).encode()


DOC_PATH = Path(__file__).resolve().parent.parent / "docs" / "openapi.yaml"


def main() -> None:
    """Write docs/openapi.yaml (or the path given)."""
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else DOC_PATH
    target.write_bytes(yaml_body())


if __name__ == "__main__":
    main()
