"""``/probe?target=<component>``: one component's probe series, for multi-target scraping.

Prometheus's blackbox pattern: a scrape job lists component names as targets and relabels
them into the ``target`` parameter, so each component gets its own ``up`` and scrape
timeout. The probe is bounded by the component's timeout and the scrape deadline header.
The probe service is the runtime's (shared with the probes collector, replaced on reload),
so the route is given a way to read the one in force, not a copy.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from flask import Blueprint, Response, jsonify, request
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from exporter.collectors.probes import DEADLINE_MARGIN, ProbeService
from exporter.scrape import StaticFamilies
from exporter.web.routes_core import SCRAPE_TIMEOUT_HEADER, scrape_deadline

PROBE_PATH = "/probe"


def blueprint(probes: Callable[[], ProbeService | None]) -> Blueprint:
    """``probes``: the probe service in force, None while the probes collector is off."""
    bp = Blueprint("probe", __name__)

    @bp.get(PROBE_PATH)
    def probe() -> tuple[Response, int]:
        service = probes()
        if service is None:
            return jsonify(error="Not Found", status=404,
                           detail="the probes collector is disabled"), 404
        target = request.args.get("target", "")
        spec = service.specs.get(target)
        if spec is None:
            return jsonify(error="Bad Request", status=400,
                           detail="target must name a component listed under "
                                  "components.probes"), 400
        deadline = scrape_deadline(request.headers.get(SCRAPE_TIMEOUT_HEADER))
        if deadline is None:
            deadline = time.monotonic() + spec.timeout_seconds + DEADLINE_MARGIN
        results = service.run([target], deadline)
        body = generate_latest(StaticFamilies(service.families(results, only=target)))
        return Response(body, content_type=CONTENT_TYPE_LATEST), 200

    return bp
