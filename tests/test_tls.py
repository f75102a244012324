"""TLS from the exporter-toolkit web config file: real handshakes against the real server.

Certificates are generated per session (``tests.certs``): valid, expired, signed by another
CA, and client certificates for mutual TLS. The last test runs the real exporter binary
with ``--web.config.file`` and a real Prometheus that scrapes it over mutual TLS with
basic auth.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from exporter.config import ConfigError
from exporter.webconfig import parse, parse_duration
from tests.certs import Pki, issue, make_pki
from tests.procs import EXPORTER_BIN, LOOPBACK, Exporter, Prometheus, static_job, wait_until
from tests.websec import bcrypt_hash, running_server, write_yaml


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def tls_section(pki: Pki, **extra: Any) -> dict[str, Any]:
    return {"cert_file": str(pki.server.cert), "key_file": str(pki.server.key), **extra}


def client_context(ca: Path | None, cert: tuple[Path, Path] | None = None,
                   maximum: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca) if ca else None)
    if cert is not None:
        context.load_cert_chain(str(cert[0]), str(cert[1]))
    if maximum is not None:
        context.maximum_version = maximum
    return context


def https_get(port: int, context: ssl.SSLContext, path: str = "/livez",
              headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, Any]]:
    """One HTTP/1.1 request over a fresh TLS connection; raises on a failed handshake."""
    raw = socket.create_connection((LOOPBACK, port), timeout=5)
    try:
        tls = context.wrap_socket(raw, server_hostname=LOOPBACK)
    except BaseException:
        raw.close()
        raise
    with tls:
        info = {"version": tls.version(), "cipher": tls.cipher(), "cert": tls.getpeercert()}
        lines = [f"GET {path} HTTP/1.1", f"Host: {LOOPBACK}:{port}", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        tls.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    if not data:
        raise ConnectionError("connection closed without a response")
    status = int(data.split(b" ", 2)[1])
    return status, data.partition(b"\r\n\r\n")[2], info


@pytest.fixture
def tls_server(tmp_path: Path, pki: Pki) -> Iterator[Any]:
    """A factory: ``start(web_config_dict, security_settings)`` → running runtime."""
    stack: list[Any] = []

    def start(web: dict[str, Any], security: dict[str, Any] | None = None) -> Any:
        path = write_yaml(tmp_path / f"web-{len(stack)}.yml", web)
        cm = running_server({"web": {"security": {"web_config_file": str(path),
                                                  **(security or {})}}})
        runtime = cm.__enter__()
        stack.append(cm)
        return runtime

    yield start
    for cm in reversed(stack):
        cm.__exit__(None, None, None)


def test_valid_certificate_handshake_tls12_or_better(tls_server: Any, pki: Pki) -> None:
    runtime = tls_server({"tls_server_config": tls_section(pki)})
    status, body, tls = https_get(runtime.port, client_context(pki.ca.path))
    assert status == 200 and b'"ok"' in body
    assert tls["version"] in ("TLSv1.2", "TLSv1.3")
    response = requests.get(f"https://{LOOPBACK}:{runtime.port}/metrics",
                            verify=str(pki.ca.path), timeout=10)
    assert response.status_code == 200
    assert "system_cpu_time_seconds_total" in response.text


def test_plain_http_to_tls_port_gets_no_data(tls_server: Any, pki: Pki) -> None:
    runtime = tls_server({"tls_server_config": tls_section(pki)})
    try:
        response = requests.get(f"http://{LOOPBACK}:{runtime.port}/metrics", timeout=5)
    except requests.exceptions.ConnectionError:
        return  # dropped: fine
    assert response.status_code == 400  # cheroot's plain-HTTP notice, never metrics
    assert "system_cpu" not in response.text


def test_expired_server_certificate_is_refused_by_client(tls_server: Any, pki: Pki) -> None:
    runtime = tls_server({"tls_server_config": {"cert_file": str(pki.server_expired.cert),
                                                "key_file": str(pki.server_expired.key)}})
    with pytest.raises(ssl.SSLCertVerificationError, match="expired"):
        https_get(runtime.port, client_context(pki.ca.path))


def test_server_certificate_from_wrong_ca_is_refused(tls_server: Any, pki: Pki) -> None:
    runtime = tls_server({"tls_server_config": tls_section(pki)})
    with pytest.raises(ssl.SSLCertVerificationError):
        https_get(runtime.port, client_context(pki.other_ca.path))


def _handshake_fails(port: int, context: ssl.SSLContext) -> bool:
    """With TLS 1.3 a refused client certificate surfaces on the first read, not at
    connect; either way no HTTP response may come back."""
    try:
        https_get(port, context)
    except (ssl.SSLError, ConnectionError, OSError):
        return True
    return False


def test_client_certificate_required(tls_server: Any, pki: Pki) -> None:
    runtime = tls_server({"tls_server_config": tls_section(
        pki, client_ca_file=str(pki.ca.path), client_auth_type="RequireAndVerifyClientCert")})
    port = runtime.port
    assert _handshake_fails(port, client_context(pki.ca.path))
    assert _handshake_fails(port, client_context(
        pki.ca.path, (pki.client_other_ca.cert, pki.client_other_ca.key)))
    assert _handshake_fails(port, client_context(
        pki.ca.path, (pki.client_expired.cert, pki.client_expired.key)))
    status, _body, _tls = https_get(port, client_context(
        pki.ca.path, (pki.client.cert, pki.client.key)))
    assert status == 200


def test_verify_client_cert_if_given(tls_server: Any, pki: Pki) -> None:
    runtime = tls_server({"tls_server_config": tls_section(
        pki, client_ca_file=str(pki.ca.path), client_auth_type="VerifyClientCertIfGiven")})
    assert https_get(runtime.port, client_context(pki.ca.path))[0] == 200
    assert _handshake_fails(runtime.port, client_context(
        pki.ca.path, (pki.client_other_ca.cert, pki.client_other_ca.key)))


def test_client_allowed_sans(tls_server: Any, pki: Pki, tmp_path: Path) -> None:
    runtime = tls_server({"tls_server_config": tls_section(
        pki, client_ca_file=str(pki.ca.path), client_allowed_sans=["prometheus.test"])})
    ok = client_context(pki.ca.path, (pki.client.cert, pki.client.key))
    assert https_get(runtime.port, ok)[0] == 200
    stranger = issue(pki.ca, tmp_path, "stranger", client=True, sans=("stranger.test",))
    assert _handshake_fails(runtime.port, client_context(pki.ca.path,
                                                         (stranger.cert, stranger.key)))


def test_client_certificate_grants_a_role(tls_server: Any, pki: Pki) -> None:
    runtime = tls_server({"tls_server_config": tls_section(
        pki, client_ca_file=str(pki.ca.path), client_auth_type="VerifyClientCertIfGiven")},
        {"client_cert_role": "viewer"})
    with_cert = client_context(pki.ca.path, (pki.client.cert, pki.client.key))
    assert https_get(runtime.port, with_cert, "/metrics")[0] == 200
    assert https_get(runtime.port, client_context(pki.ca.path), "/metrics")[0] == 401


def test_min_and_max_version(tls_server: Any, pki: Pki) -> None:
    runtime = tls_server({"tls_server_config": tls_section(pki, min_version="TLS13")})
    assert _handshake_fails(runtime.port, client_context(pki.ca.path,
                                                         maximum=ssl.TLSVersion.TLSv1_2))
    assert https_get(runtime.port, client_context(pki.ca.path))[2]["version"] == "TLSv1.3"
    capped = tls_server({"tls_server_config": tls_section(pki, max_version="TLS12")})
    assert https_get(capped.port, client_context(pki.ca.path))[2]["version"] == "TLSv1.2"


def test_cipher_suites_are_applied(tls_server: Any, pki: Pki) -> None:
    runtime = tls_server({"tls_server_config": tls_section(
        pki, max_version="TLS12", cipher_suites=["TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"])})
    _status, _body, tls = https_get(runtime.port, client_context(pki.ca.path))
    cipher = tls["cipher"]
    assert cipher is not None and cipher[0] == "ECDHE-ECDSA-AES256-GCM-SHA384"


def test_certificate_rotation_without_restart(tls_server: Any, pki: Pki,
                                              tmp_path: Path) -> None:
    live = tmp_path / "live"
    live.mkdir()
    shutil.copy(pki.server.cert, live / "tls.crt")
    shutil.copy(pki.server.key, live / "tls.key")
    runtime = tls_server({"tls_server_config": {"cert_file": str(live / "tls.crt"),
                                                "key_file": str(live / "tls.key")}})
    first = https_get(runtime.port, client_context(pki.ca.path))[2]
    rotated = issue(pki.ca, tmp_path, "server-rotated")
    shutil.copy(rotated.key, live / "tls.key")
    shutil.copy(rotated.cert, live / "tls.crt")

    def serial() -> int:
        tls = https_get(runtime.port, client_context(pki.ca.path))[2]
        return int(tls["cert"]["serialNumber"], 16)

    assert int(first["cert"]["serialNumber"], 16) == pki.server.serial
    wait_until(lambda: serial() == rotated.serial, 10, what="rotated certificate served")


def test_headers_from_web_config(tls_server: Any, pki: Pki) -> None:
    runtime = tls_server({"tls_server_config": tls_section(pki), "http_server_config": {
        "headers": {"Strict-Transport-Security": "max-age=31536000",
                    "X-Frame-Options": "sameorigin"}}})
    response = requests.get(f"https://{LOOPBACK}:{runtime.port}/livez",
                            verify=str(pki.ca.path), timeout=10)
    assert response.headers["Strict-Transport-Security"] == "max-age=31536000"
    assert response.headers["X-Frame-Options"] == "sameorigin"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize(("document", "field"), [
    ({"tls_server_config": {"cert_file": "/nonexistent.crt", "key_file": "k"}},
     "tls_server_config.cert_file"),
    ({"tls_server_config": {"key_file": "k"}}, "tls_server_config.cert_file"),
    ({"tls_server_config": {"cert": "x", "key": "y", "min_version": "TLS9"}},
     "tls_server_config.min_version"),
    ({"tls_server_config": {"cert": "x", "key": "y", "client_auth_type": "Sometimes"}},
     "tls_server_config.client_auth_type"),
    ({"tls_server_config": {"cert": "x", "key": "y", "client_auth_type": "RequestClientCert",
                            "client_ca": "z"}}, "tls_server_config.client_auth_type"),
    ({"tls_server_config": {"cert": "x", "key": "y",
                            "client_auth_type": "RequireAndVerifyClientCert"}},
     "tls_server_config.client_ca_file"),
    ({"tls_server_config": {"cert": "x", "key": "y", "cipher_suites": ["TLS_NOPE"]}},
     "tls_server_config.cipher_suites.0"),
    ({"tls_server_config": {"cert": "x", "key": "y", "min_version": "TLS13",
                            "max_version": "TLS12"}}, "tls_server_config.min_version"),
    ({"tls_server_config": {"cert": "x", "key": "y", "surprise": 1}},
     "tls_server_config.surprise"),
    ({"basic_auth_users": {"alice": "plaintext"}}, "basic_auth_users.alice"),
    ({"http_server_config": {"headers": {"Server": "x"}}}, "http_server_config.headers.Server"),
    ({"http_server_config": {"headers": {"X-Frame-Options": "allow"}}},
     "http_server_config.headers.X-Frame-Options"),
    ({"rate_limit": {"interval": "soon", "burst": 1}}, "rate_limit.interval"),
    ({"nonsense": True}, "nonsense"),
])
def test_web_config_errors_name_the_field(document: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse("web.yml", yaml.safe_dump(document))
    message = str(info.value)
    assert message.startswith("web.security.web_config_file: web.yml: ")
    assert f": {field}:" in message, message


def test_web_config_accepts_the_toolkit_example() -> None:
    text = """
tls_server_config:
  cert: "-----BEGIN CERTIFICATE-----"
  key: "-----BEGIN PRIVATE KEY-----"
  min_version: TLS12
  prefer_server_cipher_suites: true
  curve_preferences: [X25519, CurveP256]
http_server_config:
  http2: false
  headers:
    X-Content-Type-Options: nosniff
basic_auth_users:
  alice: $2y$10$mDwo.lAisC94iLAyP81MCesa29IzH37oigHC/42V2pdJlUprsJPze
rate_limit:
  interval: 100ms
  burst: 20
"""
    settings = parse("web.yml", text)
    assert settings.tls is not None and settings.tls.client_auth_type == "NoClientCert"
    assert set(settings.basic_auth_users) == {"alice"}
    assert settings.rate_interval_seconds == pytest.approx(0.1)
    assert parse_duration("1m30s") == 90.0


@pytest.mark.e2e
def test_cli_rejects_bad_web_config_with_exit_2(tmp_path: Path) -> None:
    bad = write_yaml(tmp_path / "web.yml", {"tls_server_config": {
        "cert_file": str(tmp_path / "missing.crt"), "key_file": str(tmp_path / "k")}})
    result = subprocess.run([EXPORTER_BIN, "check-config", f"--web.config.file={bad}"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "tls_server_config.cert_file" in result.stderr


class TlsExporter(Exporter):
    """The real exporter serving HTTPS with mutual TLS; readiness checked over TLS."""

    ca: Path
    client: tuple[str, str]

    def wait_ready(self, timeout: float = 20.0) -> None:
        self.url = f"https://{LOOPBACK}:{self.port}"

        def ready() -> bool:
            if not self.alive():
                raise AssertionError(f"exporter exited early:\n{self.log()}")
            return requests.get(f"{self.url}/livez", verify=str(self.ca), cert=self.client,
                                timeout=1).status_code == 200

        wait_until(ready, timeout, what="exporter /livez over TLS")


@pytest.mark.e2e
def test_prometheus_scrapes_over_mutual_tls_with_basic_auth(tmp_path: Path, pki: Pki) -> None:
    web = write_yaml(tmp_path / "web.yml", {
        "tls_server_config": {"cert_file": str(pki.server.cert),
                              "key_file": str(pki.server.key),
                              "client_ca_file": str(pki.ca.path),
                              "client_auth_type": "RequireAndVerifyClientCert"},
        "basic_auth_users": {"prometheus": bcrypt_hash("scrape-secret", rounds=10)},
    })
    TlsExporter.ca = pki.ca.path
    TlsExporter.client = (str(pki.client.cert), str(pki.client.key))
    exporter = TlsExporter(tmp_path, args=[f"--web.config.file={web}"])
    prometheus = None
    try:
        url = exporter.url
        anonymous = requests.get(f"{url}/metrics", verify=str(pki.ca.path),
                                 cert=TlsExporter.client, timeout=10)
        assert anonymous.status_code == 401
        target = f"{LOOPBACK}:{exporter.port}"
        tls_config = {"ca_file": str(pki.ca.path), "cert_file": str(pki.client.cert),
                      "key_file": str(pki.client.key), "server_name": LOOPBACK}
        prometheus = Prometheus(tmp_path, [
            static_job("secure", target, scheme="https", tls_config=tls_config,
                       basic_auth={"username": "prometheus", "password": "scrape-secret"}),
            static_job("wrong-password", target, scheme="https", tls_config=tls_config,
                       basic_auth={"username": "prometheus", "password": "guess"}),
            static_job("no-client-cert", target, scheme="https",
                       tls_config={"ca_file": str(pki.ca.path), "server_name": LOOPBACK},
                       basic_auth={"username": "prometheus", "password": "scrape-secret"}),
        ])
        prometheus.wait_for('up{job="secure"} == 1')
        prometheus.wait_for('up{job="wrong-password"} == 0')
        prometheus.wait_for('up{job="no-client-cert"} == 0')
        prometheus.wait_for('ai_exporter_http_auth_failures_total{job="secure",'
                            'reason="bad_password"} > 0')
        result = prometheus.wait_for('system_cpu_time_seconds_total{job="secure"}')
        assert result
    finally:
        if prometheus is not None:
            prometheus.stop()
        exporter.stop()
    assert "scrape-secret" not in exporter.log()
