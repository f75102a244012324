"""Configuration: one typed object, validated once, with errors that name the field.

Precedence, lowest first: built-in defaults, the YAML file, ``AI_EXPORTER_*`` environment
variables, command-line flags. Every layer is merged into one plain dict and converted
into the typed ``Config`` in one step, so the same validation (unknown keys, types,
ranges) applies whichever layer a value came from.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import stat
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, cast

import msgspec
import msgspec.inspect
import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from exporter import catalog
from exporter.duration import parse_milliseconds, parse_seconds

ENV_PREFIX = "AI_EXPORTER_"
# Build identity read by exporter.version (set by the image build), not configuration.
BUILD_VARIABLES = frozenset({"AI_EXPORTER_REVISION", "AI_EXPORTER_BUILD_DATE"})
DEFAULT_PORT = 10102
DEFAULT_LISTEN_ADDRESS = f":{DEFAULT_PORT}"

PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
Ratio = Annotated[float, msgspec.Meta(ge=0, le=1)]
Count = Annotated[int, msgspec.Meta(ge=1)]

# The deepest valid configuration is about seven levels (sources.snapshot.files[].metrics[]
# .labels); 32 leaves room for anchors and odd layouts while keeping PyYAML's recursive
# composer, and everything that walks the result, far from Python's recursion limit.
MAX_YAML_DEPTH = 32
# A configuration file is a few KiB; reading is bounded so that a path such as /dev/zero
# is refused instead of filling memory.
MAX_CONFIG_BYTES = 16 * 1024 * 1024
# Any duration (``*_seconds``) beyond a year is a mistake, and past about 292 years
# (threading.TIMEOUT_MAX) waits raise OverflowError on the thread that uses it.
MAX_SECONDS = 365 * 86400
# Label names ai.extra_labels may not use besides those of the AI metrics themselves:
# set by Prometheus on every scraped series (job, instance), by histograms and summaries
# (le, quantile), or by the exporter in demo mode (demo).
RESERVED_LABELS = frozenset({"job", "instance", "le", "quantile", "demo"})
# Paths the exporter serves itself (exporter/web/routes_*.py); web.telemetry_path on one of
# them would never be reached, or hide the route. tests/test_config.py checks the list.
SERVED_ROUTES = frozenset({"/", "/livez", "/readyz", "/healthz", "/probe", "/-/reload",
                           "/api/status/version", "/api/status/system",
                           "/api/metrics/system", "/api/status/ai", "/api/metrics/ai",
                           "/api/v1/schema", "/api/v1/events", "/v1/traces", "/v1/metrics",
                           "/v1/logs", "/api/v1/openapi.json", "/api/v1/openapi.yaml"})
# Every ``*_file`` setting names a file the exporter reads whole (or appends to): it must be
# a regular file, since reading a directory fails and a device or FIFO never ends or
# blocks. These OTLP settings name files too, without the suffix.
_OTLP_FILES = frozenset({"certificate", "client_certificate", "client_key"})


class ConfigError(Exception):
    """A configuration that cannot be used; the message names the offending field."""


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


Role = Literal["viewer", "operator", "admin"]


class JwtConfig(_Section):
    """Bearer JWTs: HS256 with a shared secret file, or RS256 with a PEM public key file."""

    hs256_secret_file: str = ""
    rs256_public_key_file: str = ""
    audience: str = ""
    issuer: str = ""
    role_claim: str = "role"
    # A claim (dotted path) holding the token's scope: an object with the keys of a
    # web.security.scopes entry. Empty: JWTs are scoped only by web.security.scopes.
    scope_claim: str = ""
    leeway_seconds: Annotated[float, msgspec.Meta(ge=0, le=300)] = 30.0


class LimitsConfig(_Section):
    """Request limits; 0 turns a limit off."""

    max_concurrent_requests: Annotated[int, msgspec.Meta(ge=0)] = 0
    push_rate_per_second: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    push_burst: Count = 20
    tls_handshake_timeout_seconds: PositiveFloat = 5.0


class ScopeConfig(_Section):
    """What one credential may report for (docs/security.md, "Scoped credentials"): its
    events must name one of ``components`` (filled in when there is one and the event
    names none), be of ``kinds``, and carry the ``labels`` field values."""

    components: list[str] = msgspec.field(default_factory=list)
    service_names: list[str] = msgspec.field(default_factory=list)
    kinds: list[str] = msgspec.field(default_factory=list)
    labels: dict[str, str] = msgspec.field(default_factory=dict)


class SecurityConfig(_Section):
    """TLS (from the exporter-toolkit web config file), credentials, roles and limits."""

    web_config_file: str = ""
    tokens_file: str = ""
    jwt: JwtConfig = msgspec.field(default_factory=JwtConfig)
    basic_auth_roles: dict[str, Role] = msgspec.field(default_factory=dict)
    basic_auth_default_role: Role = "viewer"
    client_cert_role: Role | Literal[""] = ""
    anonymous_role: Role | Literal[""] | None = None
    open_routes: list[str] = msgspec.field(
        default_factory=lambda: ["/livez", "/readyz", "/healthz"])
    limits: LimitsConfig = msgspec.field(default_factory=LimitsConfig)
    scopes: dict[str, ScopeConfig] = msgspec.field(default_factory=dict)


# Who may write (push, OTLP intake, /-/reload) without a credential: loopback only, as
# the OpenTelemetry Collector's receivers bind to localhost by default.
LOOPBACK_NETWORKS = ("127.0.0.0/8", "::1/128")


class WebConfig(_Section):
    listen_address: str = DEFAULT_LISTEN_ADDRESS
    telemetry_path: str = "/metrics"
    cors_origin: str = ""
    max_request_bytes: Count = 16 * 1024 * 1024
    # The request line and headers together (cheroot reads them before any route,
    # authentication included): 32 KiB, between nginx's 4 x 8 KiB and Node's 16 KiB.
    max_header_bytes: Annotated[int, msgspec.Meta(ge=1024, le=1024 * 1024)] = 32 * 1024
    # cheroot's worker threads. Past 256 each idle thread still costs a stack and GIL
    # hand-offs for no gain (requests are short; scrapes are few), and a typo such as
    # 80000 exhausts the process's thread limit at start-up.
    threads: Annotated[int, msgspec.Meta(ge=1, le=256)] = 8
    # Slow clients (exporter.web.preread): the request head must arrive within
    # header_read_timeout_seconds of the accept (or of its first byte on a kept-alive
    # connection), the body within body_read_timeout_seconds of the head; past either,
    # 408 and the connection is closed. Past max_connections_per_address open from one
    # client address a new one is answered 429 and closed (0: no cap).
    header_read_timeout_seconds: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 10.0
    body_read_timeout_seconds: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 60.0
    max_connections_per_address: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 256
    config_file: str = ""
    # Client networks that may call write routes without a credential (CIDR).
    write_allowed_networks: list[str] = msgspec.field(
        default_factory=lambda: list(LOOPBACK_NETWORKS))
    # POST /-/reload, off unless asked for (Prometheus' --web.enable-lifecycle); SIGHUP
    # always reloads.
    enable_lifecycle: bool = False
    security: SecurityConfig = msgspec.field(default_factory=SecurityConfig)


class HealthConfig(_Section):
    """Thresholds for /healthz: the host is unhealthy past these utilizations."""

    max_memory_utilization: Ratio = 0.95
    max_disk_utilization: Ratio = 0.95
    disk_paths: list[str] = msgspec.field(default_factory=lambda: ["/"])


class HostConfig(_Section):
    filesystem_exclude_types: list[str] = msgspec.field(default_factory=lambda: [
        "autofs", "binfmt_misc", "bpf", "cgroup", "cgroup2", "configfs", "debugfs",
        "devpts", "devtmpfs", "fusectl", "hugetlbfs", "iso9660", "mqueue", "nsfs",
        "overlay", "proc", "procfs", "pstore", "rpc_pipefs", "securityfs", "selinuxfs",
        "squashfs", "sysfs", "tracefs", "tmpfs", "ramfs", "nfsd", "fuse.lxcfs",
        "fuse.gvfsd-fuse", "fuse.portal", "efivarfs", "shm"])
    filesystem_exclude_mountpoints: str = r"^/(dev|proc|run|sys|var/lib/docker/.+|snap/.+)($|/)"
    network_exclude_interfaces: str = r"^$"
    disk_exclude_devices: str = r"^(ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p)\d+$"
    procfs_path: str = "/proc"
    # system_cpu_utilization_ratio: the change in CPU time over the last complete window
    # of this length, windows aligned to the clock (exporter.collectors.cpu).
    cpu_utilization_window_seconds: Annotated[float, msgspec.Meta(ge=1, le=3600)] = 15.0


class CollectorsConfig(_Section):
    timeout_seconds: PositiveFloat = 5.0
    enabled: dict[str, bool] = msgspec.field(default_factory=dict)


class BudgetConfig(_Section):
    usd_per_day: Annotated[float, msgspec.Meta(ge=0)]
    scope: str = "total"


# --- ai.pricing, the prices costs are computed from ------------------
UsdPerMillion = Annotated[float, msgspec.Meta(ge=0)]


class PriceOverrideConfig(_Section):
    """One model's prices in US dollars per million tokens, as genai-prices and the
    providers' price pages write them. ``provider`` is a ``gen_ai.provider.name`` value
    (the event's ``provider``); empty: the model at any provider. An unset cache price is
    the input price, an unset reasoning price the output price."""

    model: Annotated[str, msgspec.Meta(min_length=1)]
    input: UsdPerMillion
    output: UsdPerMillion
    provider: str = ""
    cache_read: UsdPerMillion | None = None
    cache_write: UsdPerMillion | None = None
    reasoning: UsdPerMillion | None = None

    def __post_init__(self) -> None:
        # A price file is not walked by _check_numbers: refuse .inf / .nan here too.
        for name in ("input", "output", "cache_read", "cache_write", "reasoning"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name}: must be a finite number, got {value}")


def check_price_entries(entries: Sequence[PriceOverrideConfig], where: str) -> None:
    """Refuse one (provider, model) listed twice in one list: which price won would
    depend on the order of the entries."""
    seen: dict[tuple[str, str], int] = {}
    for i, entry in enumerate(entries):
        key = (entry.provider.lower(), entry.model.lower())
        if key in seen:
            at = f" at provider {entry.provider!r}" if entry.provider else ""
            raise ConfigError(f"{where}{i}: model {entry.model!r}{at} is already listed "
                              f"as entry {seen[key]}")
        seen[key] = i


class PricingConfig(_Section):
    """Cost from tokens when an event gives none (exporter/pricing.py): the bundled
    genai-prices table (``enabled``), under a ``price_file`` and these ``overrides``."""

    enabled: bool = True
    price_file: str = ""
    overrides: list[PriceOverrideConfig] = msgspec.field(default_factory=list)


class AIConfig(_Section):
    """How AI activity events become series."""

    max_series_per_metric: Count = 10_000
    # Samples (histogram buckets, _sum and _count included) all AI metrics together may
    # expose; past it new label sets fold into "other". Sized in docs/events.md.
    max_total_samples: Count = 50_000
    max_tracked_ids: Count = 100_000
    max_event_bytes: Count = 1024 * 1024
    heartbeat_timeout_seconds: PositiveFloat = 120.0
    llm_latency_threshold_seconds: PositiveFloat = 10.0
    task_success_objective: Ratio = 0.99
    budgets: list[BudgetConfig] = msgspec.field(default_factory=list)
    extra_labels: dict[str, str] = msgspec.field(default_factory=dict)
    log_interval_seconds: PositiveFloat = 10.0
    # The native line path (exporter/_lines.c) for JSONL files, when it is built: the same
    # results, several times faster. false runs the Python path only.
    native_lines: bool = True
    pricing: PricingConfig = msgspec.field(default_factory=PricingConfig)


class PushConfig(_Section):
    enabled: bool = True
    tokens: list[str] = msgspec.field(default_factory=list)
    tokens_file: str = ""


def _check_regex(field: str, pattern: str) -> None:
    """Raise ValueError naming ``field`` when ``pattern`` is not a valid regex."""
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"{field}: invalid regular expression {pattern!r}: {exc}") from None


class RedisStreamsConfig(_Section):
    """Consume AI events from Redis Streams through a consumer group (docs/components.md)."""

    enabled: bool = False
    url: str = "redis://127.0.0.1:6379/0"
    password_file: str = ""
    streams: list[Annotated[str, msgspec.Meta(min_length=1)]] = msgspec.field(
        default_factory=list)
    group: Annotated[str, msgspec.Meta(min_length=1)] = "ai-metrics-exporter"
    consumer: str = ""
    start_id: str = "0"
    payload_field: str = "event"
    block_ms: Annotated[int, msgspec.Meta(ge=10, le=60_000)] = 1000
    batch_size: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 500
    reclaim_idle_ms: Annotated[int, msgspec.Meta(ge=0)] = 60_000
    state_file: str = ""
    state_max_ids: Count = 100_000
    backoff_initial_seconds: PositiveFloat = 0.5
    backoff_max_seconds: PositiveFloat = 30.0

    def __post_init__(self) -> None:
        if self.enabled and not self.streams:
            raise ValueError("streams: list at least one stream key when enabled")
        if not self.url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"url: expected redis://, rediss:// or unix://, got {self.url!r}")
        if self.start_id != "$" and not re.fullmatch(r"\d+(-\d+)?", self.start_id):
            raise ValueError(f"start_id: expected '0', '$' or a stream id, got "
                             f"{self.start_id!r}")


class TailConfig(_Section):
    """JSONL files tailed for AI events, exactly once across rotation and restarts
    (docs/files.md). Paths are globs relative to ``base_dir``."""

    enabled: bool = False
    base_dir: str = "."
    paths: list[Annotated[str, msgspec.Meta(min_length=1)]] = msgspec.field(
        default_factory=lambda: ["state/telemetry/*.jsonl", "state/analytics/*.jsonl"])
    state_dir: str = "state/ai-metrics-exporter"
    start_at: Literal["beginning", "end"] = "beginning"
    poll_interval_seconds: PositiveFloat = 0.25
    checkpoint_interval_seconds: PositiveFloat = 5.0
    rotate_wait_seconds: Annotated[float, msgspec.Meta(ge=0)] = 5.0
    catch_up_timeout_seconds: Annotated[float, msgspec.Meta(ge=0)] = 10.0
    max_line_bytes: Count = 1024 * 1024
    read_chunk_bytes: Annotated[int, msgspec.Meta(ge=4096)] = 1024 * 1024
    max_files: Count = 512


class SnapshotMetricConfig(_Section):
    """One value (or a wildcard family of values) of a JSON document mapped to a gauge."""

    name: Annotated[str, msgspec.Meta(min_length=1)]
    path: Annotated[str, msgspec.Meta(min_length=1)]
    unit: str = ""
    help: str = ""
    labels: dict[str, str] = msgspec.field(default_factory=dict)


class SnapshotFileConfig(_Section):
    path: Annotated[str, msgspec.Meta(min_length=1)]
    metrics: list[SnapshotMetricConfig] = msgspec.field(default_factory=list)


class SnapshotConfig(_Section):
    """JSON snapshot files re-read on change and mapped to gauges (docs/files.md).
    ``files`` unset means the documented default mapping of the older layout."""

    enabled: bool = False
    base_dir: str = "."
    interval_seconds: PositiveFloat = 5.0
    max_file_bytes: Count = 16 * 1024 * 1024
    files: list[SnapshotFileConfig] | None = None


class OtlpIntakeConfig(_Section):
    """OTLP intake (docs/otlp-intake.md): instrumented applications export traces, metrics
    and logs to the exporter itself."""

    enabled: bool = True  # POST /v1/traces, /v1/metrics, /v1/logs on web.listen_address
    grpc_listen_address: str = ""  # OTLP/gRPC on its own listener (the grpc extra); "": off
    # Which signal counts GenAI calls when an application sends both spans and the
    # gen_ai.client.* metrics for the same calls: "traces" (default) or "metrics";
    # per service.name in genai_signal_by_service.
    genai_signal: Literal["traces", "metrics"] = "traces"
    genai_signal_by_service: dict[str, Literal["traces", "metrics"]] = msgspec.field(
        default_factory=dict)
    # Span identities (trace id + span id) remembered, in the state store, so a retried
    # export counts once.
    dedup_window: Annotated[int, msgspec.Meta(ge=0, le=10_000_000)] = 100_000
    # Metric streams (cumulative) followed for differencing; past it the oldest is dropped.
    max_streams: Annotated[int, msgspec.Meta(ge=1, le=10_000_000)] = 20_000


class SourcesConfig(_Section):
    push: PushConfig = msgspec.field(default_factory=PushConfig)
    otlp: OtlpIntakeConfig = msgspec.field(default_factory=OtlpIntakeConfig)
    redis_streams: RedisStreamsConfig = msgspec.field(default_factory=RedisStreamsConfig)
    tail: TailConfig = msgspec.field(default_factory=TailConfig)
    snapshot: SnapshotConfig = msgspec.field(default_factory=SnapshotConfig)


ComponentKindName = Literal["agent", "mcp_server", "model_server", "vector_db", "gateway",
                            "other"]
ComponentName = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


class ProbeTlsConfig(_Section):
    ca_file: str = ""
    insecure_skip_verify: bool = False
    cert_file: str = ""
    key_file: str = ""
    server_name: str = ""

    def __post_init__(self) -> None:
        if self.key_file and not self.cert_file:
            raise ValueError("key_file: needs cert_file as well")


class ProbeConfig(_Section):
    """One AI component's HTTP health probe."""

    name: ComponentName
    url: str
    kind: ComponentKindName = "other"
    method: Literal["GET", "HEAD", "POST", "PUT", "OPTIONS"] = "GET"
    valid_status_codes: list[Annotated[int, msgspec.Meta(ge=100, le=599)]] = msgspec.field(
        default_factory=list)
    body_regex: str = ""
    body: str = ""
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    bearer_token_file: str = ""
    tls: ProbeTlsConfig = msgspec.field(default_factory=ProbeTlsConfig)
    timeout_seconds: PositiveFloat = 5.0
    follow_redirects: bool = True
    max_redirects: Annotated[int, msgspec.Meta(ge=0, le=50)] = 10

    def __post_init__(self) -> None:
        if not re.fullmatch(r"https?://[^/\s]+(/\S*)?", self.url):
            raise ValueError(f"url: expected an http:// or https:// URL, got {self.url!r}")
        if self.body_regex:
            _check_regex("body_regex", self.body_regex)
        for key in self.headers:
            if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", key):
                raise ValueError(f"headers.{key}: not a valid header name")


class ProcessMatchConfig(_Section):
    """Processes that make up one AI component, matched by name and/or command line."""

    name: ComponentName
    name_regex: str = ""
    cmdline_regex: str = ""

    def __post_init__(self) -> None:
        if not self.name_regex and not self.cmdline_regex:
            raise ValueError("name_regex: set name_regex, cmdline_regex or both")
        if self.name_regex:
            _check_regex("name_regex", self.name_regex)
        if self.cmdline_regex:
            _check_regex("cmdline_regex", self.cmdline_regex)


class ComponentsConfig(_Section):
    """Live AI components: HTTP health probes and process matching."""

    probes: list[ProbeConfig] = msgspec.field(default_factory=list)
    probe_concurrency: Annotated[int, msgspec.Meta(ge=1, le=256)] = 16
    processes: list[ProcessMatchConfig] = msgspec.field(default_factory=list)

    def __post_init__(self) -> None:
        for label, items in (("probes", self.probes), ("processes", self.processes)):
            seen: set[str] = set()
            for item in items:
                if item.name in seen:
                    raise ValueError(f"{label}: component {item.name!r} is listed twice")
                seen.add(item.name)


class DemoConfig(_Section):
    enabled: bool = False
    rate_per_second: PositiveFloat = 40.0
    episode: str = ""
    episode_after_seconds: Annotated[float, msgspec.Meta(ge=0)] = 60.0
    episode_duration_seconds: PositiveFloat = 120.0
    seed: int = 0


class OtlpConfig(_Section):
    """OTLP push. Empty fields fall back to the standard ``OTEL_*`` variables; the push
    is off unless an endpoint is set here or in ``OTEL_EXPORTER_OTLP_(METRICS_)ENDPOINT``."""

    enabled: bool = True
    endpoint: str = ""
    metrics_endpoint: str = ""
    protocol: str = ""
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    timeout_seconds: PositiveFloat | None = None
    compression: str = ""
    certificate: str = ""
    client_certificate: str = ""
    client_key: str = ""
    insecure: bool | None = None
    interval_seconds: PositiveFloat | None = None
    temporality: str = ""
    resource_attributes: dict[str, str] = msgspec.field(default_factory=dict)
    reuse_scrape: bool = True
    max_backoff_seconds: PositiveFloat = 300.0


class StorageConfig(_Section):
    """The state store (AI state, source cursors, push write-ahead log): docs/files.md."""

    path: str = "data"
    fsync: bool = True
    checkpoint_interval_seconds: PositiveFloat = 5.0

    def __post_init__(self) -> None:
        if not self.path.strip():
            raise ValueError("path: must name a directory")


LogFormat = Literal["logfmt", "json"]


class LogConfig(_Section):
    """Log lines as Prometheus and node_exporter write them (``--log.level``,
    ``--log.format``); the top-level ``log_level`` of earlier versions still sets ``level``."""

    level: str = "info"
    format: LogFormat = "logfmt"


class Config(_Section):
    web: WebConfig = msgspec.field(default_factory=WebConfig)
    log: LogConfig = msgspec.field(default_factory=LogConfig)
    health: HealthConfig = msgspec.field(default_factory=HealthConfig)
    host: HostConfig = msgspec.field(default_factory=HostConfig)
    collectors: CollectorsConfig = msgspec.field(default_factory=CollectorsConfig)
    ai: AIConfig = msgspec.field(default_factory=AIConfig)
    sources: SourcesConfig = msgspec.field(default_factory=SourcesConfig)
    demo: DemoConfig = msgspec.field(default_factory=DemoConfig)
    components: ComponentsConfig = msgspec.field(default_factory=ComponentsConfig)
    otlp: OtlpConfig = msgspec.field(default_factory=OtlpConfig)
    storage: StorageConfig = msgspec.field(default_factory=StorageConfig)

    def listen_host_port(self) -> tuple[str, int]:
        return parse_listen_address(self.web.listen_address)


_LEVELS = {"debug", "info", "warning", "error"}
# The Config types, for the walk that reads durations written as text.
_CONFIG_TYPE = cast(msgspec.inspect.StructType, msgspec.inspect.type_info(Config))


_HOST_LABEL = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


def _valid_host(host: str) -> bool:
    """An IPv4 address or a DNS name (RFC 1123, plus ``_`` as in Compose service names):
    what the socket layer can bind without a surprise, such as a space or a path character
    reaching getaddrinfo."""
    if re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return False
        return True
    return len(host) <= 253 and all(_HOST_LABEL.fullmatch(p) for p in host.split("."))


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: Sequence[str], where: str = "web.write_allowed_networks"
                   ) -> tuple[Network, ...]:
    """CIDR blocks (a bare address is its /32 or /128); ``ConfigError`` names the entry."""
    networks: list[Network] = []
    for i, value in enumerate(values):
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ConfigError(f"{where}.{i}: not a network in CIDR form (such as "
                              f"10.0.0.0/8 or fd00::/8): {value!r}") from None
    return tuple(networks)


def parse_listen_address(address: str, field: str = "web.listen_address") -> tuple[str, int]:
    """Split ``host:port``, ``[ipv6]:port`` or ``:port`` (every interface) and check both.

    Port 0 (a random port) is refused: Prometheus could not be told where to scrape.
    """
    match = re.fullmatch(r"(?:\[(?P<v6>[^\]]*)\]|(?P<host>[^:\[\]]*)):(?P<port>[0-9]{1,5})",
                         address)
    if match is None:
        raise ConfigError(f"{field}: expected HOST:PORT, [IPv6]:PORT or :PORT, "
                          f"got {address!r}")
    port = int(match.group("port"))
    if not 0 < port < 65536:
        raise ConfigError(f"{field}: port {port} is outside 1-65535")
    if match.group("v6") is not None:
        host = match.group("v6")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(f"{field}: {host!r} is not an IPv6 address"
                              ) from None
        return host, port
    host = match.group("host")
    if host and not _valid_host(host):
        raise ConfigError(f"{field}: {host!r} is not a host name or IP address")
    return host or "0.0.0.0", port


def _deep_merge(base: dict[str, Any], override: Mapping[str, Any], names: tuple[str, str],
                path: str = "") -> dict[str, Any]:
    """Merge ``override`` into ``base``; a section in one and a single value in the other is
    an error, since either way one layer's settings would vanish without a word."""
    merged = dict(base)
    for key, value in override.items():
        where = f"{path}.{key}" if path else str(key)
        old = merged.get(key)
        if isinstance(value, Mapping) and isinstance(old, Mapping):
            merged[key] = _deep_merge(dict(old), value, names, where)
            continue
        if isinstance(old, Mapping) and value is not None:
            raise ConfigError(f"{where}: {names[1]} sets a single value where {names[0]} "
                              "has a section; set its fields instead")
        if isinstance(value, Mapping) and old is not None:
            raise ConfigError(f"{where}: {names[1]} sets fields where {names[0]} has a "
                              "single value")
        merged[key] = value
    return merged


def set_dotted(target: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``a.b.c`` in a nested dict, creating sections on the way; a value where a
    section is (or the reverse) is refused rather than one overwriting the other."""
    *parents, leaf = dotted.split(".")
    node = target
    for i, part in enumerate(parents):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            where = ".".join(parents[:i + 1])
            raise ConfigError(f"{where}: set both to a value and as a section")
        node = child
    if isinstance(node.get(leaf), dict):
        raise ConfigError(f"{dotted}: set both to a value and as a section")
    node[leaf] = value


class _Loader(yaml.SafeLoader):
    """SafeLoader with a bound on nesting, checked while composing: PyYAML's composer
    recurses once per level, so ten thousand nested lists would end in RecursionError."""

    def __init__(self, text: str, where: str) -> None:
        super().__init__(text)
        self.where = where
        self.depth = 0

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        if self.depth >= MAX_YAML_DEPTH:
            line = self.get_mark().line + 1
            raise ConfigError(f"{self.where}: nested deeper than {MAX_YAML_DEPTH} levels "
                              f"(line {line})")
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _check_nodes(loader: _Loader, root: Node, prefix: str) -> None:
    """Refuse repeated keys in any mapping, and aliases that nest too deep or contain
    themselves, before the document is built (PyYAML keeps the last of repeated keys, so
    a second ``web:`` block would silently drop the first, security settings included).

    Heights are remembered per node: a shared anchor is walked once, so an alias bomb
    costs its size in the file, not its expanded size.
    """
    heights: dict[int, int] = {}
    ancestors: set[int] = set()
    merge_tag = "tag:yaml.org,2002:merge"

    def too_deep(node: Node) -> ConfigError:
        return ConfigError(f"{prefix or 'config.file'}: nested deeper than {MAX_YAML_DEPTH} "
                           f"levels through aliases (line {node.start_mark.line + 1})")

    def visit(node: Node, path: str, depth: int) -> int:
        known = heights.get(id(node))
        if known is not None:
            if depth + known > MAX_YAML_DEPTH:
                raise too_deep(node)
            return known
        if id(node) in ancestors:
            raise ConfigError(f"{path or 'config.file'}: an alias refers to a mapping or "
                              f"list that contains it (line {node.start_mark.line + 1})")
        if depth >= MAX_YAML_DEPTH:
            raise too_deep(node)
        height = 1
        ancestors.add(id(node))
        if isinstance(node, MappingNode):
            first: dict[Any, int] = {}
            for key_node, value_node in node.value:
                child = path
                if isinstance(key_node, ScalarNode) and key_node.tag != merge_tag:
                    key = loader.construct_object(key_node, deep=True)
                    child = f"{path}.{key}" if path else str(key)
                    line = key_node.start_mark.line + 1
                    try:
                        seen = first.get(key)
                        first.setdefault(key, line)
                    except TypeError:  # unhashable: PyYAML refuses it while building
                        seen = None
                    if seen is not None:
                        raise ConfigError(f"{child}: key given twice (lines {seen} and "
                                          f"{line}); YAML would keep only the last")
                height = max(height, 1 + visit(value_node, child, depth + 1))
        elif isinstance(node, SequenceNode):
            for i, item in enumerate(node.value):
                height = max(height, 1 + visit(item, f"{path}.{i}" if path else str(i),
                                               depth + 1))
        ancestors.discard(id(node))
        heights[id(node)] = height
        return height

    visit(root, prefix, len(prefix.split(".")) if prefix else 0)


def load_yaml(text: str, where: str, prefix: str = "") -> Any:
    """Parse one YAML document with the bounds above; ``where`` names the field errors are
    reported at (``config.file``), ``prefix`` the dotted path the document sits at."""
    loader = _Loader(text, where)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_nodes(loader, node, prefix)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def read_yaml_file(path: str, field: str) -> Any:
    """The document of a YAML (or JSON) file, size-bounded; errors name ``field`` and the
    file, on one line (PyYAML's own message spans several lines with a source excerpt)."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"{field}: cannot read {path}: {reason}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{field}: {path} is larger than "
                          f"{MAX_CONFIG_BYTES // (1024 * 1024)} MiB")
    try:
        return load_yaml(text, field)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(f"{field}: {path} is not valid YAML: {problem}{where}") from None


def read_file(path: str) -> dict[str, Any]:
    """Read a YAML config file into a dict; errors name the file."""
    data = read_yaml_file(path, "config.file")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config.file: {path} must hold a mapping at the top level")
    return data


def from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """``AI_EXPORTER_WEB__LISTEN_ADDRESS=:9000`` → ``{"web": {"listen_address": ":9000"}}``.

    Double underscores separate sections; values are parsed as YAML scalars so that
    numbers and booleans keep their types. Two variables for the same setting, or one for a
    section and one for a field inside it, are refused: which one won would depend on the
    order of the environment.
    """
    layer: dict[str, Any] = {}
    owners: dict[str, str] = {}
    for key in sorted(environ):
        if not key.startswith(ENV_PREFIX) or key in BUILD_VARIABLES:
            continue
        raw = environ[key]
        dotted = key[len(ENV_PREFIX):].lower().replace("__", ".")
        if not re.fullmatch(r"[a-z0-9_]+(\.[a-z0-9_]+)*", dotted):
            raise ConfigError(f"{key}: not a configuration variable")
        for other, other_key in owners.items():
            if other == dotted or other.startswith(f"{dotted}.") \
                    or dotted.startswith(f"{other}."):
                shorter = min(other, dotted, key=len)
                raise ConfigError(f"{shorter}: set by both {other_key} and {key}")
        owners[dotted] = key
        try:
            value = load_yaml(raw, dotted, dotted) if raw else ""
        except yaml.YAMLError:
            value = raw
        set_dotted(layer, dotted, value)
    return layer


def validation_problem(exc: msgspec.ValidationError, whole: str = "config"
                       ) -> tuple[str, str]:
    """Split msgspec's ``... - at `$.web.port``` into (``web.port``, the message alone).

    Shared with the web config file, whose errors name its fields the same way; ``whole``
    names the error when msgspec points at the document itself.
    """
    message = str(exc)
    match = re.search(r"at `\$\.?([^`]*)`", message)
    unknown = re.search(r"unknown field `([^`]+)`", message)
    path = match.group(1) if match else ""
    path = re.sub(r"\[(\d+)\]", r".\1", path)
    if unknown:
        path = f"{path}.{unknown.group(1)}" if path else unknown.group(1)
    return path or whole, re.sub(r"\s*- at `[^`]*`", "", message)


def _duration_kind(name: str, kind: msgspec.inspect.Type) -> str:
    """``"s"`` for a float field named ``*_seconds``, ``"ms"`` for an int one named ``*_ms``,
    ``""`` for any other field: the fields that take a Prometheus duration."""
    members = kind.types if isinstance(kind, msgspec.inspect.UnionType) else (kind,)
    if name.endswith("_seconds") and any(isinstance(m, msgspec.inspect.FloatType)
                                         for m in members):
        return "s"
    if name.endswith("_ms") and any(isinstance(m, msgspec.inspect.IntType) for m in members):
        return "ms"
    return ""


def _structs_in(kind: msgspec.inspect.Type) -> tuple[tuple[bool, msgspec.inspect.StructType],
                                                      ...]:
    """The struct types a field holds, each with whether it comes as a list of them."""
    members = kind.types if isinstance(kind, msgspec.inspect.UnionType) else (kind,)
    found: list[tuple[bool, msgspec.inspect.StructType]] = []
    for member in members:
        if isinstance(member, msgspec.inspect.StructType):
            found.append((False, member))
        elif isinstance(member, msgspec.inspect.ListType) \
                and isinstance(member.item_type, msgspec.inspect.StructType):
            found.append((True, member.item_type))
    return tuple(found)


def _read_durations(data: Mapping[str, Any], struct: msgspec.inspect.StructType,
                    path: str = "") -> dict[str, Any]:
    """A copy of ``data`` with every duration written as text (``5s``, ``1h30m``, ``"2"``
    from a flag) turned into the number its field holds: seconds for ``*_seconds``,
    milliseconds for ``*_ms``.

    Directed by the Config types rather than by key names alone, so that a label or header
    that happens to be called ``*_seconds`` is left as written. A value already a number
    passes through, and types and ranges stay msgspec's to check.
    """
    out = dict(data)
    for field in struct.fields:
        value = out.get(field.encode_name)
        if value is None:
            continue
        where = f"{path}.{field.encode_name}" if path else field.encode_name
        unit = _duration_kind(field.encode_name, field.type)
        if unit and isinstance(value, str):
            try:
                out[field.encode_name] = (parse_milliseconds(value) if unit == "ms"
                                          else parse_seconds(value))
            except ValueError as exc:
                raise ConfigError(f"{where}: {exc}") from None
            continue
        for many, inner in _structs_in(field.type):
            if many and isinstance(value, list):
                out[field.encode_name] = [
                    _read_durations(item, inner, f"{where}.{i}") if isinstance(item, Mapping)
                    else item for i, item in enumerate(value)]
            elif not many and isinstance(value, Mapping):
                out[field.encode_name] = _read_durations(value, inner, where)
    return out


def _log_level_alias(layer: Mapping[str, Any], name: str) -> tuple[dict[str, Any], str]:
    """Move the top-level ``log_level`` of earlier versions to ``log.level``; returns the
    layer and the spelling it used (``""`` when it sets no level), for errors to name."""
    out = dict(layer)
    section = out.get("log")
    nested = isinstance(section, Mapping) and "level" in section
    if "log_level" not in out:
        return out, "log.level" if nested else ""
    if nested:
        raise ConfigError(f"log_level: {name} sets both log_level and log.level; "
                          "log_level is the older spelling of log.level, keep one")
    if section is not None and not isinstance(section, Mapping):
        return out, ""  # msgspec names the wrong type of ``log``
    out["log"] = {**(section or {}), "level": out.pop("log_level")}
    return out, "log_level"


def _check_numbers(data: Any) -> None:
    """Refuse NaN and infinities anywhere (YAML ``.nan``, ``.inf``; ``--collector.timeout
    inf``) and durations past MAX_SECONDS: ``inf > 0`` satisfies every range in the
    structs, and then a wait or a deadline fails at run time.

    Done on the merged layers, before typing, so that one walk covers every float field
    there is or will be. Containers are walked once each (YAML aliases share them).
    """
    seen: set[int] = set()

    def visit(value: Any, path: str) -> None:
        if isinstance(value, Mapping | list):
            if id(value) in seen:
                return
            seen.add(id(value))
            items = value.items() if isinstance(value, Mapping) else enumerate(value)
            for key, item in items:
                visit(item, f"{path}.{key}" if path else str(key))
            return
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{path}: must be a finite number, got {value}")
        if isinstance(value, int | float) and not isinstance(value, bool) \
                and path.endswith("_seconds") and value > MAX_SECONDS:
            raise ConfigError(f"{path}: at most {MAX_SECONDS} (a year), got {value:g}")

    visit(data, "")


def _check_telemetry_path(path: str) -> None:
    """The path becomes a Flask rule: it must be an absolute path that a client can send
    as is (no query, fragment, escapes, ``<converter>``, dot segments or empty segments)
    and that no other route of the exporter already serves."""
    field = "web.telemetry_path"
    if not path.startswith("/"):
        raise ConfigError(f"{field}: must be an absolute path (start with a slash)")
    if not re.fullmatch(r"/[A-Za-z0-9._~!$&'()*+,;=:@/-]*", path):
        raise ConfigError(f"{field}: only letters, digits and -._~!$&'()*+,;=:@/ may appear "
                          f"in the path, got {path!r}")
    segments = path[1:].split("/")
    if any(s in (".", "..") for s in segments) or "" in segments[:-1]:
        raise ConfigError(f"{field}: empty, '.' or '..' segment in {path!r}")
    if path in SERVED_ROUTES:
        raise ConfigError(f"{field}: {path} is already served by the exporter")


def _check_extra_labels(labels: Mapping[str, str]) -> None:
    """Extra labels are appended to every AI series: a name a metric already has would
    give two labels of that name on one series (invalid exposition), and ``__`` names
    are reserved to Prometheus."""
    in_use: set[str] = set(RESERVED_LABELS)
    for spec in catalog.all_metrics():
        if spec.area in (catalog.Area.AI, catalog.Area.GENAI, catalog.Area.COMPONENTS):
            in_use.update(spec.labels)
    for name, value in labels.items():
        field = f"ai.extra_labels.{name}"
        if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", name):
            raise ConfigError(f"{field}: not a valid label name")
        if name.startswith("__"):
            raise ConfigError(f"{field}: names starting with '__' are reserved to Prometheus")
        if name in in_use:
            raise ConfigError(f"{field}: a label the exporter or Prometheus already sets on "
                              "these series")
        if not value:
            raise ConfigError(f"{field}: empty value")


def _check_files(section: msgspec.Struct, path: str) -> None:
    """Each ``*_file`` setting (and the OTLP certificate and key) that exists must be a
    regular file. A missing one is left to the code that reads it, which already says
    so, or, for a probe's token, reports it per probe while the file is being created."""
    for field in msgspec.structs.fields(section):
        value = getattr(section, field.name)
        where = f"{path}.{field.name}" if path else field.name
        if isinstance(value, msgspec.Struct):
            _check_files(value, where)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, msgspec.Struct):
                    _check_files(item, f"{where}.{i}")
        elif isinstance(value, str) and value and (
                field.name.endswith("_file") or (path == "otlp" and field.name in _OTLP_FILES)):
            try:
                mode = os.stat(value).st_mode
            except (OSError, ValueError):  # missing, unreadable, or a NUL in the path
                continue
            if not stat.S_ISREG(mode):
                kind = ("a directory" if stat.S_ISDIR(mode) else
                        "a FIFO" if stat.S_ISFIFO(mode) else
                        "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else
                        "not a regular file")
                raise ConfigError(f"{where}: {value} is {kind}; a regular file is needed")


def build(*layers: Mapping[str, Any],
          names: Sequence[str] = ()) -> Config:
    """Merge layers (later wins) and validate into a Config; ``names`` says what each
    layer is (``the file``, ``the environment``) for errors where two layers disagree."""
    merged: dict[str, Any] = {}
    level_key = "log.level"
    for i, layer in enumerate(layers):
        lower = " or ".join(names[:i]) if 0 < i <= len(names) else "an earlier layer"
        upper = names[i] if i < len(names) else "a later layer"
        normalized, spelling = _log_level_alias(layer, upper)
        level_key = spelling or level_key
        merged = _deep_merge(merged, normalized, (lower, upper))
    merged = _read_durations(merged, _CONFIG_TYPE)
    _check_numbers(merged)
    try:
        config = msgspec.convert(merged, Config)
    except msgspec.ValidationError as exc:
        field, detail = validation_problem(exc)
        raise ConfigError(f"{field}: {detail}") from None
    parse_listen_address(config.web.listen_address)
    parse_networks(config.web.write_allowed_networks)
    if config.sources.otlp.grpc_listen_address:
        parse_listen_address(config.sources.otlp.grpc_listen_address,
                             "sources.otlp.grpc_listen_address")
    _check_telemetry_path(config.web.telemetry_path)
    _check_files(config, "")
    for name in ("filesystem_exclude_mountpoints", "network_exclude_interfaces",
                 "disk_exclude_devices"):
        try:
            re.compile(getattr(config.host, name))
        except re.error as exc:
            raise ConfigError(f"host.{name}: invalid regular expression: {exc}") from None
    if config.log.level not in _LEVELS:
        raise ConfigError(f"{level_key}: expected one of {sorted(_LEVELS)}, got "
                          f"{config.log.level!r}")
    _check_extra_labels(config.ai.extra_labels)
    check_price_entries(config.ai.pricing.overrides, "ai.pricing.overrides.")
    return config


def load(path: str | None, flags: Mapping[str, Any] | None = None,
         environ: Mapping[str, str] | None = None) -> Config:
    """Load the whole configuration: defaults, file, environment, then flags."""
    env = os.environ if environ is None else environ
    file_layer = read_file(path) if path else {}
    config = build(file_layer, from_environment(env), flags or {},
                   names=("the file", "the environment", "a flag"))
    if path:
        config.web.config_file = path
    return config
