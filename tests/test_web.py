"""The web routes through the real exporter process: what only the real server shows.

Every route's headers reach the wire (the shared checks of ``tests/webchecks.py``), gzip
on /metrics is framed with the compressed length, and connections are kept alive by the
production server, not a dev server. The route logic itself (bodies, health, errors,
CORS) is checked in process by ``test_web_app.py``.
"""

from __future__ import annotations

import gzip
import socket

import pytest
import requests

from tests.procs import LOOPBACK, Exporter
from tests.webchecks import JSON_ROUTES, assert_route_headers

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("path", ["/", "/metrics", *JSON_ROUTES])
def test_route_headers(exporter: Exporter, path: str) -> None:
    assert_route_headers(path, exporter.get(path))


def test_metrics_gzip_when_asked(exporter: Exporter) -> None:
    response = requests.get(f"{exporter.url}/metrics", headers={"Accept-Encoding": "gzip"},
                            timeout=10, stream=True)
    assert response.headers["Content-Encoding"] == "gzip"
    assert response.headers["Vary"] == "Accept-Encoding"
    raw = response.raw.read(decode_content=False)
    text = gzip.decompress(raw).decode()
    assert "# TYPE system_cpu_time_seconds_total counter" in text
    assert int(response.headers["Content-Length"]) == len(raw)


def test_http_1_1_keep_alive_and_server_header(exporter: Exporter) -> None:
    """Two requests on one connection (Prometheus reuses connections); no dev server."""
    with socket.create_connection((LOOPBACK, exporter.port), timeout=10) as conn:
        request = f"GET /livez HTTP/1.1\r\nHost: {LOOPBACK}\r\n\r\n".encode()
        replies = b""
        for sent in (1, 2):
            conn.sendall(request)
            while replies.count(b'{"status":"ok"}') < sent:
                chunk = conn.recv(65536)
                assert chunk, "connection closed between requests"
                replies += chunk
    assert replies.count(b"HTTP/1.1 200") == 2
    assert b"Werkzeug" not in replies
