"""The metric catalog: every series the exporter can serve, named exactly once.

Collectors, the aggregator, the OTLP bridge, docs/metrics.md and the tests that check
dashboards and rules all read this table, so a name can never drift between them.
Names are OpenTelemetry names; the Prometheus name is derived by the OTel→Prometheus
compatibility rules (dots become underscores, the unit becomes a suffix, counters end
in ``_total``), never typed by hand.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from typing import TYPE_CHECKING, Any, cast

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.metrics_core import Metric


class Kind(StrEnum):
    """Instrument type, shared by the Prometheus and OTLP paths."""

    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


class Area(StrEnum):
    """Section of docs/metrics.md a metric is listed under."""

    HOST = "Host"
    GPU = "GPU"
    GENAI = "LLM calls (OpenTelemetry GenAI)"
    AI = "AI platform activity"
    COMPONENTS = "AI components and processes"
    EXPORTER = "Exporter self-monitoring"


# OTel unit → Prometheus suffix (OTel specification, "Prometheus and OpenMetrics
# Compatibility", unit conversion table); units in braces are annotations and dropped.
_UNIT_SUFFIX = {
    "s": "seconds",
    "ms": "milliseconds",
    "By": "bytes",
    "Hz": "hertz",
    "Cel": "celsius",
    "W": "watts",
    "J": "joules",
    "USD": "usd",
    "%": "percent",
}
_INVALID = re.compile(r"[^a-zA-Z0-9_:]")

# Bucket boundaries recommended by the GenAI semantic conventions.
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24,
                    20.48, 40.96, 81.92)
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
                 16777216, 67108864)
# gen_ai.client.operation.time_to_first_chunk: the spec's advisory buckets, the duration set
# (earlier releases used the server TTFT set 0.001 .. 10).
TTFT_BUCKETS = DURATION_BUCKETS
# gen_ai.client.operation.time_per_output_chunk: the duration set too, as the official
# instrumentation (opentelemetry-util-genai) records it, so that its points merge bucket
# for bucket with what spans and events feed.
TPOC_BUCKETS = DURATION_BUCKETS
TASK_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
                3600.0)
SCORE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
WAIT_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0,
                14400.0, 43200.0, 86400.0)
FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


if TYPE_CHECKING:
    class Family(Metric):
        """Static view of what ``MetricSpec.family()`` returns: a family with ``add_metric``.

        Counter, gauge and histogram families take different ``add_metric`` arguments;
        callers pass the ones that match the spec's kind.
        """

        def add_metric(self, labels: Sequence[str], value: Any, *args: Any,
                       **kwargs: Any) -> None: ...
else:
    Family = Metric


def prometheus_name(otel_name: str, unit: str, kind: Kind) -> str:
    """Translate an OTel metric name to its Prometheus name (compatibility rules)."""
    name = _INVALID.sub("_", otel_name)
    suffix = _UNIT_SUFFIX.get(unit, "")
    if unit == "1" and kind is Kind.GAUGE:
        suffix = "ratio"
    if suffix and not name.endswith("_" + suffix):
        name = f"{name}_{suffix}"
    if kind is Kind.COUNTER:
        name = f"{name}_total"
    return name


def prometheus_label(attribute: str) -> str:
    """Translate an OTel attribute key to a Prometheus label name."""
    return _INVALID.sub("_", attribute)


# The semantic-convention release (and its stability) the metrics follow, by OTel name
# prefix (docs/metrics.md says it per metric). GenAI and MCP moved out of the core
# repository after v1.41.0 (open-telemetry/semantic-conventions-genai); system, process and
# hw metrics are still Development in the core conventions.
SEMCONV_GENAI = "1.41.0 development"
SEMCONV_SYSTEM = "1.41.0 development"
SEMCONV_OWN = "exporter"
_SEMCONV_BY_PREFIX = (("gen_ai.", SEMCONV_GENAI), ("mcp.", SEMCONV_GENAI),
                      ("system.", SEMCONV_SYSTEM), ("process.", SEMCONV_SYSTEM),
                      ("hw.", SEMCONV_SYSTEM))


@dataclass(frozen=True)
class MetricSpec:
    """One metric: its OTel identity, from which everything else is derived."""

    otel_name: str
    unit: str
    kind: Kind
    description: str
    attributes: tuple[str, ...] = ()
    area: Area = Area.AI
    buckets: tuple[float, ...] = field(default=())
    # The semantic-convention version and stability followed ("" = by the name's prefix:
    # see ``convention``); "exporter" for the exporter's own metrics.
    semconv: str = ""

    @cached_property
    def convention(self) -> str:
        """The semantic-convention version and stability this metric follows, or
        ``exporter`` for a metric of the exporter's own (``ai.*``, ``ai_exporter.*``)."""
        if self.semconv:
            return self.semconv
        for prefix, version in _SEMCONV_BY_PREFIX:
            if self.otel_name.startswith(prefix):
                return version
        return SEMCONV_OWN

    @cached_property
    def name(self) -> str:
        """Prometheus metric name as served on /metrics (with ``_total`` for counters)."""
        return prometheus_name(self.otel_name, self.unit, self.kind)

    @cached_property
    def family_name(self) -> str:
        """Name handed to prometheus_client families (which add ``_total`` themselves)."""
        return self.name[: -len("_total")] if self.kind is Kind.COUNTER else self.name

    @cached_property
    def labels(self) -> tuple[str, ...]:
        """Prometheus label names, in attribute order."""
        return tuple(prometheus_label(a) for a in self.attributes)

    @cached_property
    def series_names(self) -> tuple[str, ...]:
        """Every sample name this metric produces in the text exposition."""
        if self.kind is Kind.HISTOGRAM:
            return (f"{self.name}_bucket", f"{self.name}_sum", f"{self.name}_count")
        if self.kind is Kind.COUNTER:
            return (self.name, f"{self.family_name}_created")
        return (self.name,)

    def family(self, extra_labels: Sequence[str] = ()) -> Family:
        """A fresh, empty prometheus_client family for one scrape."""
        labels = [*self.labels, *extra_labels]
        family: Metric
        if self.kind is Kind.COUNTER:
            family = CounterMetricFamily(self.family_name, self.description, labels=labels)
        elif self.kind is Kind.HISTOGRAM:
            family = HistogramMetricFamily(self.name, self.description, labels=labels)
        else:
            family = GaugeMetricFamily(self.name, self.description, labels=labels)
        return cast("Family", family)


def _m(otel_name: str, unit: str, kind: Kind, description: str, *attributes: str,
       area: Area = Area.AI, buckets: tuple[float, ...] = ()) -> MetricSpec:
    return MetricSpec(otel_name, unit, kind, description, tuple(attributes), area, buckets)


C, G, H = Kind.COUNTER, Kind.GAUGE, Kind.HISTOGRAM
HOST, GPU, GENAI, COMP, SELF = Area.HOST, Area.GPU, Area.GENAI, Area.COMPONENTS, Area.EXPORTER

# --- host (psutil) -------------------------------------------------------------------
SYSTEM_CPU_TIME = _m("system.cpu.time", "s", C, "Seconds each logical CPU spent in each mode.",
                     "cpu.logical_number", "cpu.mode", area=HOST)
SYSTEM_CPU_UTILIZATION = _m(
    "system.cpu.utilization", "1", G,
    "Share of CPU time spent in each mode over the last complete window of "
    "host.cpu_utilization_window_seconds (15 s by default; windows aligned to the clock), "
    "all CPUs together.",
    "cpu.mode", area=HOST)
SYSTEM_CPU_LOGICAL_COUNT = _m("system.cpu.logical_cpus", "{cpu}", G,
                              "Number of logical CPUs.", area=HOST)
SYSTEM_CPU_LOAD_1M = _m("system.cpu.load_average.1m", "{thread}", G,
                        "Load average over 1 minute.", area=HOST)
SYSTEM_CPU_LOAD_5M = _m("system.cpu.load_average.5m", "{thread}", G,
                        "Load average over 5 minutes.", area=HOST)
SYSTEM_CPU_LOAD_15M = _m("system.cpu.load_average.15m", "{thread}", G,
                         "Load average over 15 minutes.", area=HOST)
SYSTEM_MEMORY_USAGE = _m("system.memory.usage", "By", G, "Memory in each state.",
                         "system.memory.state", area=HOST)
SYSTEM_MEMORY_LIMIT = _m("system.memory.limit", "By", G, "Total physical memory.", area=HOST)
SYSTEM_LINUX_MEMORY_AVAILABLE = _m("system.linux.memory.available", "By", G,
                                   "Memory available for new work without swapping.",
                                   area=HOST)
SYSTEM_MEMORY_UTILIZATION = _m("system.memory.utilization", "1", G,
                               "Share of physical memory in each state.",
                               "system.memory.state", area=HOST)
SYSTEM_PAGING_USAGE = _m("system.paging.usage", "By", G, "Swap space in each state.",
                         "system.paging.state", area=HOST)
SYSTEM_PAGING_UTILIZATION = _m("system.paging.utilization", "1", G,
                               "Share of swap space in each state.", "system.paging.state",
                               area=HOST)
_FS = ("system.device", "system.filesystem.mountpoint", "system.filesystem.type")
SYSTEM_FILESYSTEM_USAGE = _m("system.filesystem.usage", "By", G,
                             "Filesystem space in each state (used, free, reserved).",
                             *_FS, "system.filesystem.state", area=HOST)
SYSTEM_FILESYSTEM_LIMIT = _m("system.filesystem.limit", "By", G, "Filesystem size.", *_FS,
                             area=HOST)
SYSTEM_FILESYSTEM_UTILIZATION = _m("system.filesystem.utilization", "1", G,
                                   "Share of filesystem space used (of space usable by users).",
                                   *_FS, area=HOST)
SYSTEM_FILESYSTEM_INODES_USAGE = _m("system.filesystem.inodes.usage", "{inode}", G,
                                    "Filesystem inodes in each state (used, free).", *_FS,
                                    "system.filesystem.state", area=HOST)
SYSTEM_DISK_IO = _m("system.disk.io", "By", C, "Bytes read from and written to each disk.",
                    "system.device", "disk.io.direction", area=HOST)
SYSTEM_DISK_OPERATIONS = _m("system.disk.operations", "{operation}", C,
                            "Read and write operations completed per disk.",
                            "system.device", "disk.io.direction", area=HOST)
SYSTEM_DISK_OPERATION_TIME = _m("system.disk.operation_time", "s", C,
                                "Time spent on reads and writes per disk.",
                                "system.device", "disk.io.direction", area=HOST)
SYSTEM_DISK_IO_TIME = _m("system.disk.io_time", "s", C, "Time each disk was busy.",
                         "system.device", area=HOST)
_NET = ("network.interface.name", "network.io.direction")
SYSTEM_NETWORK_IO = _m("system.network.io", "By", C, "Bytes sent and received per interface.",
                       *_NET, area=HOST)
SYSTEM_NETWORK_PACKETS = _m("system.network.packets", "{packet}", C,
                            "Packets sent and received per interface.", *_NET, area=HOST)
SYSTEM_NETWORK_ERRORS = _m("system.network.errors", "{error}", C,
                           "Transmit and receive errors per interface.", *_NET, area=HOST)
SYSTEM_NETWORK_DROPPED = _m("system.network.dropped", "{packet}", C,
                            "Packets dropped on transmit and receive per interface.", *_NET,
                            area=HOST)
SYSTEM_UPTIME = _m("system.uptime", "s", G, "Seconds since the host booted.", area=HOST)
SYSTEM_BOOT_TIME = _m("system.boot.timestamp", "s", G, "Boot time, seconds since the Unix epoch.",
                      area=HOST)
HW_BATTERY_CHARGE = _m("hw.battery.charge", "1", G, "Battery charge level.", "hw.id",
                       "hw.state", area=HOST)
HW_BATTERY_TIME_LEFT = _m("hw.battery.time_left", "s", G,
                          "Estimated battery time left while discharging.", "hw.id", area=HOST)

# --- GPU (NVML) ------------------------------------------------------------------------
_GPU = ("hw.id", "hw.model")
HW_GPU_UTILIZATION = _m("hw.gpu.utilization", "1", G, "GPU busy share.", *_GPU, area=GPU)
HW_GPU_MEMORY_USAGE = _m("hw.gpu.memory.usage", "By", G, "GPU memory in use.", *_GPU, area=GPU)
HW_GPU_MEMORY_LIMIT = _m("hw.gpu.memory.limit", "By", G, "GPU memory size.", *_GPU, area=GPU)
HW_GPU_MEMORY_UTILIZATION = _m("hw.gpu.memory.utilization", "1", G, "Share of GPU memory used.",
                               *_GPU, area=GPU)
HW_TEMPERATURE = _m("hw.temperature", "Cel", G, "GPU temperature.", *_GPU, area=GPU)
HW_POWER = _m("hw.power", "W", G, "GPU power draw.", *_GPU, area=GPU)
HW_ENERGY = _m("hw.energy", "J", C, "GPU energy consumed since the driver loaded.", *_GPU,
               area=GPU)
HW_GPU_CLOCK = _m("hw.gpu.clock", "Hz", G, "GPU clock frequency by clock domain.", *_GPU,
                  "hw.gpu.clock.type", area=GPU)
HW_ERRORS = _m("hw.errors", "{error}", C, "GPU ECC errors by type.", *_GPU, "error.type",
               area=GPU)

# --- LLM calls (OTel GenAI semantic conventions) --------------------------------------
_GENAI = ("gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model")
GEN_AI_CLIENT_OPERATION_DURATION = _m(
    "gen_ai.client.operation.duration", "s", H,
    "Duration of LLM operations; gen_ai_response_model is the model that answered (empty "
    "when not reported), bounded like every label by the series cap.", *_GENAI,
    "error.type", "gen_ai.response.model", area=GENAI, buckets=DURATION_BUCKETS)
GEN_AI_CLIENT_TOKEN_USAGE = _m(
    "gen_ai.client.token.usage", "{token}", H, "Tokens used per LLM operation by token type.",
    *_GENAI, "gen_ai.token.type", area=GENAI, buckets=TOKEN_BUCKETS)
GEN_AI_CLIENT_TIME_TO_FIRST_CHUNK = _m(
    "gen_ai.client.operation.time_to_first_chunk", "s", H,
    "Time to the first streamed chunk of an LLM response.", *_GENAI, area=GENAI,
    buckets=TTFT_BUCKETS)
GEN_AI_CLIENT_TIME_PER_OUTPUT_CHUNK = _m(
    "gen_ai.client.operation.time_per_output_chunk", "s", H,
    "Time per output chunk of a streamed LLM response after the first one: one "
    "observation per call, its mean chunk interval (`time_per_output_chunk_seconds`).",
    *_GENAI, area=GENAI, buckets=TPOC_BUCKETS)
GEN_AI_EXECUTE_TOOL_DURATION = _m(
    "gen_ai.execute_tool.duration", "s", H, "Duration of tool executions by agents.",
    "gen_ai.tool.name", "gen_ai.agent.name", "error.type", "gen_ai.tool.type", area=GENAI,
    buckets=DURATION_BUCKETS)
GEN_AI_INVOKE_AGENT_DURATION = _m(
    "gen_ai.invoke_agent.duration", "s", H,
    "End-to-end duration of agent invocations (finished tasks with operation "
    "invoke_agent).", "gen_ai.agent.name", "error.type", area=GENAI,
    buckets=DURATION_BUCKETS)
_LLM = ("gen_ai.provider.name", "gen_ai.request.model")
AI_LLM_REQUESTS = _m("ai.llm.requests", "{request}", C,
                     "LLM requests by outcome (success or error) and error type.", *_LLM,
                     "outcome", "error.type", area=GENAI)
AI_LLM_TOKENS = _m("ai.llm.tokens", "{token}", C,
                   "Tokens consumed by type (input, output, cache_read, cache_creation, "
                   "reasoning; the last three are subsets of the first two).", *_LLM,
                   "gen_ai.token.type", area=GENAI)
AI_LLM_COST = _m("ai.llm.cost", "USD", C,
                 "Spend on LLM calls in US dollars: the cost an event gives, else computed "
                 "from its tokens with the price table in force.", *_LLM, area=GENAI)
# --- computed cost, unpriced calls, cache savings, agent tokens --
AI_LLM_UNPRICED_REQUESTS = _m(
    "ai.llm.unpriced.requests", "{request}", C,
    "LLM calls without a cost whose model has no price in the table (counted at cost 0).",
    *_LLM, area=GENAI)
AI_LLM_UNPRICED_TOKENS = _m(
    "ai.llm.unpriced.tokens", "{token}", C,
    "Tokens of LLM calls without a cost whose model has no price, by token type.", *_LLM,
    "gen_ai.token.type", area=GENAI)
AI_LLM_CACHE_SAVINGS = _m(
    "ai.llm.cache_savings", "USD", C,
    "Dollars saved by cache-read input tokens: cache_read tokens x (input rate - cache "
    "read rate), for models with a price in the table.", *_LLM, area=GENAI)
AI_AGENT_TOKENS = _m(
    "ai.agent.tokens", "{token}", C,
    "Tokens consumed by agent (the llm_call `component`), model and type (input, output).",
    "gen_ai.agent.name", "gen_ai.request.model", "gen_ai.token.type", area=GENAI)
AI_TOOL_CALLS = _m("ai.tool.calls", "{call}", C, "Tool calls by outcome.", "gen_ai.tool.name",
                   "gen_ai.agent.name", "outcome", "gen_ai.tool.type", area=GENAI)
AI_PROVIDER_RATE_LIMIT_REMAINING = _m(
    "ai.provider.rate_limit.remaining", "{unit}", G,
    "Requests or tokens left in the provider's current rate-limit window.",
    "gen_ai.provider.name", "limit_type", area=GENAI)
AI_PROVIDER_RATE_LIMIT_CAPACITY = _m(
    "ai.provider.rate_limit.capacity", "{unit}", G,
    "Size of the provider's rate-limit window in requests or tokens.",
    "gen_ai.provider.name", "limit_type", area=GENAI)
AI_PROVIDER_RATE_LIMIT_RESET = _m(
    "ai.provider.rate_limit.reset_timestamp", "s", G,
    "When the provider's rate-limit window resets, seconds since the Unix epoch.",
    "gen_ai.provider.name", "limit_type", area=GENAI)
AI_BUDGET_LIMIT = _m("ai.budget.limit", "USD", G,
                     "Configured daily spend budget per scope (total or a provider).", "scope",
                     area=GENAI)
AI_BUDGET_SPEND = _m("ai.budget.spend", "USD", G,
                     "Spend since 00:00 UTC today per budget scope.", "scope", area=GENAI)
AI_LLM_LATENCY_THRESHOLD = _m("ai.llm.latency.threshold", "s", G,
                              "Configured p95 LLM latency objective, for alert rules.",
                              area=GENAI)

# --- MCP operations and sessions (OTel MCP semantic conventions) ----
# The spec's advisory ExplicitBucketBoundaries, the same for all four histograms.
MCP_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0,
               300.0)
# The bounded attributes of the spec (mcp.session.id, mcp.resource.uri, jsonrpc.request.id,
# server.address/port are not labels: unbounded or per instance).
_MCP_OP = ("mcp.method.name", "gen_ai.tool.name", "gen_ai.prompt.name", "error.type",
           "mcp.protocol.version", "network.transport")
_MCP_SESSION = ("error.type", "mcp.protocol.version", "network.transport")
MCP_CLIENT_OPERATION_DURATION = _m(
    "mcp.client.operation.duration", "s", H,
    "MCP requests and notifications as the sender saw them, from sending until the "
    "response or ack; error_type is tool_error for a tool result with isError.", *_MCP_OP,
    area=GENAI, buckets=MCP_BUCKETS)
MCP_SERVER_OPERATION_DURATION = _m(
    "mcp.server.operation.duration", "s", H,
    "MCP requests and notifications as the receiver saw them, from receiving until the "
    "result or ack is sent; error_type is tool_error for a tool result with isError.",
    *_MCP_OP, area=GENAI, buckets=MCP_BUCKETS)
MCP_CLIENT_SESSION_DURATION = _m(
    "mcp.client.session.duration", "s", H, "Duration of MCP sessions as the client saw them.",
    *_MCP_SESSION, area=GENAI, buckets=MCP_BUCKETS)
MCP_SERVER_SESSION_DURATION = _m(
    "mcp.server.session.duration", "s", H, "Duration of MCP sessions as the server saw them.",
    *_MCP_SESSION, area=GENAI, buckets=MCP_BUCKETS)

# --- AI platform activity --------------------------------------------------------------
AI_TASKS = _m("ai.tasks", "{task}", C,
              "Task status transitions (queued, started, succeeded, failed, retried, "
              "cancelled).", "component", "queue", "status")
AI_TASK_DURATION = _m("ai.task.duration", "s", H, "Duration of finished tasks by final status.",
                      "component", "queue", "status", buckets=TASK_BUCKETS)
AI_TASK_IN_PROGRESS = _m("ai.task.in_progress", "{task}", G, "Tasks started and not finished.",
                         "component", "queue")
AI_TASK_QUEUE_DEPTH = _m("ai.task.queue.depth", "{task}", G, "Tasks queued and not started.",
                         "component", "queue")
AI_TASK_QUEUE_OLDEST_AGE = _m("ai.task.queue.oldest_age", "s", G,
                              "Age of the oldest queued task.", "component", "queue")
AI_TASK_SUCCESS_OBJECTIVE = _m("ai.task.success.objective", "1", G,
                               "Configured task success-ratio objective (SLO), for alert rules.")
AI_QUALITY_GATE_DECISIONS = _m("ai.quality_gate.decisions", "{decision}", C,
                               "Quality-gate decisions (approved, rejected).", "gate",
                               "decision")
AI_QUALITY_GATE_SCORE = _m("ai.quality_gate.score", "1", H,
                           "Rubric scores given by quality gates, normalised to 0..1.", "gate",
                           buckets=SCORE_BUCKETS)
AI_RESOLUTION_ATTEMPTS = _m("ai.resolution.attempts", "{attempt}", C,
                            "Attempts made by resolution loops.", "component")
AI_RESOLUTION_INCIDENTS = _m("ai.resolution.incidents", "{incident}", C,
                             "Incidents raised inside resolution loops.", "component")
AI_RESOLUTION_CLOSURES = _m("ai.resolution.closures", "{loop}", C,
                            "Resolution loops closed, by outcome.", "component", "outcome")
AI_RESOLUTION_ACTIVE = _m("ai.resolution.active", "{loop}", G,
                          "Resolution loops open and not closed.", "component")
AI_RESOLUTION_OLDEST_ACTIVE_AGE = _m("ai.resolution.oldest_active_age", "s", G,
                                     "Age of the oldest open resolution loop.", "component")
AI_GUARDIAN_DECISIONS = _m("ai.guardian.decisions", "{decision}", C,
                           "Guardian (policy gate) verdicts: allow, deny, modify, warn, "
                           "escalate.", "guardian", "guardian_type", "verdict")
AI_GUARDIAN_DURATION = _m("ai.guardian.duration", "s", H, "Time guardians take to decide.",
                          "guardian", "guardian_type", buckets=FAST_BUCKETS)
AI_INTERVENTIONS = _m("ai.interventions", "{intervention}", C,
                      "Human-intervention lifecycle transitions (requested, acknowledged, "
                      "resolved, expired).", "type", "priority", "status")
AI_INTERVENTION_OPEN = _m("ai.intervention.open", "{intervention}", G,
                          "Interventions requested and not yet resolved or expired.", "type",
                          "priority")
AI_INTERVENTION_OLDEST_OPEN_AGE = _m("ai.intervention.oldest_open_age", "s", G,
                                     "Age of the oldest open intervention.", "type", "priority")
AI_INTERVENTION_TIME_TO_RESOLVE = _m("ai.intervention.time_to_resolve", "s", H,
                                     "Time from request to resolution of interventions.",
                                     "type", "priority", buckets=WAIT_BUCKETS)
AI_SECURITY_EVENTS = _m("ai.security.events", "{event}", C, "Security events seen.", "category",
                        "severity")
AI_SECURITY_UNRESOLVED = _m("ai.security.unresolved", "{event}", G,
                            "Security events not yet resolved.", "category", "severity")
AI_ERRORS = _m("ai.errors", "{error}", C, "Errors by component and category.", "component",
               "category")

# JSON snapshot files: gauges of the default mapping for the older layout (docs/files.md).
AI_PROVIDER_USAGE = _m("ai.provider.usage", "{unit}", G,
                       "Provider usage in the current rate-limit window, from the usage log.",
                       "gen_ai.provider.name", "limit_type")
AI_PROVIDER_USAGE_LIMIT = _m("ai.provider.usage.limit", "{unit}", G,
                             "Provider limit of the current rate-limit window, from the usage "
                             "log.", "gen_ai.provider.name", "limit_type")
AI_PROVIDER_SPEND_TODAY = _m("ai.provider.spend.today", "USD", G,
                             "Provider spend today as the usage log reports it.",
                             "gen_ai.provider.name")
AI_ANALYTICS_TASKS = _m("ai.analytics.tasks", "{task}", G,
                        "Task counts by state from a component's analytics snapshot.",
                        "component", "state")
AI_ANALYTICS_APPROVAL = _m("ai.analytics.approval", "1", G,
                           "Quality-gate approval ratio from a component's analytics snapshot.",
                           "component")
AI_ANALYTICS_QUALITY_SCORE = _m("ai.analytics.quality_score", "", G,
                                "Average rubric score (0..1) from a component's analytics "
                                "snapshot.", "component")
AI_ANALYTICS_RESOLUTION_ACTIVE = _m("ai.analytics.resolution.active", "{loop}", G,
                                    "Open resolution loops from a component's analytics "
                                    "snapshot.", "component")
AI_ANALYTICS_SPEND_TODAY = _m("ai.analytics.spend.today", "USD", G,
                              "Spend today from a component's analytics snapshot.",
                              "component")
AI_SNAPSHOT_GENERATED = _m("ai.snapshot.generated_timestamp", "s", G,
                           "Generation time a snapshot file states, Unix seconds.", "file")

# --- AI components and processes -------------------------------------------------------
AI_COMPONENT_UP = _m("ai.component.up", "", G, "1 when the component's health probe passes.",
                     "component", "kind", area=COMP)
AI_COMPONENT_PROBE_DURATION = _m("ai.component.probe.duration", "s", G,
                                 "Duration of the last health probe.", "component", "kind",
                                 area=COMP)
AI_COMPONENT_PROBE_HTTP_STATUS = _m("ai.component.probe.http_status", "", G,
                                    "HTTP status of the last health probe (0: no response).",
                                    "component", "kind", area=COMP)
AI_COMPONENT_PROBE_TLS_EXPIRY = _m("ai.component.probe.tls_cert_expiry_timestamp", "s", G,
                                   "Expiry of the component's TLS certificate, Unix seconds.",
                                   "component", "kind", area=COMP)
AI_COMPONENT_PROBE_FAILURES = _m("ai.component.probe.failures", "{probe}", C,
                                 "Failed health probes by reason (timeout, "
                                 "connection_refused, unexpected_status, ...).", "component",
                                 "kind", "reason", area=COMP)
AI_COMPONENT_HEARTBEAT_UP = _m(
    "ai.component.heartbeat.up", "", G,
    "1 when the component's last heartbeat said healthy and is fresher than the timeout.",
    "component", "kind", area=COMP)
AI_COMPONENT_HEARTBEAT_LAST_SEEN = _m("ai.component.heartbeat.last_seen_timestamp", "s", G,
                                      "Time of the component's last heartbeat, Unix seconds.",
                                      "component", "kind", area=COMP)
AI_COMPONENT_INFO = _m("ai.component_info", "", G,
                       "Component metadata from heartbeats; the value is always 1.",
                       "component", "kind", "version", "status", area=COMP)
AI_PROCESS_COUNT = _m("ai.process.running", "{process}", G,
                      "Processes matching the component's pattern (0: down).", "component",
                      area=COMP)
AI_PROCESS_CPU_TIME = _m("ai.process.cpu.time", "s", C,
                         "CPU time of the component's processes.", "component", "cpu.mode",
                         area=COMP)
AI_PROCESS_MEMORY_USAGE = _m("ai.process.memory.usage", "By", G,
                             "Resident memory of the component's processes.", "component",
                             area=COMP)
AI_PROCESS_THREADS = _m("ai.process.threads", "{thread}", G,
                        "Threads of the component's processes.", "component", area=COMP)
AI_PROCESS_OPEN_FDS = _m("ai.process.open_file_descriptors", "{fd}", G,
                         "Open file descriptors of the component's processes.", "component",
                         area=COMP)
AI_PROCESS_START_TIME = _m("ai.process.start_timestamp", "s", G,
                           "Start time of the component's oldest process, Unix seconds.",
                           "component", area=COMP)
AI_PROCESS_EXITS = _m("ai.process.exits", "{process}", C,
                      "Matching processes seen exiting (between or during scrapes).",
                      "component", area=COMP)

# --- exporter self-monitoring ----------------------------------------------------------
EXPORTER_BUILD_INFO = _m("ai_exporter.build_info", "", G,
                         "Build metadata; the value is always 1.", "version", "revision",
                         "python_version", area=SELF)
# --- the price table in force ----------------------------------------------------------
EXPORTER_PRICE_TABLE_INFO = _m(
    "ai_exporter.price_table_info", "", G,
    "The price table costs are computed from when an event gives none; the value is "
    "always 1. source: genai-prices (the bundled table, under any configured prices) or "
    "config (ai.pricing.enabled false: only overrides and the price file); version: the "
    "genai-prices release whose data is in force; overrides: how many ai.pricing.overrides "
    "entries; price_file: ai.pricing.price_file.",
    "source", "version", "overrides", "price_file", area=SELF)
EXPORTER_COLLECTOR_SUCCESS = _m("ai_exporter.collector.success", "", G,
                                "1 when the collector succeeded in this scrape.", "collector",
                                area=SELF)
EXPORTER_COLLECTOR_DURATION = _m("ai_exporter.collector.duration", "s", G,
                                 "Time the collector took in this scrape.", "collector",
                                 area=SELF)
EXPORTER_CONFIG_LAST_RELOAD_SUCCESS = _m(
    "ai_exporter.config.last_reload_successful", "", G,
    "1 when the last configuration reload succeeded.", area=SELF)
EXPORTER_CONFIG_LAST_RELOAD_TIME = _m(
    "ai_exporter.config.last_reload_success_timestamp", "s", G,
    "Time of the last successful configuration load, Unix seconds.", area=SELF)
EXPORTER_WEB_CONFIG_LAST_RELOAD_SUCCESS = _m(
    "ai_exporter.web_config.last_reload_successful", "", G,
    "1 when the last re-read of the web config file succeeded; 0 while a changed file is "
    "rejected and the last good one stays in force.", area=SELF)
EXPORTER_EVENTS = _m("ai_exporter.events", "{event}", C, "Events accepted by source and kind.",
                     "source", "kind", area=SELF)
EXPORTER_EVENTS_REJECTED = _m("ai_exporter.events.rejected", "{event}", C,
                              "Events rejected by source and reason.", "source", "reason",
                              area=SELF)
EXPORTER_EVENTS_LAST_TIMESTAMP = _m("ai_exporter.events.last_timestamp", "s", G,
                                    "Time the source last delivered an event, Unix seconds.",
                                    "source", area=SELF)
EXPORTER_SERIES_OVERFLOW = _m("ai_exporter.series.overflow", "{sample}", C,
                              "Observations folded into the 'other' label set because the "
                              "metric reached its series cap or all AI metrics reached "
                              "ai.max_total_samples.", "metric", area=SELF)
EXPORTER_SERIES = _m("ai_exporter.series", "{series}", G, "Label sets held per AI metric.",
                     "metric", area=SELF)
EXPORTER_SAMPLES = _m("ai_exporter.samples", "{sample}", G,
                      "Samples the event-fed AI label sets expose, counted against "
                      "ai.max_total_samples ('other' label sets not included).", area=SELF)
EXPORTER_SAMPLES_LIMIT = _m("ai_exporter.samples.limit", "{sample}", G,
                            "ai.max_total_samples: past it, new AI label sets fold into "
                            "'other'.", area=SELF)
EXPORTER_HTTP_AUTH_FAILURES = _m("ai_exporter.http.auth.failures", "{request}", C,
                                 "Requests refused for failed authentication.", "reason",
                                 area=SELF)
EXPORTER_TAIL_READ = _m("ai_exporter.tail.read", "By", C, "Bytes read per tailed file.", "path",
                        area=SELF)
EXPORTER_TAIL_LAG = _m("ai_exporter.tail.lag", "By", G, "Bytes written but not yet read.",
                       "path", area=SELF)
EXPORTER_TAIL_LINES = _m("ai_exporter.tail.lines", "{line}", C, "Lines read per tailed file.",
                         "path", area=SELF)
EXPORTER_TAIL_EVENTS = _m("ai_exporter.tail.events", "{event}", C,
                          "Events accepted per tailed file.", "path", area=SELF)
EXPORTER_TAIL_REJECTED = _m("ai_exporter.tail.rejected", "{line}", C,
                            "Lines rejected per tailed file, by reason.", "path", "reason",
                            area=SELF)
EXPORTER_TAIL_ROTATIONS = _m("ai_exporter.tail.rotations", "{rotation}", C,
                             "Rotations (new inode) seen per tailed file.", "path", area=SELF)
EXPORTER_TAIL_TRUNCATIONS = _m("ai_exporter.tail.truncations", "{truncation}", C,
                               "Truncations (size below offset) seen per tailed file.", "path",
                               area=SELF)
EXPORTER_TAIL_LAST_READ = _m("ai_exporter.tail.last_read_timestamp", "s", G,
                             "Time the file was last read, Unix seconds.", "path", area=SELF)
EXPORTER_SNAPSHOT_READS = _m("ai_exporter.snapshot.reads", "{read}", C,
                             "Reads of JSON snapshot files by outcome.", "path", "outcome",
                             area=SELF)
EXPORTER_TAIL_FILES = _m("ai_exporter.tail.files", "{file}", G,
                         "Files matched by the tail globs and being followed.", area=SELF)
EXPORTER_TAIL_ERRORS = _m("ai_exporter.tail.errors", "{error}", C,
                          "Problems with a tailed file (unreadable, not_a_file, read_error, "
                          "too_many_files).", "path", "reason", area=SELF)
EXPORTER_STORAGE_WRITABLE = _m("ai_exporter.storage.writable", "", G,
                               "1 when the state store (storage.path) and its write-ahead "
                               "log can be written; 0 while pushes are refused with 503.",
                               area=SELF)
EXPORTER_STORAGE_COMMITS = _m("ai_exporter.storage.commits", "{commit}", C,
                              "State commits (AI state plus every source's cursor, one "
                              "atomic replace), by outcome (success, failure).", "outcome",
                              area=SELF)
EXPORTER_STORAGE_LAST_COMMIT = _m(
    "ai_exporter.storage.last_commit_timestamp", "s", G,
    "Time of the last state commit written, Unix seconds.", area=SELF)
EXPORTER_STORAGE_WAL_BYTES = _m("ai_exporter.storage.wal.size", "By", G,
                                "Bytes in the write-ahead log's segments not yet covered "
                                "by a commit.", area=SELF)
EXPORTER_STORAGE_WAL_RECORDS = _m("ai_exporter.storage.wal.records", "{record}", C,
                                  "Push batches written to the write-ahead log.", area=SELF)
EXPORTER_STORAGE_WAL_SYNCS = _m("ai_exporter.storage.wal.syncs", "{sync}", C,
                                "fsync calls of the write-ahead log (one per group of "
                                "concurrent pushes).", area=SELF)
EXPORTER_SNAPSHOT_VALUES = _m("ai_exporter.snapshot.values", "{value}", G,
                              "Gauge values mapped from the snapshot file's last good read.",
                              "path", area=SELF)
EXPORTER_REDIS_UP = _m("ai_exporter.redis.up", "", G,
                       "1 when the Redis Streams source is connected.", area=SELF)
EXPORTER_REDIS_RECONNECTS = _m("ai_exporter.redis.reconnects", "{reconnect}", C,
                               "Reconnections to Redis.", area=SELF)
EXPORTER_REDIS_STREAM_LENGTH = _m("ai_exporter.redis.stream.length", "{entry}", G,
                                  "Entries in the Redis stream.", "stream", area=SELF)
EXPORTER_REDIS_GROUP_LAG = _m("ai_exporter.redis.consumer_group.lag", "{entry}", G,
                              "Entries not yet delivered to the consumer group.", "stream",
                              "group", area=SELF)
EXPORTER_REDIS_GROUP_PENDING = _m("ai_exporter.redis.consumer_group.pending", "{entry}", G,
                                  "Entries delivered but not acknowledged.", "stream", "group",
                                  area=SELF)
EXPORTER_REDIS_ENTRIES = _m("ai_exporter.redis.entries", "{entry}", C,
                            "Stream entries handled, by outcome (applied, rejected, "
                            "duplicate: redelivered after being counted, skipped).", "stream",
                            "outcome", area=SELF)
EXPORTER_OTLP_INTAKE_REQUESTS = _m(
    "ai_exporter.otlp.intake.requests", "{request}", C,
    "OTLP requests received, by signal (traces, metrics, logs), transport (http, grpc) and "
    "outcome (success, partial, rejected, too_large, unsupported, unavailable, "
    "unauthorized).", "signal", "transport", "outcome", area=SELF)
EXPORTER_OTLP_INTAKE_ITEMS = _m(
    "ai_exporter.otlp.intake.items", "{item}", C,
    "Spans, metric data points and log records received over OTLP, by signal and outcome "
    "(mapped, ignored: not GenAI/MCP or not the authoritative signal, duplicate: a retried "
    "export seen before, rejected).", "signal", "outcome", area=SELF)
EXPORTER_OTLP_INTAKE_DEDUP_IDS = _m(
    "ai_exporter.otlp.intake.dedup.ids", "{span}", G,
    "Span identities remembered to drop retried exports (bounded by "
    "sources.otlp.dedup_window).", area=SELF)
EXPORTER_OTLP_EXPORTS = _m("ai_exporter.otlp.exports", "{export}", C,
                           "OTLP exports by outcome (success, failure, retry).", "outcome",
                           area=SELF)
EXPORTER_OTLP_LAST_SUCCESS = _m("ai_exporter.otlp.last_success_timestamp", "s", G,
                                "Time of the last successful OTLP export, Unix seconds.",
                                area=SELF)
EXPORTER_OTLP_EXPORT_DURATION = _m("ai_exporter.otlp.export.duration", "s", G,
                                   "Duration of the last OTLP export.", area=SELF)


def all_metrics() -> Iterator[MetricSpec]:
    """Every metric in the catalog, in declaration order."""
    for value in globals().values():
        if isinstance(value, MetricSpec):
            yield value


def by_name() -> dict[str, MetricSpec]:
    """Prometheus metric name → spec."""
    return {m.name: m for m in all_metrics()}


# Series produced by prometheus_client's own collectors; listed so that tests which check
# dashboards and rules against the catalog know them too.
EXTERNAL_SERIES = frozenset({
    "process_cpu_seconds_total", "process_resident_memory_bytes",
    "process_virtual_memory_bytes", "process_start_time_seconds", "process_open_fds",
    "process_max_fds", "python_info", "python_gc_objects_collected_total",
    "python_gc_objects_uncollectable_total", "python_gc_collections_total",
    # Written by Prometheus itself for every target:
    "up", "scrape_duration_seconds", "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling", "scrape_series_added", "ALERTS",
    "ALERTS_FOR_STATE",
})


def known_series_names() -> frozenset[str]:
    """Every sample name /metrics can serve, plus Prometheus's synthetic series."""
    names: set[str] = set(EXTERNAL_SERIES)
    for m in all_metrics():
        names.add(m.name)
        names.update(m.series_names)
    return frozenset(names)

