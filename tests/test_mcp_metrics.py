"""MCP metrics: the ``mcp_call`` / ``mcp_session`` events, MCP spans and
``mcp.*`` metric points from the OTLP intake, onto the four histograms of the MCP semantic
conventions (``mcp.{client,server}.{operation,session}.duration``).

The real ``mcp`` SDK instrumented by opentelemetry-instrumentation-mcp is in
``tests/test_otlp_intake_clients.py`` (``test_mcp_openllmetry_tool_calls``); the pushed
events against the real exporter process are at the end of this file (e2e).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from prometheus_client.parser import text_string_to_metric_families

from exporter import catalog, native
from exporter.aggregator import Aggregator
from exporter.events import EventDecoder, Rejection
from exporter.exposition import render
from exporter.ingest import Ingestor
from exporter.otlp_intake.mapping import OPENLLMETRY_MCP_SCOPE, map_mcp
from tests.otlpcases import CLIENT, SECOND, SERVER, histogram_point, kv, traces
from tests.procs import Exporter, sample_value
from tests.test_otlp_intake import App

CLIENT_OPS = catalog.MCP_CLIENT_OPERATION_DURATION.name
SERVER_OPS = catalog.MCP_SERVER_OPERATION_DURATION.name
CLIENT_SESSIONS = catalog.MCP_CLIENT_SESSION_DURATION.name
SERVER_SESSIONS = catalog.MCP_SERVER_SESSION_DURATION.name
OP_LABELS = {"mcp_method_name", "gen_ai_tool_name", "gen_ai_prompt_name", "error_type",
             "mcp_protocol_version", "network_transport"}
SESSION_LABELS = {"error_type", "mcp_protocol_version", "network_transport"}
SPEC_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
SESSION = "191c4850af6c49e08843a3f6c80e5046"
EVENTS: list[dict[str, Any]] = [
    {"kind": "mcp_call", "method": "tools/call", "tool": "add", "duration_seconds": 0.03,
     "protocol_version": "2025-06-18", "transport": "pipe", "session_id": SESSION},
    {"kind": "mcp_call", "method": "tools/call", "tool": "add", "duration_seconds": 0.5,
     "protocol_version": "2025-06-18", "transport": "pipe", "session_id": SESSION,
     "trace_id": TRACE, "span_id": SPAN},
    {"kind": "mcp_call", "method": "tools/call", "tool": "fail", "duration_seconds": 0.02,
     "error_type": "tool_error", "protocol_version": "2025-06-18", "transport": "pipe"},
    {"kind": "mcp_call", "side": "server", "method": "prompts/get", "prompt": "review",
     "duration_seconds": 1.5, "transport": "tcp"},
    {"kind": "mcp_session", "duration_seconds": 42.0, "protocol_version": "2025-06-18",
     "transport": "pipe", "session_id": SESSION},
    {"kind": "mcp_session", "side": "server", "duration_seconds": 400.0,
     "error_type": "timeout", "transport": "tcp"},
]


def samples(text: str, name: str) -> list[tuple[str, dict[str, str], float]]:
    """(sample name, labels, value) of every sample of the family ``name``."""
    return [(s.name, dict(s.labels), float(s.value))
            for family in text_string_to_metric_families(text) if family.name == name
            for s in family.samples]


def only(text: str, name: str, labels: dict[str, str]) -> float:
    """The one sample ``name`` whose labels include ``labels`` (none or two fail)."""
    found = [v for family in text_string_to_metric_families(text) for s in family.samples
             if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
             for v in [float(s.value)]]
    assert len(found) == 1, f"{name}{labels}: {found}"
    return found[0]


def scrape(aggregator: Aggregator) -> str:
    return render(aggregator.families()).decode()


# --- the event kinds --------------------------------------------------------------------
@pytest.mark.parametrize("use_native", [False, True], ids=["python", "native"])
def test_mcp_events_feed_the_spec_histograms(use_native: bool) -> None:
    if use_native and not native.available():
        pytest.skip("the native extension is not built")
    aggregator = Aggregator()
    ingestor = Ingestor(aggregator, native=use_native)
    body = "\n".join(json.dumps(e) for e in EVENTS).encode()
    assert ingestor.ingest_lines("push", body, 1 << 20)[2] == []
    assert ingestor.ingest_array("push", json.dumps(EVENTS).encode())[1] == []
    text = scrape(aggregator)
    add = {"mcp_method_name": "tools/call", "gen_ai_tool_name": "add", "error_type": "",
           "gen_ai_prompt_name": "", "mcp_protocol_version": "2025-06-18",
           "network_transport": "pipe"}
    assert only(text, CLIENT_OPS + "_count", add) == 4
    assert only(text, CLIENT_OPS + "_sum", add) == pytest.approx(1.06)
    assert only(text, CLIENT_OPS + "_bucket", {**add, "le": "0.05"}) == 2
    assert only(text, CLIENT_OPS + "_count", {"gen_ai_tool_name": "fail",
                                              "error_type": "tool_error"}) == 2
    assert only(text, SERVER_OPS + "_count", {"mcp_method_name": "prompts/get",
                                              "gen_ai_prompt_name": "review",
                                              "network_transport": "tcp"}) == 2
    assert only(text, CLIENT_SESSIONS + "_count", {"error_type": ""}) == 2
    assert only(text, SERVER_SESSIONS + "_bucket", {"error_type": "timeout",
                                                    "le": "300.0"}) == 0
    assert only(text, SERVER_SESSIONS + "_bucket", {"error_type": "timeout",
                                                    "le": "+Inf"}) == 2
    for name, labels in ((CLIENT_OPS, OP_LABELS), (SERVER_OPS, OP_LABELS),
                         (CLIENT_SESSIONS, SESSION_LABELS), (SERVER_SESSIONS, SESSION_LABELS)):
        found = samples(text, name)
        assert found, name
        for sample_name, sample_labels, _ in found:
            assert set(sample_labels) - {"le"} == labels, (sample_name, sample_labels)
            assert SESSION not in sample_labels.values()  # never a label
        les = sorted({float(lab["le"]) for n, lab, _ in found if n.endswith("_bucket")})
        assert tuple(les[:-1]) == SPEC_BUCKETS and les[-1] == float("inf")
    assert ingestor.accepted[("push", "mcp_call")] == 8
    assert ingestor.accepted[("push", "mcp_session")] == 4


@pytest.mark.parametrize(("event", "reason"), [
    ({"kind": "mcp_call", "method": "ping", "duration_seconds": 0.1, "side": "proxy"},
     "invalid_value"),
    ({"kind": "mcp_call", "duration_seconds": 0.1}, "missing_field"),
    ({"kind": "mcp_call", "method": "ping"}, "missing_field"),
    ({"kind": "mcp_call", "method": "", "duration_seconds": 0.1}, "invalid_value"),
    ({"kind": "mcp_call", "method": "ping", "duration_seconds": -1}, "invalid_value"),
    ({"kind": "mcp_call", "method": "ping", "duration_seconds": 0.1, "trace_id": "XYZ"},
     "invalid_value"),
    ({"kind": "mcp_session", "duration_seconds": 1, "span_id": TRACE}, "invalid_value"),
    ({"kind": "mcp_session", "duration_seconds": 1, "resource_uri": "file:///x"},
     "unknown_field"),
    ({"kind": "mcp_session", "duration_seconds": "1"}, "wrong_type"),
])
def test_bad_mcp_events_are_rejected_with_their_reason(event: dict[str, Any],
                                                       reason: str) -> None:
    result = EventDecoder().decode_one(json.dumps(event).encode())
    assert isinstance(result, Rejection) and result.reason == reason, result


def test_an_mcp_event_with_a_trace_id_offers_an_exemplar(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    aggregator = Aggregator(clock=lambda: 1000.0)
    offered: list[tuple[Any, ...]] = []
    for name in (CLIENT_OPS, CLIENT_SESSIONS):
        store = aggregator.stores[name]
        monkeypatch.setattr(store, "offer_exemplar",
                            lambda *args, _n=name: offered.append((_n, *args)))
    decoder = EventDecoder()
    events = [decoder.decode_one(json.dumps(e).encode()) for e in EVENTS[:2]]
    events.append(decoder.decode_one(json.dumps(
        {"kind": "mcp_session", "duration_seconds": 3.0, "trace_id": TRACE,
         "span_id": SPAN}).encode()))
    aggregator.ingest([e for e in events if not isinstance(e, Rejection)])
    key = ("tools/call", "add", "", "", "2025-06-18", "pipe")
    assert offered == [(CLIENT_OPS, key, 0.5, TRACE, SPAN, 1000.0),
                       (CLIENT_SESSIONS, ("", "", ""), 3.0, TRACE, SPAN, 1000.0)]


# --- MCP spans ----------------------------------------------------------------------------
def mcp(attrs: dict[str, Any], name: str = "x", kind: int = 1, code: int = 0,
        scope: str = "", seconds: float = 0.25) -> dict[str, Any] | None:
    return map_mcp(attrs, name, kind, code, start_ns=10 * SECOND,
                   end_ns=10 * SECOND + int(seconds * SECOND), scope=scope,
                   trace_id=TRACE, span_id=SPAN)


def test_semconv_mcp_spans_map_by_span_kind() -> None:
    attrs = {"mcp.method.name": "tools/call", "gen_ai.tool.name": "get-weather",
             "mcp.protocol.version": "2025-06-18", "network.transport": "tcp",
             "mcp.session.id": SESSION, "jsonrpc.request.id": "7",
             "gen_ai.operation.name": "execute_tool", "error.type": "tool_error"}
    assert mcp(attrs, "tools/call get-weather", CLIENT, code=2) == {
        "kind": "mcp_call", "side": "client", "method": "tools/call", "tool": "get-weather",
        "prompt": "", "duration_seconds": 0.25, "error_type": "tool_error",
        "protocol_version": "2025-06-18", "transport": "tcp", "session_id": SESSION,
        "trace_id": TRACE, "span_id": SPAN}
    server = mcp({"mcp.method.name": "prompts/get", "gen_ai.prompt.name": "review"},
                 "prompts/get review", SERVER, code=2)
    assert server is not None and server["side"] == "server"
    assert server["prompt"] == "review" and server["error_type"] == "_OTHER"
    internal = mcp({"mcp.method.name": "initialize"}, kind=1)
    assert internal is not None and internal["side"] == "client"


def test_openllmetry_mcp_spans_map_from_their_names() -> None:
    scope = OPENLLMETRY_MCP_SCOPE
    listed = mcp({}, "tools/list.mcp", scope=scope)
    assert listed is not None and listed["method"] == "tools/list" and listed["tool"] == ""
    tool = mcp({"traceloop.span.kind": "tool", "traceloop.entity.name": "fail",
                "error.type": "tool_error"}, "fail.tool", code=2, scope=scope)
    assert tool is not None
    assert (tool["method"], tool["tool"], tool["error_type"]) == ("tools/call", "fail",
                                                                  "tool_error")
    session = mcp({"traceloop.span.kind": "session"}, "mcp.client.session", scope=scope,
                  seconds=9.0)
    assert session == {"kind": "mcp_session", "side": "client", "duration_seconds": 9.0,
                       "error_type": "", "trace_id": TRACE, "span_id": SPAN}
    assert mcp({"mcp.request.id": "3"}, "ResponseStreamWriter", scope=scope) is None
    assert mcp({"traceloop.span.kind": "server"}, "mcp.server", scope=scope) is None
    # traceloop's @tool decorator outside MCP, and any other scope's ".mcp" name: no MCP
    assert mcp({"traceloop.span.kind": "tool"}, "search.tool", scope="traceloop.sdk") is None
    assert mcp({}, "tools/list.mcp", scope="tests") is None


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    served = App(tmp_path, sources={"otlp": {"genai_signal_by_service": {
        "metrics-svc": "metrics"}}})
    yield served
    served.runtime.stop()


OPENLLMETRY_SPANS: list[dict[str, Any]] = [
    {"attrs": {}, "name": "initialize.mcp", "kind": 1},
    {"attrs": {}, "name": "tools/list.mcp", "kind": 1},
    {"attrs": {"traceloop.span.kind": "tool", "traceloop.entity.name": "add"},
     "name": "add.tool", "kind": 1},
    {"attrs": {"traceloop.span.kind": "tool", "traceloop.entity.name": "add"},
     "name": "add.tool", "kind": 1, "seconds": 0.04},
    {"attrs": {"traceloop.span.kind": "tool", "traceloop.entity.name": "fail",
               "error.type": "tool_error"}, "name": "fail.tool", "kind": 1, "error": True},
    {"attrs": {"mcp.request.id": "0"}, "name": "ResponseStreamWriter", "kind": 1},
]


def test_openllmetry_mcp_spans_are_mcp_calls_and_tool_calls(app: App) -> None:
    body = traces(OPENLLMETRY_SPANS, service="mcp-client",
                  scope=OPENLLMETRY_MCP_SCOPE).SerializeToString()
    for _ in range(2):  # a retried export counts once
        assert app.post("/v1/traces", body).status_code == 200
    text = app.metrics()
    assert only(text, CLIENT_OPS + "_count", {"mcp_method_name": "initialize"}) == 1
    assert only(text, CLIENT_OPS + "_count", {"mcp_method_name": "tools/list"}) == 1
    assert only(text, CLIENT_OPS + "_count", {"mcp_method_name": "tools/call",
                                              "gen_ai_tool_name": "add",
                                              "error_type": ""}) == 2
    assert only(text, CLIENT_OPS + "_bucket", {"gen_ai_tool_name": "add",
                                               "le": "0.05"}) == 1
    assert only(text, CLIENT_OPS + "_count", {"gen_ai_tool_name": "fail",
                                              "error_type": "tool_error"}) == 1
    # the tool calls as before: one per tools/call span
    assert only(text, "ai_tool_calls_total", {"gen_ai_tool_name": "add"}) == 2
    assert only(text, "ai_tool_calls_total", {"gen_ai_tool_name": "fail",
                                              "outcome": "error"}) == 1
    assert samples(text, SERVER_OPS) == []
    # the span's ids are the exemplar of its bucket (served in OpenMetrics)
    om = app.client.get("/metrics", headers={
        "Accept": "application/openmetrics-text; version=1.0.0"}).get_data(as_text=True)
    fail = [line for line in om.splitlines() if line.startswith(CLIENT_OPS + "_bucket{")
            and 'gen_ai_tool_name="fail"' in line and "# {" in line]
    assert len(fail) == 1 and 'span_id="0000000000000005"' in fail[0], fail
    # one count per span, whatever it maps to (the transport's span is ignored each time)
    assert app.items("traces", "mapped") == 5 and app.items("traces", "ignored") == 2
    assert app.items("traces", "duplicate") == 5


def test_semconv_client_and_server_spans(app: App) -> None:
    common = {"mcp.protocol.version": "2025-06-18", "network.transport": "pipe",
              "mcp.session.id": SESSION}
    spans = [
        {"attrs": {"mcp.method.name": "tools/call", "gen_ai.tool.name": "fetch", **common},
         "name": "tools/call fetch", "kind": CLIENT},
        {"attrs": {"mcp.method.name": "tools/call", "gen_ai.tool.name": "fetch", **common},
         "name": "tools/call fetch", "kind": SERVER, "seconds": 0.2},
        {"attrs": {"mcp.method.name": "resources/read",
                   "mcp.resource.uri": "file:///secret/a.txt", "error.type": "-32602",
                   **common}, "name": "resources/read", "kind": SERVER, "error": True},
    ]
    app.post("/v1/traces", traces(spans, service="agent-svc").SerializeToString())
    text = app.metrics()
    base = {"mcp_protocol_version": "2025-06-18", "network_transport": "pipe"}
    assert only(text, CLIENT_OPS + "_count", {**base, "gen_ai_tool_name": "fetch"}) == 1
    assert only(text, SERVER_OPS + "_count", {**base, "gen_ai_tool_name": "fetch"}) == 1
    assert only(text, SERVER_OPS + "_count", {"mcp_method_name": "resources/read",
                                              "error_type": "-32602"}) == 1
    assert SESSION not in text and "secret" not in text
    # the client's tools/call is a tool call; the server's span of it is not a second one
    assert only(text, "ai_tool_calls_total", {"gen_ai_tool_name": "fetch"}) == 1
    assert app.items("traces", "mapped") == 3


def mcp_metrics(values: list[float], service: str = "metrics-svc", end: int = 60,
                bounds: tuple[float, ...] = catalog.MCP_BUCKETS
                ) -> ExportMetricsServiceRequest:
    """A cumulative mcp.client.operation.duration point per session of one tools/call."""
    request = ExportMetricsServiceRequest()
    rm = request.resource_metrics.add()
    rm.resource.attributes.append(kv("service.name", service))
    sm = rm.scope_metrics.add()
    sm.scope.name = "tests"
    for name in ("mcp.client.operation.duration", "mcp.server.session.duration"):
        metric = sm.metrics.add()
        metric.name = name
        metric.unit = "s"
        metric.histogram.aggregation_temporality = 2
        attrs = ({"mcp.method.name": "tools/call", "gen_ai.tool.name": "add",
                  "mcp.session.id": SESSION, "network.transport": "tcp"}
                 if name.endswith("operation.duration") else {"network.transport": "tcp"})
        metric.histogram.data_points.append(histogram_point(values, bounds, attrs, 50, end))
    return request


def test_mcp_metric_points_merge_where_metrics_count(app: App) -> None:
    # metrics-svc counts metrics: its MCP spans are not mcp calls (its tools/call is still
    # the tool call it always was), its mcp.* points are
    span = {"attrs": {"mcp.method.name": "tools/call", "gen_ai.tool.name": "add"},
            "name": "tools/call add", "kind": CLIENT}
    app.post("/v1/traces", traces([span], service="metrics-svc").SerializeToString())
    first = mcp_metrics([0.03, 0.3]).SerializeToString()
    app.post("/v1/metrics", first)
    app.post("/v1/metrics", first)  # retried
    app.post("/v1/metrics", mcp_metrics([0.03, 0.3, 7.0], end=70).SerializeToString())
    text = app.metrics()
    labels = {"mcp_method_name": "tools/call", "gen_ai_tool_name": "add",
              "network_transport": "tcp", "error_type": ""}
    assert only(text, CLIENT_OPS + "_count", labels) == 3
    assert only(text, CLIENT_OPS + "_bucket", {**labels, "le": "0.05"}) == 1
    assert only(text, CLIENT_OPS + "_sum", labels) == pytest.approx(7.33)
    assert only(text, SERVER_SESSIONS + "_count", {"network_transport": "tcp"}) == 3
    assert only(text, "ai_tool_calls_total", {"gen_ai_tool_name": "add"}) == 1
    assert SESSION not in text
    assert app.items("metrics", "mapped") == 4 and app.items("metrics", "duplicate") == 2
    # other bounds cannot merge; where spans count (the default), the points are ignored
    answer = app.post("/v1/metrics", mcp_metrics([0.1], end=80, bounds=(0.1, 1.0))
                      .SerializeToString())
    partial = ExportMetricsServiceResponse.FromString(answer.data).partial_success
    assert partial.rejected_data_points == 2 and "MCP advisory bounds" in partial.error_message
    app.post("/v1/metrics", mcp_metrics([0.1], service="agent-svc").SerializeToString())
    assert app.items("metrics", "ignored") == 2
    assert only(app.metrics(), CLIENT_OPS + "_count", labels) == 3


# --- end to end: pushed events against the real exporter ---------------------------------
@pytest.mark.e2e
def test_pushed_mcp_events_reach_metrics(tmp_path: Path) -> None:
    exporter = Exporter(tmp_path, {})
    try:
        answer = exporter.post("/api/v1/events", json=EVENTS)
        assert answer.status_code in (200, 202), answer.text
        ndjson = "\n".join(json.dumps(e) for e in EVENTS)
        answer = exporter.post("/api/v1/events", data=ndjson,
                               headers={"Content-Type": "application/x-ndjson"})
        assert answer.status_code in (200, 202), answer.text
        text = exporter.metrics()
        assert only(text, CLIENT_OPS + "_count", {"gen_ai_tool_name": "add"}) == 4
        assert only(text, CLIENT_OPS + "_count", {"error_type": "tool_error"}) == 2
        assert only(text, SERVER_OPS + "_count", {"mcp_method_name": "prompts/get"}) == 2
        assert only(text, CLIENT_SESSIONS + "_count", {}) == 2
        assert only(text, SERVER_SESSIONS + "_count", {"error_type": "timeout"}) == 2
        assert sample_value(text, "ai_exporter_events_total",
                            {"kind": "mcp_call"}) == 8
        assert sample_value(text, "ai_exporter_events_total",
                            {"kind": "mcp_session"}) == 4
        assert SESSION not in text
    finally:
        exporter.stop()
