"""Route checks shared by the web tests of both tiers: ``test_web_app.py`` (Flask's test
client, the route logic) and ``test_web.py`` (the real exporter process, the same headers
on the wire). The checks read a response through the small :class:`Reply` protocol that a
``requests.Response`` and a werkzeug ``TestResponse`` both satisfy, so one copy of each
assertion serves both."""

from __future__ import annotations

import json
from typing import Protocol

SECURITY_HEADERS = ("X-Content-Type-Options", "X-Frame-Options", "Content-Security-Policy",
                    "Referrer-Policy")
JSON_ROUTES = ("/healthz", "/readyz", "/livez", "/api/status/version", "/api/status/system",
               "/api/metrics/system", "/api/status/ai", "/api/metrics/ai", "/api/v1/schema")
CORS_HEADERS = ("Access-Control-Allow-Origin", "Access-Control-Allow-Methods",
                "Access-Control-Allow-Headers")
ORIGIN = "https://grafana.example"


class HeaderView(Protocol):
    """Case-insensitive header lookup, as ``CaseInsensitiveDict`` and werkzeug's
    ``Headers`` both offer it."""

    def get(self, key: str, /) -> str | None: ...

    def __getitem__(self, key: str, /) -> str: ...

    def __contains__(self, key: str, /) -> bool: ...


class Reply(Protocol):
    """What the shared checks read of a response."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> HeaderView: ...

    @property
    def text(self) -> str: ...


def assert_security_headers(response: Reply, where: str) -> None:
    """Every response, errors included, carries the security headers."""
    for name in SECURITY_HEADERS:
        assert response.headers.get(name), f"{where}: {name} missing"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]


def assert_route_headers(path: str, response: Reply) -> None:
    """A route answers with the security headers and no CORS headers (no origin is
    configured); a JSON route is never cached and its body parses as JSON."""
    assert response.status_code in (200, 503), (path, response.status_code)
    assert_security_headers(response, path)
    for name in CORS_HEADERS:
        assert name not in response.headers, f"{path}: CORS header {name} without an origin"
    if path in JSON_ROUTES:
        assert response.headers["Content-Type"] == "application/json"
        assert response.headers["Cache-Control"] == "no-store"
        json.loads(response.text)
