"""Configuration: one typed object, validated once, with errors that name the field.

Precedence, lowest first: built-in defaults, the YAML file, ``AI_EXPORTER_*`` environment
variables, command-line flags. Every layer is merged into one plain dict and converted
into the typed ``Config`` in one step, so the same validation (unknown keys, types,
ranges) applies whichever layer a value came from.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import yaml

ENV_PREFIX = "AI_EXPORTER_"
# Build identity read by exporter.version (set by the image build), not configuration.
BUILD_VARIABLES = frozenset({"AI_EXPORTER_REVISION", "AI_EXPORTER_BUILD_DATE"})
DEFAULT_PORT = 10102
DEFAULT_LISTEN_ADDRESS = f":{DEFAULT_PORT}"

PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
Ratio = Annotated[float, msgspec.Meta(ge=0, le=1)]
Count = Annotated[int, msgspec.Meta(ge=1)]


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
    leeway_seconds: Annotated[float, msgspec.Meta(ge=0, le=300)] = 30.0


class LimitsConfig(_Section):
    """Request limits; 0 turns a limit off."""

    max_concurrent_requests: Annotated[int, msgspec.Meta(ge=0)] = 0
    push_rate_per_second: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    push_burst: Count = 20
    tls_handshake_timeout_seconds: PositiveFloat = 5.0


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


class WebConfig(_Section):
    listen_address: str = DEFAULT_LISTEN_ADDRESS
    telemetry_path: str = "/metrics"
    cors_origin: str = ""
    max_request_bytes: Count = 16 * 1024 * 1024
    # The request line and headers together (cheroot reads them before any route,
    # authentication included): 32 KiB, between nginx's 4 x 8 KiB and Node's 16 KiB.
    max_header_bytes: Annotated[int, msgspec.Meta(ge=1024, le=1024 * 1024)] = 32 * 1024
    threads: Count = 8
    config_file: str = ""
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


class CollectorsConfig(_Section):
    timeout_seconds: PositiveFloat = 5.0
    enabled: dict[str, bool] = msgspec.field(default_factory=dict)


class BudgetConfig(_Section):
    usd_per_day: Annotated[float, msgspec.Meta(ge=0)]
    scope: str = "total"


class AIConfig(_Section):
    """How AI activity events become series."""

    max_series_per_metric: Count = 10_000
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


class SourcesConfig(_Section):
    push: PushConfig = msgspec.field(default_factory=PushConfig)
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


class Config(_Section):
    web: WebConfig = msgspec.field(default_factory=WebConfig)
    log_level: str = "info"
    health: HealthConfig = msgspec.field(default_factory=HealthConfig)
    host: HostConfig = msgspec.field(default_factory=HostConfig)
    collectors: CollectorsConfig = msgspec.field(default_factory=CollectorsConfig)
    ai: AIConfig = msgspec.field(default_factory=AIConfig)
    sources: SourcesConfig = msgspec.field(default_factory=SourcesConfig)
    demo: DemoConfig = msgspec.field(default_factory=DemoConfig)
    components: ComponentsConfig = msgspec.field(default_factory=ComponentsConfig)
    otlp: OtlpConfig = msgspec.field(default_factory=OtlpConfig)

    def listen_host_port(self) -> tuple[str, int]:
        return parse_listen_address(self.web.listen_address)


_LEVELS = {"debug", "info", "warning", "error"}


def parse_listen_address(address: str) -> tuple[str, int]:
    """Split ``host:port`` (``:port`` means every interface) and check the port."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ConfigError(f"web.listen_address: expected host:port, got {address!r}")
    port = int(port_text)
    if not 0 < port < 65536:
        raise ConfigError(f"web.listen_address: port {port} is outside 1-65535")
    host = host.strip("[]") or "0.0.0.0"
    return host, port


def _deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def set_dotted(target: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``a.b.c`` in a nested dict, creating sections on the way."""
    *parents, leaf = dotted.split(".")
    node = target
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def read_file(path: str) -> dict[str, Any]:
    """Read a YAML config file into a dict; errors name the file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"config.file: cannot read {path}: {reason}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        # One line: PyYAML's own message spans several lines with a source excerpt.
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(f"config.file: {path} is not valid YAML: {problem}{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config.file: {path} must hold a mapping at the top level")
    return data


def from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """``AI_EXPORTER_WEB__LISTEN_ADDRESS=:9000`` → ``{"web": {"listen_address": ":9000"}}``.

    Double underscores separate sections; values are parsed as YAML scalars so that
    numbers and booleans keep their types.
    """
    layer: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX) or key in BUILD_VARIABLES:
            continue
        dotted = key[len(ENV_PREFIX):].lower().replace("__", ".")
        if not re.fullmatch(r"[a-z0-9_]+(\.[a-z0-9_]+)*", dotted):
            raise ConfigError(f"{key}: not a configuration variable")
        try:
            value = yaml.safe_load(raw) if raw else ""
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


def build(*layers: Mapping[str, Any]) -> Config:
    """Merge layers (later wins) and validate into a Config."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged = _deep_merge(merged, layer)
    try:
        config = msgspec.convert(merged, Config)
    except msgspec.ValidationError as exc:
        field, detail = validation_problem(exc)
        raise ConfigError(f"{field}: {detail}") from None
    parse_listen_address(config.web.listen_address)
    for name in ("filesystem_exclude_mountpoints", "network_exclude_interfaces",
                 "disk_exclude_devices"):
        try:
            re.compile(getattr(config.host, name))
        except re.error as exc:
            raise ConfigError(f"host.{name}: invalid regular expression: {exc}") from None
    if config.log_level not in _LEVELS:
        raise ConfigError(f"log_level: expected one of {sorted(_LEVELS)}, got "
                          f"{config.log_level!r}")
    for name, value in config.ai.extra_labels.items():
        if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", name):
            raise ConfigError(f"ai.extra_labels.{name}: not a valid label name")
        if not value:
            raise ConfigError(f"ai.extra_labels.{name}: empty value")
    return config


def load(path: str | None, flags: Mapping[str, Any] | None = None,
         environ: Mapping[str, str] | None = None) -> Config:
    """Load the whole configuration: defaults, file, environment, then flags."""
    env = os.environ if environ is None else environ
    file_layer = read_file(path) if path else {}
    config = build(file_layer, from_environment(env), flags or {})
    if path:
        config.web.config_file = path
    return config
