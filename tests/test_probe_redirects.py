"""Probe credentials on redirects: kept within the configured origin, never sent beyond it.

Two loopback servers on different ports are two origins; the real exporter probes one of
them and each server records the headers it was sent.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from exporter.collectors.probes import origin, strip_credentials
from tests.procs import LOOPBACK, Exporter, sample_value

TOKEN = "t0ken-never-leaves-a"
SECRET = "api-key-never-leaves-a"
UP = "ai_component_up"


class Origin:
    """A loopback HTTP server answering from a route table and recording every request.

    ``routes`` maps a path to a redirect ``Location`` (answered 302); any other path is 200.
    """

    def __init__(self) -> None:
        self.routes: dict[str, str] = {}
        self.seen: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()
        origin_server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                with origin_server._lock:
                    origin_server.seen[self.path] = {k.lower(): v
                                                     for k, v in self.headers.items()}
                location = origin_server.routes.get(self.path)
                self.send_response(302 if location else 200)
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://{LOOPBACK}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def headers(self, path: str) -> dict[str, str]:
        with self._lock:
            return self.seen[path]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def origins() -> Iterator[tuple[Origin, Origin]]:
    a, b = Origin(), Origin()
    yield a, b
    a.stop()
    b.stop()


def _probe(name: str, url: str, token_file: Path) -> dict[str, Any]:
    return {"name": name, "url": url, "bearer_token_file": str(token_file),
            "headers": {"X-Api-Key": SECRET, "Cookie": "session=abc",
                        "User-Agent": "custom-agent"}}


def _assert_has_credentials(headers: dict[str, str]) -> None:
    assert headers["authorization"] == f"Bearer {TOKEN}"
    assert headers["x-api-key"] == SECRET
    assert headers["cookie"] == "session=abc"


def _assert_no_credentials(headers: dict[str, str]) -> None:
    leaked = {"authorization", "x-api-key", "cookie", "proxy-authorization"} & set(headers)
    assert not leaked, f"sent to another origin: {leaked}"
    assert TOKEN not in str(headers) and SECRET not in str(headers)
    assert headers["user-agent"].startswith("ai-metrics-exporter/")  # the default is back


@pytest.mark.e2e
def test_real_exporter_keeps_credentials_within_the_probed_origin(
        origins: tuple[Origin, Origin], tmp_path: Path) -> None:
    a, b = origins
    a.routes.update({"/cross": f"{b.url}/landing", "/same": "/landing",
                     "/bounce": f"{b.url}/back"})
    b.routes["/back"] = f"{a.url}/after-b"
    token = tmp_path / "token"
    token.write_text(f"{TOKEN}\n")
    exp = Exporter(tmp_path, {"components": {"probes": [
        _probe("cross", f"{a.url}/cross", token),
        _probe("same", f"{a.url}/same", token),
        _probe("bounce", f"{a.url}/bounce", token),
    ]}})
    try:
        text = exp.metrics()
        for name in ("cross", "same", "bounce"):
            assert sample_value(text, UP, {"component": name}) == 1.0, name
        # A -> B: A gets everything, B nothing secret.
        _assert_has_credentials(a.headers("/cross"))
        assert a.headers("/cross")["user-agent"] == "custom-agent"
        _assert_no_credentials(b.headers("/landing"))
        # A -> A: same origin, everything kept.
        _assert_has_credentials(a.headers("/landing"))
        assert a.headers("/landing")["user-agent"] == "custom-agent"
        # A -> B -> A: once dropped, the credentials stay dropped for the rest of the chain.
        _assert_has_credentials(a.headers("/bounce"))
        _assert_no_credentials(b.headers("/back"))
        _assert_no_credentials(a.headers("/after-b"))
    finally:
        exp.stop()


def test_origin_is_scheme_host_and_port_with_default_ports() -> None:
    assert origin("http://Example.COM/a") == origin("http://example.com:80/b?q=1")
    assert origin("https://example.com/") == origin("HTTPS://example.com:443/x")
    assert origin("https://example.com/") != origin("http://example.com:443/")  # downgrade
    assert origin("http://example.com/") != origin("https://example.com/")
    assert origin("http://example.com:8080/") != origin("http://example.com/")
    assert origin("http://example.com/") != origin("http://api.example.com/")
    assert origin("http://[::1]:9000/") == ("http", "::1", 9000)


def test_strip_credentials_drops_secrets_and_configured_names_case_insensitively() -> None:
    headers = {"User-Agent": "ua", "Accept": "*/*", "Authorization": "Bearer x",
               "COOKIE": "c=1", "proxy-authorization": "Basic y", "x-api-key": "k",
               "X-Trace": "t"}
    assert strip_credentials(headers, ["X-Api-Key"]) == {
        "User-Agent": "ua", "Accept": "*/*", "X-Trace": "t"}
    assert strip_credentials(headers, ["user-agent", "x-api-key", "x-trace"]) == {
        "Accept": "*/*"}
    assert strip_credentials({}, ["X-Api-Key"]) == {}
