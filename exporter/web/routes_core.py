"""Landing page, /metrics and the Kubernetes-style health routes."""

from __future__ import annotations

import html
import time
from typing import Any

import psutil
from flask import Blueprint, Response, jsonify, request
from isal import igzip

from exporter.exposition import CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE, wants_openmetrics
from exporter.runtime import Runtime
from exporter.version import build_info
from exporter.web.http import gzip_accepted

# Prometheus sends its scrape timeout; we answer a little before it gives up.
SCRAPE_TIMEOUT_HEADER = "X-Prometheus-Scrape-Timeout-Seconds"
DEADLINE_MARGIN = 0.5

LINKS = (
    ("/metrics", "Prometheus metrics"),
    ("/healthz", "health checks"), ("/readyz", "readiness"), ("/livez", "liveness"),
    ("/api/status/version", "version"), ("/api/status/system", "system status"),
    ("/api/metrics/system", "system metrics (JSON)"), ("/api/status/ai", "AI components"),
    ("/api/metrics/ai", "AI aggregates (JSON)"), ("/api/v1/schema", "event schema"),
)


def scrape_deadline(header: str | None) -> float | None:
    """Monotonic deadline from Prometheus's timeout header, or None when absent/invalid."""
    if not header:
        return None
    try:
        seconds = float(header)
    except ValueError:
        return None
    if not 0 < seconds < 3600:
        return None
    return time.monotonic() + max(seconds - DEADLINE_MARGIN, seconds / 2)


def health_checks(runtime: Runtime) -> dict[str, dict[str, Any]]:
    """Each configured threshold as a check: value, threshold and verdict."""
    cfg = runtime.config.health
    checks: dict[str, dict[str, Any]] = {}
    try:
        vm = psutil.virtual_memory()
    except OSError:  # procfs unreadable: the check fails, the route still answers
        checks["memory"] = {"ok": False, "error": "cannot read memory statistics"}
    else:
        mem = 1 - vm.available / vm.total if vm.total else 0.0
        checks["memory"] = {"ok": mem <= cfg.max_memory_utilization,
                            "utilization": round(mem, 4),
                            "threshold": cfg.max_memory_utilization}
    for path in cfg.disk_paths:
        try:
            usage = psutil.disk_usage(path)
        except OSError:
            checks[f"disk:{path}"] = {"ok": False, "error": "cannot stat"}
            continue
        share = usage.percent / 100.0
        checks[f"disk:{path}"] = {"ok": share <= cfg.max_disk_utilization,
                                  "utilization": round(share, 4),
                                  "threshold": cfg.max_disk_utilization}
    return checks


def blueprint(runtime: Runtime) -> Blueprint:
    bp = Blueprint("core", __name__)

    @bp.get("/")
    def landing() -> Response:
        info = build_info()
        items = "".join(f'<li><a href="{p}">{html.escape(p)}</a> — {html.escape(d)}</li>'
                        for p, d in LINKS)
        page = (f"<!doctype html><html><head><meta charset='utf-8'><title>ai-metrics-exporter"
                f"</title></head><body><h1>ai-metrics-exporter</h1><p>version "
                f"{html.escape(info.version)}</p><ul>{items}</ul></body></html>")
        return Response(page, mimetype="text/html")

    @bp.get(runtime.config.web.telemetry_path)
    def metrics() -> Response:
        deadline = scrape_deadline(request.headers.get(SCRAPE_TIMEOUT_HEADER))
        # The OTLP push pauses its work until the response is written (shared GIL).
        end_serving = runtime.collect_gate.begin_serving()
        try:
            # OpenMetrics (with exemplars) when the scraper prefers it, else the text format.
            openmetrics = wants_openmetrics(request.headers.get("Accept"))
            body = runtime.render_metrics(deadline, openmetrics=openmetrics)
            response = Response(body, content_type=OPENMETRICS_CONTENT_TYPE if openmetrics
                                else CONTENT_TYPE)
            if gzip_accepted(request.headers.get("Accept-Encoding", "")):
                response.set_data(igzip.compress(body, compresslevel=1))
                response.headers["Content-Encoding"] = "gzip"
                response.headers["Vary"] = "Accept-Encoding"
            if openmetrics:  # text responses keep their headers as they were
                vary = response.headers.get("Vary")
                response.headers["Vary"] = f"Accept, {vary}" if vary else "Accept"
        except BaseException:
            end_serving()
            raise
        response.call_on_close(end_serving)
        return response

    @bp.get("/livez")
    def livez() -> Response:
        return jsonify(status="ok")

    @bp.get("/readyz")
    def readyz() -> tuple[Response, int]:
        checks = runtime.readiness()
        ok = all(c["ok"] for c in checks.values())
        return jsonify(status="ok" if ok else "not ready", checks=checks), 200 if ok else 503

    @bp.get("/healthz")
    def healthz() -> tuple[Response, int]:
        checks = health_checks(runtime)
        ok = all(c["ok"] for c in checks.values())
        return jsonify(status="ok" if ok else "fail", checks=checks), 200 if ok else 503

    return bp
