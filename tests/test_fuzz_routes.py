"""Fuzz every route with hypothesis: random methods, headers (credentials, content types,
encodings, scrape timeouts) and bodies. No answer may be a 5xx (other than the documented
503s, which the configuration here rules out) and no body may leak a traceback, a
filesystem path of this installation, or any configured secret.

Runs in-process on the Flask app over a real Runtime, with authentication on (basic auth,
static tokens, JWT) and, separately, with everything open.
"""

from __future__ import annotations

import base64
import gzip
import json
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter import config
from exporter.runtime import Runtime
from exporter.web import create_app
from tests.procs import ROOT
from tests.websec import bcrypt_hash, sha256_line, write_yaml

PASSWORD = "fuzz-password-7f3a9c"
TOKEN = "fuzz-static-token-91be2d"
SCOPED = "fuzz-scoped-token-5c07aa"
SECRET = "fuzz-jwt-secret-0123456789abcdef-xyz"
AUDIENCE = "fuzz-aud"


def _jwt(role: str, **claims: Any) -> str:
    body = {"aud": AUDIENCE, "exp": int(time.time()) + 3600, "role": role, **claims}
    return jwt.encode(body, SECRET, algorithm="HS256")


@pytest.fixture(scope="module")
def secured_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Flask, list[str]]]:
    d = tmp_path_factory.mktemp("fuzz")
    hashed = bcrypt_hash(PASSWORD)
    web = write_yaml(d / "web.yml", {"basic_auth_users": {"admin": hashed, "viewer": hashed}})
    (d / "tokens").write_text(sha256_line("operator", TOKEN, "fuzzer")
                              + sha256_line("operator", SCOPED, "scoped"))
    (d / "secret").write_text(SECRET)
    layer = {"web": {"max_request_bytes": 65536, "enable_lifecycle": True, "security": {
        "web_config_file": str(web), "tokens_file": str(d / "tokens"),
        "basic_auth_roles": {"admin": "admin"},
        "jwt": {"hs256_secret_file": str(d / "secret"), "audience": AUDIENCE,
                "scope_claim": "scope"},
        "scopes": {"token:scoped": {"components": ["api"], "labels": {"queue": "q"}}},
        "limits": {"push_rate_per_second": 1000, "push_burst": 1000}}},
        "health": {"max_memory_utilization": 1.0, "max_disk_utilization": 1.0}}
    path = write_yaml(d / "exporter.yml", layer)
    runtime = Runtime(config.load(str(path), environ={}),
                      lambda: config.load(str(path), environ={}))
    runtime.start()
    forbidden = [PASSWORD, TOKEN, SCOPED, SECRET, hashed, str(d), str(ROOT), sys.prefix]
    yield create_app(runtime), forbidden
    runtime.stop()


@pytest.fixture(scope="module")
def open_app() -> Iterator[tuple[Flask, list[str]]]:
    runtime = Runtime(config.build({"web": {"max_request_bytes": 65536,
                                            "enable_lifecycle": True}, "health": {
        "max_memory_utilization": 1.0, "max_disk_utilization": 1.0}}))
    runtime.start()
    yield create_app(runtime), [str(ROOT), sys.prefix]
    runtime.stop()


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


CREDENTIALS = st.one_of(
    st.none(),
    st.sampled_from([_basic("admin", PASSWORD), _basic("viewer", PASSWORD),
                     _basic("admin", "nope"), f"Bearer {TOKEN}", f"Bearer {SCOPED}",
                     "Bearer " + _jwt("admin"),
                     "Bearer " + _jwt("operator", scope={"components": ["api"]}),
                     "Bearer " + _jwt("operator", scope={"kinds": ["bogus"]}),
                     "Bearer " + _jwt("viewer", exp=1), "Bearer " + _jwt("operator",
                                                                        aud="other"),
                     "Bearer a.b.c", "Basic", "Bearer", "Negotiate abc"]),
    st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs")), max_size=200).map(
        lambda t: "Bearer " + t),
    st.binary(max_size=100).map(lambda b: "Basic " + base64.b64encode(b).decode()),
    st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs")), max_size=100),
)
HEADER_TEXT = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FF),
                      max_size=60)
JSON_EVENT = st.fixed_dictionaries({
    "kind": st.sampled_from(["llm_call", "task", "error", "component_status", "nope"]),
}, optional={
    "provider": HEADER_TEXT, "model": HEADER_TEXT, "component": HEADER_TEXT,
    "category": st.sampled_from(["client", "server", "bogus"]),
    "status": st.sampled_from(["up", "queued", "x"]), "component_kind": st.just("agent"),
    "duration_seconds": st.floats(allow_nan=True, allow_infinity=True),
    "input_tokens": st.integers(min_value=-(2**70), max_value=2**70),
})


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["none", "binary", "json", "ndjson", "gzip", "text"]))
    if kind == "none":
        return b""
    if kind == "binary":
        return draw(st.binary(max_size=512))
    if kind == "text":
        return draw(st.text(max_size=300)).encode("utf-8", "surrogatepass")
    events = draw(st.lists(JSON_EVENT, max_size=5))
    raw = json.dumps(events).encode() if kind != "ndjson" else b"\n".join(
        json.dumps(e).encode() for e in events)
    return gzip.compress(raw) if kind == "gzip" else raw


def _paths(app: Flask) -> list[str]:
    rules = sorted({r.rule for r in app.url_map.iter_rules() if "<" not in r.rule})
    return [*rules, "/nope", "/api/status/../../etc/passwd", "/metrics/%00", "/-/quit"]


REQUESTS = st.fixed_dictionaries({
    "method": st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"]),
    "path_index": st.integers(min_value=0, max_value=1000),
    "authorization": CREDENTIALS,
    "content_type": st.sampled_from(["application/json", "application/x-ndjson",
                                     "text/plain", "", "application/json; charset=latin1",
                                     "multipart/form-data; boundary=x"]),
    "content_encoding": st.sampled_from(["", "gzip", "identity", "br", "gzip, gzip"]),
    "timeout": st.one_of(st.none(), st.sampled_from(["5", "-1", "nan", "1e309", "0.001"]),
                         HEADER_TEXT),
    "extra": st.dictionaries(st.sampled_from(["Accept-Encoding", "X-Forwarded-For", "Origin",
                                              "Cookie", "Range", "Accept"]), HEADER_TEXT,
                             max_size=3),
    "body": bodies(),
    "query": st.one_of(st.just(""), HEADER_TEXT.map(lambda t: "?" + t)),
})

LEAK = re.compile(r"Traceback|File \"|\.py\b|site-packages|/home/|/root/|/tmp/")


def _check(app: Flask, forbidden: list[str], req: dict[str, Any]) -> None:
    paths = _paths(app)
    path = paths[req["path_index"] % len(paths)]
    headers: dict[str, str] = dict(req["extra"])
    if req["authorization"] is not None:
        headers["Authorization"] = req["authorization"]
    if req["content_type"]:
        headers["Content-Type"] = req["content_type"]
    if req["content_encoding"]:
        headers["Content-Encoding"] = req["content_encoding"]
    if req["timeout"] is not None:
        headers["X-Prometheus-Scrape-Timeout-Seconds"] = req["timeout"]
    client = app.test_client()
    response = client.open(path + req["query"], method=req["method"], headers=headers,
                           data=req["body"])
    body = response.get_data()
    if response.headers.get("Content-Encoding") == "gzip":
        body = gzip.decompress(body)
    text = body.decode("utf-8", "replace")
    assert response.status_code < 500, (path, req["method"], response.status_code, text[:300])
    if path != "/metrics":  # series labels may hold mount points and tailed file paths
        assert not LEAK.search(text), (path, LEAK.search(text), text[:300])
    for secret in forbidden:
        assert secret not in text, (path, "leaked a secret or path")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.data_too_large])
@given(req=REQUESTS)
def test_fuzz_secured_routes(secured_app: tuple[Flask, list[str]], req: dict[str, Any]) -> None:
    _check(*secured_app, req)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.data_too_large])
@given(req=REQUESTS)
def test_fuzz_open_routes(open_app: tuple[Flask, list[str]], req: dict[str, Any]) -> None:
    _check(*open_app, req)


def test_fuzz_covers_every_route(secured_app: tuple[Flask, list[str]]) -> None:
    app, _ = secured_app
    rules = {r.rule for r in app.url_map.iter_rules() if r.endpoint != "static"}
    assert {"/metrics", "/api/v1/events", "/-/reload", "/livez"} <= rules
    assert all("<" not in rule for rule in rules), "a parametrised route needs a strategy"


def test_leak_pattern_catches_a_traceback(tmp_path: Path) -> None:
    sample = f'Traceback (most recent call last):\n  File "{tmp_path}/x.py", line 1'
    assert LEAK.search(sample)
