"""OTLP push settings: the ``otlp:`` config section merged with the standard ``OTEL_*`` variables.

A value set in the configuration (file, ``AI_EXPORTER_OTLP__*`` or flags) wins; an empty
field falls back to the standard variable, as the OpenTelemetry SDKs do for explicit
constructor arguments. Resolution is pure (the environment is passed in) so tests and
``check-config`` see exactly what a start would use, and every bad value is a
``ConfigError`` naming the field or the variable.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlparse

from exporter.config import Config, ConfigError
from exporter.version import build_info

PROTOCOLS = ("http/protobuf", "grpc")
COMPRESSIONS = ("none", "gzip", "deflate")
TEMPORALITIES = ("cumulative", "delta")
DEFAULT_INTERVAL = 60.0
DEFAULT_TIMEOUT = 10.0
SERVICE_NAME = "ai-metrics-exporter"


@dataclass(frozen=True)
class OtlpSettings:
    """Everything the pusher needs, resolved once at start-up."""

    protocol: str
    endpoint: str
    headers: dict[str, str]
    timeout: float
    compression: str
    certificate: str
    client_certificate: str
    client_key: str
    insecure: bool | None
    interval: float
    temporality: str
    resource: dict[str, str] = field(default_factory=dict)
    reuse_scrape: bool = True
    max_backoff: float = 300.0


def _env(environ: Mapping[str, str], *names: str) -> tuple[str, str]:
    """First non-empty variable among ``names``: (name, value), or ("", "")."""
    for name in names:
        value = environ.get(name, "").strip()
        if value:
            return name, value
    return "", ""


def _millis(environ: Mapping[str, str], *names: str) -> float | None:
    """A duration variable in milliseconds (the OTel specification's unit), as seconds."""
    name, raw = _env(environ, *names)
    if not name:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}: expected milliseconds, got {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{name}: must be > 0 milliseconds, got {raw!r}")
    return value / 1000.0


def parse_key_values(raw: str, what: str) -> dict[str, str]:
    """``k1=v1,k2=v2`` with percent-encoded values (W3C baggage style, as the OTel variables)."""
    out: dict[str, str] = {}
    for item in raw.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{what}: expected key=value pairs, got {item.strip()!r}")
        out[unquote(key.strip())] = unquote(value.strip())
    return out


def _listen_port(cfg: Config) -> int:
    return cfg.listen_host_port()[1]


def default_resource(cfg: Config) -> dict[str, str]:
    """Resource attributes the exporter sets itself; ``service.instance.id`` is host:port,
    the same identity Prometheus's ``instance`` label carries."""
    host = socket.gethostname()
    return {
        "service.name": SERVICE_NAME,
        "service.version": build_info().version,
        "service.instance.id": f"{host}:{_listen_port(cfg)}",
        "host.name": host,
    }


def endpoint_configured(cfg: Config, environ: Mapping[str, str] | None = None) -> bool:
    """True when the push is on: enabled and an endpoint set in config or environment."""
    env = os.environ if environ is None else environ
    if not cfg.otlp.enabled:
        return False
    return bool(cfg.otlp.endpoint or cfg.otlp.metrics_endpoint
                or _env(env, "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
                        "OTEL_EXPORTER_OTLP_ENDPOINT")[1])


def _choice(value: str, choices: tuple[str, ...], what: str) -> str:
    value = value.strip().lower()
    if value not in choices:
        raise ConfigError(f"{what}: expected one of {', '.join(choices)}, got {value!r}")
    return value


def _endpoint(cfg: Config, env: Mapping[str, str], protocol: str) -> str:
    """The full URL to send to: per-signal URLs are used as given; a base URL gets
    ``/v1/metrics`` appended for HTTP (OTel specification, endpoint URLs for OTLP/HTTP)."""
    o = cfg.otlp
    if o.metrics_endpoint:
        url, what = o.metrics_endpoint, "otlp.metrics_endpoint"
    elif o.endpoint:
        url, what = o.endpoint, "otlp.endpoint"
        if protocol == "http/protobuf":
            url = f"{url.rstrip('/')}/v1/metrics"
    else:
        name, url = _env(env, "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
        what = name
        if not name:
            what, url = _env(env, "OTEL_EXPORTER_OTLP_ENDPOINT")
            if protocol == "http/protobuf":
                url = f"{url.rstrip('/')}/v1/metrics"
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ConfigError(f"{what}: expected an http:// or https:// URL, got {url!r}")
    return url


def resolve(cfg: Config, environ: Mapping[str, str] | None = None) -> OtlpSettings | None:
    """The push settings, or None when the push is off (no endpoint anywhere)."""
    env = os.environ if environ is None else environ
    if not endpoint_configured(cfg, env):
        return None
    o = cfg.otlp
    name, raw = ("otlp.protocol", o.protocol) if o.protocol else _env(
        env, "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
    protocol = _choice(raw or "http/protobuf", PROTOCOLS, name or "otlp.protocol")
    endpoint = _endpoint(cfg, env, protocol)

    name, raw = _env(env, "OTEL_EXPORTER_OTLP_METRICS_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS")
    headers = parse_key_values(raw, name) if name else {}
    headers.update(o.headers)

    timeout = o.timeout_seconds or _millis(
        env, "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT") or DEFAULT_TIMEOUT
    interval = o.interval_seconds or _millis(env, "OTEL_METRIC_EXPORT_INTERVAL") or DEFAULT_INTERVAL

    name, raw = ("otlp.compression", o.compression) if o.compression else _env(
        env, "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "OTEL_EXPORTER_OTLP_COMPRESSION")
    compression = _choice(raw or "none", COMPRESSIONS, name or "otlp.compression")

    name, raw = ("otlp.temporality", o.temporality) if o.temporality else _env(
        env, "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE")
    raw = raw or "cumulative"
    # "lowmemory" means delta for counters and histograms: what "delta" does here.
    temporality = "delta" if raw.strip().lower() == "lowmemory" else _choice(
        raw, TEMPORALITIES, name or "otlp.temporality")

    certificate = o.certificate or _env(
        env, "OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE", "OTEL_EXPORTER_OTLP_CERTIFICATE")[1]
    client_certificate = o.client_certificate or _env(
        env, "OTEL_EXPORTER_OTLP_METRICS_CLIENT_CERTIFICATE",
        "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE")[1]
    client_key = o.client_key or _env(
        env, "OTEL_EXPORTER_OTLP_METRICS_CLIENT_KEY", "OTEL_EXPORTER_OTLP_CLIENT_KEY")[1]
    for what, path in (("certificate", certificate), ("client_certificate", client_certificate),
                       ("client_key", client_key)):
        if path and not os.path.isfile(path):
            raise ConfigError(f"otlp.{what}: no such file {path!r}")
    if bool(client_certificate) != bool(client_key):
        raise ConfigError("otlp.client_certificate: client_certificate and client_key go "
                          "together")
    insecure = o.insecure
    if insecure is None:
        name, raw = _env(env, "OTEL_EXPORTER_OTLP_METRICS_INSECURE", "OTEL_EXPORTER_OTLP_INSECURE")
        if name:
            insecure = raw.lower() == "true"

    # Resource: our defaults < OTEL_RESOURCE_ATTRIBUTES < OTEL_SERVICE_NAME < configuration.
    resource = default_resource(cfg)
    name, raw = _env(env, "OTEL_RESOURCE_ATTRIBUTES")
    if name:
        resource.update(parse_key_values(raw, name))
    name, raw = _env(env, "OTEL_SERVICE_NAME")
    if name:
        resource["service.name"] = raw
    resource.update(o.resource_attributes)
    return OtlpSettings(
        protocol=protocol, endpoint=endpoint, headers=headers, timeout=timeout,
        compression=compression, certificate=certificate,
        client_certificate=client_certificate, client_key=client_key, insecure=insecure,
        interval=interval, temporality=temporality, resource=resource,
        reuse_scrape=o.reuse_scrape, max_backoff=max(o.max_backoff_seconds, interval))
