"""Failed authentication and authorization on the web routes, by fixed reason.

The counts live in the runtime's ``Security`` object (they outlive reloads); this collector
only reads them, so a brute-force attempt or a misconfigured scraper shows up in
``ai_exporter_http_auth_failures_total{reason}`` without any credential in a label or log.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.metrics_core import Metric

from exporter.collectors.base import Collector


class HttpAuthCollector(Collector):
    name = "http_auth"
    description = "Refused web requests by reason (missing, bad_password, expired, ...)."

    def collect(self) -> Iterable[Metric]:
        security = self.ctx.deps.security
        if security is None:
            return
        yield from security.families()
