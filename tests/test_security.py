"""Authentication, roles and limits: each role can do exactly what it should.

Most checks use the Flask app in-process over a real Runtime (the same hooks cheroot
serves); the concurrency cap uses the real threaded server, since it needs requests truly
in flight at once.
"""

from __future__ import annotations

import gzip
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from exporter import config
from exporter.runtime import Runtime
from exporter.security import TokenBucket, parse_token_file
from exporter.web import create_app
from tests.procs import LOOPBACK, sample_value, wait_until
from tests.websec import basic, bcrypt_hash, bearer, running_server, sha256_line, write_yaml

HS_SECRET = "hs256-secret-for-tests-0123456789abcdef"
AUDIENCE = "ai-metrics-exporter"
EVENT = {"kind": "error", "component": "api", "category": "client"}


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Credential files shared by the module: users, a token file, a JWT secret."""
    d = tmp_path_factory.mktemp("sec")
    web = write_yaml(d / "web.yml", {"basic_auth_users": {
        "viewer": bcrypt_hash("v-pass"), "pusher": bcrypt_hash("o-pass"),
        "root": bcrypt_hash("a-pass")}})
    tokens = d / "tokens"
    tokens.write_text("# role hash name\n" + sha256_line("viewer", "tok-viewer", "grafana")
                      + sha256_line("operator", "tok-operator", "ci")
                      + f"admin {bcrypt_hash('tok-admin')} ops\n")
    secret = d / "jwt.secret"
    secret.write_text(HS_SECRET)
    return {"dir": d, "web": str(web), "tokens": str(tokens), "secret": str(secret)}


def make_runtime(settings: dict[str, Any]) -> Runtime:
    runtime = Runtime(config.build(settings))
    runtime.start()
    return runtime


def security_settings(secured: dict[str, Any], **extra: Any) -> dict[str, Any]:
    sec = {"web_config_file": secured["web"], "tokens_file": secured["tokens"],
           "basic_auth_roles": {"pusher": "operator", "root": "admin"},
           "jwt": {"hs256_secret_file": secured["secret"], "audience": AUDIENCE}, **extra}
    return {"web": {"security": sec, "enable_lifecycle": True},
            "health": {"max_memory_utilization": 1.0,
                                                  "max_disk_utilization": 1.0}}


@pytest.fixture(scope="module")
def runtime(secured: dict[str, Any]) -> Iterator[Runtime]:
    rt = make_runtime(security_settings(secured))
    yield rt
    rt.stop()


@pytest.fixture
def client(runtime: Runtime) -> FlaskClient:
    return create_app(runtime).test_client()


def token(claims: dict[str, Any], key: Any = HS_SECRET, algorithm: str = "HS256") -> str:
    """A signed JWT. The role lists below are made at collection, well before their tests
    run in a full suite, so tokens are valid for a day unless a test sets ``exp``."""
    now = int(time.time())
    body = {"aud": AUDIENCE, "exp": now + 86400, "iat": now, "sub": "svc", **claims}
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key,
                      algorithm=algorithm)


def failures(client: FlaskClient, reason: str) -> float:
    text = client.get("/metrics", headers=basic("root", "a-pass")).get_data(as_text=True)
    return sample_value(text, "ai_exporter_http_auth_failures_total", {"reason": reason}) or 0


VIEWER = [basic("viewer", "v-pass"), bearer("tok-viewer"), bearer(token({"role": "viewer"}))]
OPERATOR = [basic("pusher", "o-pass"), bearer("tok-operator"),
            bearer(token({"role": "operator"}))]
ADMIN = [basic("root", "a-pass"), bearer("tok-admin"), bearer(token({"role": "admin"}))]
READ_ROUTES = ["/", "/metrics", "/api/status/version", "/api/status/system",
               "/api/metrics/system", "/api/status/ai", "/api/metrics/ai", "/api/v1/schema"]


@pytest.mark.parametrize("creds", VIEWER + OPERATOR + ADMIN)
def test_every_role_reads(client: FlaskClient, creds: dict[str, str]) -> None:
    for route in READ_ROUTES:
        assert client.get(route, headers=creds).status_code == 200, route


@pytest.mark.parametrize(("creds", "push", "reload"), [
    *[(c, 403, 403) for c in VIEWER], *[(c, 200, 403) for c in OPERATOR],
    *[(c, 200, 200) for c in ADMIN]])
def test_each_role_can_do_exactly_what_it_should(client: FlaskClient, creds: dict[str, str],
                                                  push: int, reload: int) -> None:
    assert client.post("/api/v1/events", json=EVENT, headers=creds).status_code == push
    # reload with no loader answers 400 "rejected": the request got past the role check
    status = client.post("/-/reload", headers=creds).status_code
    assert status == (400 if reload == 200 else 403)


def test_anonymous_gets_401_with_challenge_health_stays_open(client: FlaskClient) -> None:
    for route in READ_ROUTES:
        response = client.get(route)
        assert response.status_code == 401
        assert "Basic realm=" in response.headers["WWW-Authenticate"]
        assert "Bearer realm=" in response.headers["WWW-Authenticate"]
    assert client.post("/api/v1/events", json=EVENT).status_code == 401
    for route in ("/livez", "/readyz", "/healthz"):
        assert client.get(route).status_code == 200


def test_wrong_password_and_unknown_user_401_and_counted(client: FlaskClient) -> None:
    before_bad, before_unknown = failures(client, "bad_password"), failures(client,
                                                                           "unknown_user")
    response = client.get("/metrics", headers=basic("viewer", "wrong"))
    assert response.status_code == 401
    assert b"wrong" not in response.get_data()
    assert client.get("/metrics", headers=basic("mallory", "v-pass")).status_code == 401
    assert failures(client, "bad_password") == before_bad + 1
    assert failures(client, "unknown_user") == before_unknown + 1


@pytest.mark.parametrize("header", ["Bearer nope", "Bearer ", "Basic !!!", "Basic Zm9v",
                                    "Digest x", "Bearer a.b.c", "Bearer " + "x" * 9000])
def test_wrong_or_malformed_token_401(client: FlaskClient, header: str) -> None:
    assert client.get("/metrics", headers={"Authorization": header}).status_code == 401


@pytest.mark.parametrize(("claims", "reason"), [
    ({"role": "viewer", "exp": int(time.time()) - 3600}, "expired"),
    ({"role": "viewer", "aud": "someone-else"}, "wrong_audience"),
    ({"role": "viewer", "aud": None}, "wrong_audience"),
    ({"role": "viewer", "nbf": int(time.time()) + 3600}, "not_yet_valid"),
    ({"role": "superuser"}, "no_role"),
    ({"role": "viewer", "exp": None}, "bad_token"),
])
def test_bad_jwt_401(client: FlaskClient, claims: dict[str, Any], reason: str) -> None:
    before = failures(client, reason)
    assert client.get("/metrics", headers=bearer(token(claims))).status_code == 401
    assert failures(client, reason) == before + 1


def test_jwt_signed_with_another_key_or_alg_none_401(client: FlaskClient) -> None:
    forged = token({"role": "admin"}, key="another-secret-another-secret-0123")
    assert client.get("/metrics", headers=bearer(forged)).status_code == 401
    unsigned = jwt.encode({"role": "admin", "aud": AUDIENCE,
                           "exp": int(time.time()) + 60}, key="", algorithm="none")
    assert client.get("/metrics", headers=bearer(unsigned)).status_code == 401


def test_rs256_jwt_with_role_list_claim(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    pem = rsa_key.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "jwt.pub").write_bytes(pem)
    rt = make_runtime({"web": {"security": {"jwt": {
        "rs256_public_key_file": str(tmp_path / "jwt.pub"), "audience": AUDIENCE,
        "issuer": "https://issuer.test", "role_claim": "realm.roles"}}}})
    try:
        c = create_app(rt).test_client()
        good = token({"iss": "https://issuer.test", "realm": {"roles": ["viewer", "operator"]}},
                     rsa_key, "RS256")
        assert c.post("/api/v1/events", json=EVENT, headers=bearer(good)).status_code == 200
        assert c.post("/-/reload", headers=bearer(good)).status_code == 403
        wrong_issuer = token({"iss": "https://evil.test", "realm": {"roles": ["admin"]}},
                             rsa_key, "RS256")
        assert c.get("/metrics", headers=bearer(wrong_issuer)).status_code == 401
        hs_confusion = token({"iss": "https://issuer.test", "realm": {"roles": ["admin"]}},
                             HS_SECRET, "HS256")
        assert c.get("/metrics", headers=bearer(hs_confusion)).status_code == 401
    finally:
        rt.stop()


def test_successful_bcrypt_checks_are_cached(runtime: Runtime, client: FlaskClient) -> None:
    runtime.security.install(runtime.security.policy)  # clears the cache
    for _ in range(3):
        assert client.get("/metrics", headers=basic("viewer", "v-pass")).status_code == 200
    assert len(runtime.security._verified) == 1
    assert client.get("/metrics", headers=basic("viewer", "v-pass2")).status_code == 401
    assert len(runtime.security._verified) == 1


def test_push_tokens_keep_working_as_operator_tokens() -> None:
    rt = make_runtime({"sources": {"push": {"tokens": ["legacy-push-token"]}}})
    try:
        c = create_app(rt).test_client()
        assert c.get("/metrics").status_code == 200  # reads stay open as before
        assert c.post("/api/v1/events", json=EVENT).status_code == 401
        assert c.post("/api/v1/events", json=EVENT,
                      headers=bearer("legacy-push-token")).status_code == 200
        assert c.post("/api/v1/events", json=EVENT,
                      headers=bearer("wrong-push-token")).status_code == 401
        assert c.post("/-/reload", headers=bearer("legacy-push-token")).status_code == 403
    finally:
        rt.stop()


def test_no_credentials_configured_means_open(tmp_path: Path) -> None:
    rt = make_runtime({})
    try:
        c = create_app(rt).test_client()
        assert c.get("/metrics").status_code == 200
        assert c.post("/api/v1/events", json=EVENT).status_code == 200
    finally:
        rt.stop()


def test_health_routes_configurable(secured: dict[str, Any]) -> None:
    rt = make_runtime(security_settings(secured, open_routes=["/livez"]))
    try:
        c = create_app(rt).test_client()
        assert c.get("/livez").status_code == 200
        assert c.get("/readyz").status_code == 401
        assert c.get("/readyz", headers=bearer("tok-viewer")).status_code == 200
    finally:
        rt.stop()


def test_oversized_body_413(secured: dict[str, Any]) -> None:
    settings = security_settings(secured)
    settings["web"]["max_request_bytes"] = 1024
    rt = make_runtime(settings)
    try:
        c = create_app(rt).test_client()
        big = json.dumps([EVENT] * 200).encode()
        response = c.post("/api/v1/events", data=big, content_type="application/json",
                          headers=bearer("tok-operator"))
        assert response.status_code == 413
        bomb = gzip.compress(json.dumps([EVENT] * 2000).encode())
        assert len(bomb) < 1024
        response = c.post("/api/v1/events", data=bomb, headers={
            **bearer("tok-operator"), "Content-Type": "application/json",
            "Content-Encoding": "gzip"})
        assert response.status_code == 413
    finally:
        rt.stop()


def test_push_rate_limit_429_with_retry_after(secured: dict[str, Any]) -> None:
    rt = make_runtime(security_settings(secured, limits={"push_rate_per_second": 0.5,
                                                         "push_burst": 3}))
    try:
        c = create_app(rt).test_client()
        codes = [c.post("/api/v1/events", json=EVENT, headers=bearer("tok-operator"))
                 for _ in range(5)]
        assert [r.status_code for r in codes] == [200, 200, 200, 429, 429]
        assert 1 <= int(codes[3].headers["Retry-After"]) <= 2
        # buckets are per client: another identity still has its burst
        other = c.post("/api/v1/events", json=EVENT, headers=basic("pusher", "o-pass"))
        assert other.status_code == 200
        assert c.get("/metrics", headers=bearer("tok-operator")).status_code == 200
    finally:
        rt.stop()


def test_token_bucket_refills() -> None:
    bucket = TokenBucket(rate=2.0, burst=2)
    assert bucket.take("a", 0.0) == 0 and bucket.take("a", 0.0) == 0
    assert bucket.take("a", 0.0) == pytest.approx(0.5)
    assert bucket.take("a", 0.6) == 0
    assert bucket.take("b", 0.6) == 0


def _hold(port: int) -> socket.socket:
    """A request whose body never arrives: it holds a worker (and a slot) until closed."""
    sock = socket.create_connection((LOOPBACK, port), timeout=5)
    sock.sendall(b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: "
                 b"application/json\r\nContent-Length: 1000\r\n\r\n[")
    return sock


def test_concurrent_request_cap_503() -> None:
    with running_server({"web": {"threads": 6, "security": {
            "limits": {"max_concurrent_requests": 2}}}}) as rt:
        url = f"http://{LOOPBACK}:{rt.port}"
        held = [_hold(rt.port) for _ in range(2)]
        try:
            wait_until(lambda: rt.security.concurrency.in_flight == 2, 10,
                       what="two requests in flight")
            busy = requests.get(f"{url}/metrics", timeout=10)
            assert busy.status_code == 503
            assert busy.headers["Retry-After"] == "1"
            assert requests.get(f"{url}/livez", timeout=10).status_code == 200
        finally:
            for sock in held:
                sock.close()
        wait_until(lambda: requests.get(f"{url}/metrics", timeout=10).status_code == 200,
                   10, what="slots released")


def test_web_config_file_is_reread_and_a_broken_one_keeps_the_last_good(
        tmp_path: Path) -> None:
    web = write_yaml(tmp_path / "web.yml", {"basic_auth_users": {"a": bcrypt_hash("1")}})
    rt = make_runtime({"web": {"security": {"web_config_file": str(web)}}})
    try:
        c = create_app(rt).test_client()
        assert c.get("/metrics", headers=basic("b", "2")).status_code == 401
        write_yaml(web, {"basic_auth_users": {"a": bcrypt_hash("1"), "b": bcrypt_hash("2")}})
        assert c.get("/metrics", headers=basic("b", "2")).status_code == 200
        web.write_text("basic_auth_users: [broken")
        kept = c.get("/metrics", headers=basic("b", "2"))
        assert kept.status_code == 200  # the last good file is still in force
        assert sample_value(kept.get_data(as_text=True),
                            "ai_exporter_web_config_last_reload_successful") == 0.0
        anonymous = c.get("/metrics")
        assert anonymous.status_code == 401
        assert str(tmp_path) not in anonymous.get_data(as_text=True)
        assert c.get("/livez").status_code == 200
        write_yaml(web, {"basic_auth_users": {"b": bcrypt_hash("2")}})
        fixed = c.get("/metrics", headers=basic("b", "2"))
        assert fixed.status_code == 200
        assert sample_value(fixed.get_data(as_text=True),
                            "ai_exporter_web_config_last_reload_successful") == 1.0
        assert c.get("/metrics", headers=basic("a", "1")).status_code == 401
    finally:
        rt.stop()


def test_reload_swaps_tokens_and_hides_paths(tmp_path: Path, secured: dict[str, Any]) -> None:
    settings = security_settings(secured)
    with running_server(settings, config_path=tmp_path / "exporter.yml") as rt:
        c = create_app(rt).test_client()
        admin = basic("root", "a-pass")
        assert c.post("/-/reload", headers=admin).status_code == 200
        tokens = tmp_path / "tokens2"
        tokens.write_text(sha256_line("admin", "fresh-token", "fresh"))
        settings["web"]["security"]["tokens_file"] = str(tokens)
        settings["web"]["listen_address"] = f"{LOOPBACK}:{rt.port}"
        write_yaml(tmp_path / "exporter.yml", settings)
        assert c.post("/-/reload", headers=admin).status_code == 200
        assert c.get("/metrics", headers=bearer("fresh-token")).status_code == 200
        assert c.get("/metrics", headers=bearer("tok-viewer")).status_code == 401
        settings["web"]["security"]["tokens_file"] = str(tmp_path / "missing-tokens")
        write_yaml(tmp_path / "exporter.yml", settings)
        rejected = c.post("/-/reload", headers=bearer("fresh-token"))
        assert rejected.status_code == 400
        body = rejected.get_data(as_text=True)
        assert "web.security.tokens_file" in body
        assert str(tmp_path) not in body and "missing-tokens" not in body
        assert c.get("/metrics", headers=bearer("fresh-token")).status_code == 200


def test_version_route_reveals_no_config(client: FlaskClient, secured: dict[str, Any]) -> None:
    response = client.get("/api/status/version", headers=bearer("tok-viewer"))
    body = response.get_json()
    assert set(body) == {"version", "revision", "build_date", "python_version"}
    text = response.get_data(as_text=True)
    for secret in (HS_SECRET, secured["dir"].as_posix(), "tok-", "a-pass"):
        assert str(secret) not in text


@pytest.mark.parametrize(("text", "message"), [
    ("wizard sha256:" + "0" * 64, "line 1: role must be one of"),
    ("viewer md5:abc", "line 1: hash must be"),
    ("\n\nviewer", "line 3: expected"),
])
def test_token_file_errors_name_the_line(text: str, message: str) -> None:
    with pytest.raises(config.ConfigError, match=message):
        parse_token_file(text)


@pytest.mark.parametrize(("settings", "field"), [
    ({"jwt": {"hs256_secret_file": "/nonexistent-secret", "audience": "a"}},
     "web.security.jwt.hs256_secret_file"),
    ({"jwt": {"hs256_secret_file": "/etc/hostname"}}, "web.security.jwt.audience"),
    ({"basic_auth_roles": {"x": "root"}}, "web.security.basic_auth_roles"),
    ({"limits": {"push_rate_per_second": -1}}, "web.security.limits.push_rate_per_second"),
    ({"open_routes": ["livez"]}, "web.security.open_routes.0"),
    ({"tokens_file": "/nonexistent-tokens"}, "web.security.tokens_file"),
])
def test_security_config_errors_name_the_field(settings: dict[str, Any], field: str) -> None:
    with pytest.raises(config.ConfigError) as info:
        Runtime.validate(config.build({"web": {"security": settings}}))
    assert str(info.value).startswith(field), str(info.value)


def test_short_hs256_secret_rejected(tmp_path: Path) -> None:
    (tmp_path / "s").write_text("short")
    with pytest.raises(config.ConfigError, match="at least 32 bytes"):
        Runtime.validate(config.build({"web": {"security": {"jwt": {
            "hs256_secret_file": str(tmp_path / "s"), "audience": "a"}}}}))


def test_event_labels_are_sanitized_everywhere() -> None:
    rt = make_runtime({})
    try:
        c = create_app(rt).test_client()
        nasty = "evil\x00\x1b[31m\u202e\u2028name" + "x" * 200  # model caps at 256
        events = [
            {"kind": "error", "component": nasty, "category": "client"},
            {"kind": "task", "component": nasty, "queue": nasty, "status": "queued",
             "task_id": "t1"},
            {"kind": "component_status", "component": nasty, "component_kind": "agent",
             "status": "up", "version": nasty},
        ]
        response = c.post("/api/v1/events", json=events)
        assert response.status_code == 200, response.get_data()
        text = c.get("/metrics").get_data(as_text=True)
        seen = 0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                for value in sample.labels.values():
                    if value.startswith("evil"):
                        seen += 1
                        assert len(value) <= 128
                        assert all(ch.isprintable() for ch in value), repr(value)
        assert seen >= 4  # errors, queue depth, heartbeat up/last seen/info
    finally:
        rt.stop()
