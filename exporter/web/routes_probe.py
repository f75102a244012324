"""``/probe?target=<component>``: one component's probe series, for multi-target scraping.

Prometheus's blackbox pattern: a scrape job lists component names as targets and relabels
them into the ``target`` parameter, so each component gets its own ``up`` and scrape
timeout. The probe is bounded by the component's timeout and the scrape deadline header.
"""

from __future__ import annotations

import time

from flask import Blueprint, Response, current_app, jsonify, request
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from exporter.collectors.probes import DEADLINE_MARGIN, ProbeService
from exporter.runtime import Runtime
from exporter.scrape import StaticFamilies
from exporter.web.routes_core import SCRAPE_TIMEOUT_HEADER, scrape_deadline

bp = Blueprint("probe", __name__)


@bp.get("/probe")
def probe() -> tuple[Response, int]:
    runtime: Runtime = current_app.config["RUNTIME"]
    service = runtime.services.get("probes")
    if not isinstance(service, ProbeService):
        return jsonify(error="Not Found", status=404,
                       detail="the probes collector is disabled"), 404
    target = request.args.get("target", "")
    spec = service.specs.get(target)
    if spec is None:
        return jsonify(error="Bad Request", status=400,
                       detail="target must name a component listed under components.probes"
                       ), 400
    deadline = scrape_deadline(request.headers.get(SCRAPE_TIMEOUT_HEADER))
    if deadline is None:
        deadline = time.monotonic() + spec.timeout_seconds + DEADLINE_MARGIN
    results = service.run([target], deadline)
    body = generate_latest(StaticFamilies(service.families(results, only=target)))
    return Response(body, content_type=CONTENT_TYPE_LATEST), 200
