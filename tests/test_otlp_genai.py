"""OTLP intake: cache and reasoning tokens, the response model,
a given cost, trace and span ids, the agent behind a call, tool types and agent
invocations from spans; the streaming histograms and the new token types from metric
points. In process, as tests/test_otlp_intake.py (whose ``App`` this uses)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from exporter import catalog
from exporter.events import LlmCall
from exporter.otlp_intake import spantree
from exporter.otlp_intake.mapping import map_span
from tests.otlpcases import chat_attrs, histogram_metrics, traces
from tests.procs import sample_value
from tests.test_otlp_intake import LLM, App

TRACE = 0x0AF7651916CD43DD8448EB211C80319C
TRACE_HEX = "0af7651916cd43dd8448eb211c80319c"


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    served = App(tmp_path)
    yield served
    served.runtime.stop()


def tokens(app: App, token_type: str, labels: dict[str, str] | None = None) -> float:
    return app.value("ai_llm_tokens_total", {**(labels or LLM), "gen_ai_token_type": token_type})


def events_of(request: ExportTraceServiceRequest, fast: bool) -> list[dict[str, Any]]:
    """What the intake makes of each span: the fast tuple's JSON decoded, or the mapping's
    event (with the ids and the enclosing agent, as the source passes them)."""
    tree = spantree.tree(request, request.SerializeToString(), fast=fast)
    agents = spantree.enclosing_agents(tree)
    out: list[dict[str, Any]] = []
    for resource, scopes in tree:
        for _, group in scopes:
            for span in group:
                if span[0] == spantree.FAST:
                    out.append({"fast": True, **msgspec.json.decode(span[4])})
                    continue
                _, name, kind, start, end, code, attrs, trace_id, span_id, _ = span
                fields = map_span(attrs, name, kind, code, start_ns=start, end_ns=end,
                                  service=resource.get("service.name", ""),
                                  trace_id=trace_id, span_id=span_id,
                                  agent=agents.get((trace_id, span_id), ""))
                if fields is not None:
                    out.append({"fast": False, **fields})
    return out


def as_call(event: dict[str, Any]) -> LlmCall:
    return msgspec.convert({k: v for k, v in event.items() if k != "fast"}, LlmCall)


# --- spans -> llm_call ------------------------------------------------------------------
CURRENT = chat_attrs(model="gpt-4o-mini", input_tokens=100, output_tokens=40, extra={
    "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
    "gen_ai.usage.cache_read.input_tokens": 60,
    "gen_ai.usage.cache_creation.input_tokens": 20,
    "gen_ai.usage.reasoning.output_tokens": 25})
# OpenLLMetry's older names (and llm.usage.*): the Python mapping's path
OPENLLMETRY = {"gen_ai.system": "openai", "llm.request.type": "chat",
               "gen_ai.request.model": "gpt-4o-mini", "gen_ai.usage.prompt_tokens": 100,
               "gen_ai.usage.completion_tokens": 40,
               "gen_ai.usage.cache_read_input_tokens": 60,
               "gen_ai.usage.cache_creation_input_tokens": 20,
               "llm.usage.reasoning_tokens": 25}


def test_cache_and_reasoning_tokens_from_current_and_older_names(app: App) -> None:
    request = traces([{"attrs": CURRENT, "span": 1}, {"attrs": OPENLLMETRY, "span": 2}],
                     trace=TRACE)
    fast, general = events_of(request, True)
    assert fast["fast"] and not general["fast"]  # both paths are exercised
    for event in (fast, general):
        assert (event["input_tokens"], event["cache_read_input_tokens"],
                event["cache_creation_input_tokens"], event["output_tokens"],
                event["reasoning_output_tokens"]) == (100, 60, 20, 40, 25)
    assert app.post("/v1/traces", request.SerializeToString()).status_code == 200
    assert tokens(app, "input") == 200 and tokens(app, "output") == 80
    assert tokens(app, "cache_read") == 120 and tokens(app, "cache_creation") == 40
    assert tokens(app, "reasoning") == 50


def test_subsets_reported_beside_their_totals_are_added_to_them(app: App) -> None:
    """Anthropic's API counts input_tokens without the cached ones; an instrumentation that
    passes them on as they are (none known here does) reports a subset larger than its
    total: the mapping adds it, on both paths alike."""
    raw = chat_attrs(model="claude-sonnet-4", provider="anthropic", input_tokens=5,
                     output_tokens=10, extra={"gen_ai.usage.cache_read.input_tokens": 300,
                                              "gen_ai.usage.cache_write.input_tokens": 50,
                                              "gen_ai.usage.reasoning.output_tokens": 30})
    request = traces([{"attrs": raw, "span": 1},
                      {"attrs": {**raw, "gen_ai.system": "anthropic"}, "span": 2}])
    fast, general = events_of(request, True)
    assert fast["fast"] and not general["fast"]
    for event in (fast, general):
        assert event["input_tokens"] == 355 and event["output_tokens"] == 40
        assert event["cache_creation_input_tokens"] == 50
    app.post("/v1/traces", request.SerializeToString())
    labels = {"gen_ai_provider_name": "anthropic", "gen_ai_request_model": "claude-sonnet-4"}
    assert tokens(app, "input", labels) == 710 and tokens(app, "cache_read", labels) == 600


def test_response_model_ids_and_a_given_cost(app: App) -> None:
    priced = chat_attrs(extra={"gen_ai.response.model": "gpt-4o-mini-2024-07-18",
                               "gen_ai.usage.cost": 0.25})
    request = traces([{"attrs": priced, "span": 0xB7AD6B7169203331}], trace=TRACE)
    (event,) = events_of(request, True)
    assert event["fast"]
    assert event["trace_id"] == TRACE_HEX and event["span_id"] == "b7ad6b7169203331"
    assert event["response_model"] == "gpt-4o-mini-2024-07-18" and event["cost_usd"] == 0.25
    (general,) = events_of(request, False)
    assert as_call(general) == as_call(event)  # the same call on the Python path
    # no ids where the span's are all zero
    (zero,) = events_of(traces([{"attrs": priced, "span": 0}], trace=0), True)
    assert "trace_id" not in zero and "span_id" not in zero
    app.post("/v1/traces", request.SerializeToString())
    text = app.metrics()
    assert sample_value(text, "gen_ai_client_operation_duration_seconds_count", {
        **LLM, "gen_ai_response_model": "gpt-4o-mini-2024-07-18"}) == 1
    assert sample_value(text, "ai_llm_cost_usd_total", LLM) == 0.25


# --- the agent behind a call; tools and agent invocations --------------------------------
def agent_trace() -> ExportTraceServiceRequest:
    """invoke_agent planner (1) > chain (2, no GenAI span) > chat (3) and execute_tool (4);
    invoke_agent researcher (5), nested in planner > chat (6); a chat naming its own agent
    (7) under planner; a chat outside any agent (8)."""
    return traces([
        {"attrs": {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "planner",
                   "gen_ai.provider.name": "openai"}, "span": 1, "seconds": 3.0,
         "name": "invoke_agent planner"},
        {"attrs": {"langchain.kind": "chain"}, "span": 2, "parent": 1, "name": "chain"},
        {"attrs": chat_attrs(input_tokens=7), "span": 3, "parent": 2},
        {"attrs": {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search",
                   "gen_ai.tool.type": "function"}, "span": 4, "parent": 2,
         "name": "execute_tool search"},
        {"attrs": {"gen_ai.operation.name": "invoke_agent",
                   "gen_ai.agent.name": "researcher"}, "span": 5, "parent": 1, "error": True,
         "seconds": 1.5},
        {"attrs": chat_attrs(input_tokens=11), "span": 6, "parent": 5},
        {"attrs": chat_attrs(input_tokens=13, extra={"gen_ai.agent.name": "critic"}),
         "span": 7, "parent": 1},
        {"attrs": chat_attrs(input_tokens=17), "span": 8},
    ], trace=TRACE)


def test_calls_inside_an_agent_span_carry_its_name(app: App) -> None:
    request = agent_trace()
    events = events_of(request, True)
    assert not any(e["fast"] for e in events)  # a body with an agent span: the general way
    components = {e["input_tokens"]: e["component"] for e in events if e["kind"] == "llm_call"}
    assert components == {7: "planner", 11: "researcher", 13: "critic", 17: "agent-svc"}
    (tool,) = (e for e in events if e["kind"] == "tool_call")
    assert tool["agent"] == "planner" and tool["tool_type"] == "function"
    assert tool["trace_id"] == TRACE_HEX and tool["span_id"] == f"{4:016x}"
    tasks = {e["component"]: e for e in events if e["kind"] == "task"}
    assert tasks["planner"]["operation"] == "invoke_agent"
    assert tasks["researcher"]["status"] == "failed"

    answer = app.post("/v1/traces", request.SerializeToString())
    assert not ExportTraceServiceResponse.FromString(answer.data).HasField("partial_success")
    text = app.metrics()
    for agent, count in (("planner", 7), ("researcher", 11), ("critic", 13),
                         ("agent-svc", 17)):
        assert sample_value(text, "ai_agent_tokens_total", {
            "gen_ai_agent_name": agent, "gen_ai_request_model": "gpt-4o-mini",
            "gen_ai_token_type": "input"}) == count, agent
    assert sample_value(text, "ai_tool_calls_total", {
        "gen_ai_tool_name": "search", "gen_ai_agent_name": "planner",
        "gen_ai_tool_type": "function", "outcome": "success"}) == 1
    assert sample_value(text, "gen_ai_invoke_agent_duration_seconds_count",
                        {"gen_ai_agent_name": "planner"}) == 1
    assert sample_value(text, "gen_ai_invoke_agent_duration_seconds_sum",
                        {"gen_ai_agent_name": "researcher"}) == 1.5


def test_openllmetry_agent_spans_are_agent_invocations() -> None:
    request = traces([{"attrs": {"traceloop.span.kind": "agent",
                                 "traceloop.entity.name": "joker"}, "name": "joker.agent"},
                      {"attrs": {"traceloop.span.kind": "workflow",
                                 "traceloop.entity.name": "flow"}, "name": "flow.workflow"}])
    agent, workflow = events_of(request, True)
    assert (agent["component"], agent["operation"]) == ("joker", "invoke_agent")
    assert (workflow["component"], workflow["operation"]) == ("flow", "invoke_workflow")


# --- metric points ------------------------------------------------------------------------
ATTRS = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
         "gen_ai.request.model": "gpt-4o-mini"}
TTFC = "gen_ai.client.operation.time_to_first_chunk"
TPOC = "gen_ai.client.operation.time_per_output_chunk"


@pytest.fixture
def metrics_app(tmp_path: Path) -> Iterator[App]:
    served = App(tmp_path, sources={"otlp": {"genai_signal_by_service": {
        "metrics-svc": "metrics"}}})
    yield served
    served.runtime.stop()


def test_streaming_histograms_and_subset_token_types_merge_from_metrics(
        metrics_app: App) -> None:
    app = metrics_app
    body = histogram_metrics([
        (TTFC, [0.05, 30.0], catalog.TTFT_BUCKETS, ATTRS),
        (TPOC, [0.02, 0.02, 0.3], catalog.TPOC_BUCKETS, ATTRS),
        ("gen_ai.client.token.usage", [64.0], catalog.TOKEN_BUCKETS,
         {**ATTRS, "gen_ai.token.type": "cache_read"}),
        ("gen_ai.client.token.usage", [9.0], catalog.TOKEN_BUCKETS,
         {**ATTRS, "gen_ai.token.type": "reasoning"}),
        ("gen_ai.client.operation.duration", [1.0], catalog.DURATION_BUCKETS,
         {**ATTRS, "gen_ai.response.model": "gpt-4o-mini-2024-07-18"}),
    ]).SerializeToString()
    answer = app.post("/v1/metrics", body)
    assert not ExportMetricsServiceResponse.FromString(answer.data).HasField("partial_success")
    app.post("/v1/metrics", body)  # retried: the same cumulative points
    text = app.metrics()
    chat = {"gen_ai_operation_name": "chat", **LLM}
    ttfc = "gen_ai_client_operation_time_to_first_chunk_seconds"
    assert sample_value(text, f"{ttfc}_count", chat) == 2
    assert sample_value(text, f"{ttfc}_bucket", {**chat, "le": "0.08"}) == 1
    assert sample_value(text, f"{ttfc}_bucket", {**chat, "le": "40.96"}) == 2
    assert sample_value(text, "gen_ai_client_operation_time_per_output_chunk_seconds_count",
                        chat) == 3
    assert tokens(app, "cache_read") == 64 and tokens(app, "reasoning") == 9
    assert sample_value(text, "gen_ai_client_operation_duration_seconds_count", {
        **chat, "gen_ai_response_model": "gpt-4o-mini-2024-07-18"}) == 1
    assert app.items("metrics", "mapped") == 5 and app.items("metrics", "duplicate") == 5


def test_streaming_points_on_other_bounds_and_unknown_token_types_are_rejected(
        metrics_app: App) -> None:
    old_ttft = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                5.0, 7.5, 10.0)  # the server TTFT set the catalog used in earlier releases
    body = histogram_metrics([
        (TTFC, [0.05], old_ttft, ATTRS),
        ("gen_ai.client.token.usage", [3.0], catalog.TOKEN_BUCKETS,
         {**ATTRS, "gen_ai.token.type": "audio"}),
    ]).SerializeToString()
    answer = metrics_app.post("/v1/metrics", body)
    partial = ExportMetricsServiceResponse.FromString(answer.data).partial_success
    assert partial.rejected_data_points == 2
    assert f"{TTFC}: bucket bounds differ" in partial.error_message
    assert metrics_app.value("gen_ai_client_operation_time_to_first_chunk_seconds_count",
                             LLM) == 0


def test_streaming_points_are_ignored_where_spans_count(app: App) -> None:
    body = histogram_metrics([(TTFC, [0.05], catalog.TTFT_BUCKETS, ATTRS)],
                             service="agent-svc").SerializeToString()
    app.post("/v1/metrics", body)
    assert app.items("metrics", "ignored") == 1 and app.items("metrics", "mapped") == 0


# --- exemplars --------------------------------------------------------------------------
def exemplars(app: App, family: str) -> list[str]:
    """The exemplars of ``family``'s buckets in the OpenMetrics exposition."""
    text = app.client.get("/metrics", headers={
        "Accept": "application/openmetrics-text; version=1.0.0"}).get_data(as_text=True)
    return [line.split(" # ", 1)[1] for line in text.splitlines()
            if line.startswith(f"{family}_bucket{{") and " # " in line]


def test_a_spans_ids_are_the_exemplar_of_what_it_feeds(app: App) -> None:
    """The fast path's call (a chat span alone) and the Python path's (a tool call in an
    agent's request) both leave their span as the exemplar."""
    app.post("/v1/traces", traces([{"attrs": chat_attrs(), "span": 0xB7AD6B7169203331}],
                                  trace=TRACE).SerializeToString())
    (chat,) = exemplars(app, "gen_ai_client_operation_duration_seconds")
    assert f'trace_id="{TRACE_HEX}"' in chat and 'span_id="b7ad6b7169203331"' in chat
    app.post("/v1/traces", agent_trace().SerializeToString())
    (tool,) = exemplars(app, "gen_ai_execute_tool_duration_seconds")
    assert f'trace_id="{TRACE_HEX}"' in tool and f'span_id="{4:016x}"' in tool
    agents = exemplars(app, "gen_ai_invoke_agent_duration_seconds")
    assert any(f'span_id="{1:016x}"' in e for e in agents), agents
