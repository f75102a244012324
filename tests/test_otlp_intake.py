"""OTLP intake in process: the routes, the mapping, exactly once, and bad input.

Real OTel SDKs and instrumentations against the real exporter process are in
``tests/test_otlp_intake_clients.py``.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from google.protobuf import json_format
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from exporter import config
from exporter.runtime import Runtime
from exporter.web import create_app
from tests.otlpcases import CLIENT, SERVER, chat_attrs, genai_metrics, logs, traces
from tests.procs import sample_value

PROTO = {"Content-Type": "application/x-protobuf"}
HEALTH = {"max_memory_utilization": 1.0, "max_disk_utilization": 1.0}
LLM = {"gen_ai_provider_name": "openai", "gen_ai_request_model": "gpt-4o-mini"}


class App:
    """A started runtime with its own store, and a test client."""

    def __init__(self, tmp_path: Path, **settings: Any) -> None:
        self.runtime = Runtime(config.build({"health": HEALTH,
                                             "storage": {"path": str(tmp_path / "data")},
                                             **settings}))
        self.runtime.start()
        self.client: FlaskClient = create_app(self.runtime).test_client()

    def post(self, path: str, body: bytes, headers: dict[str, str] | None = None) -> Any:
        return self.client.post(path, data=body, headers=headers or PROTO)

    def metrics(self) -> str:
        return self.client.get("/metrics").get_data(as_text=True)

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        return sample_value(self.metrics(), name, labels) or 0.0

    def items(self, signal: str, outcome: str) -> float:
        return self.value("ai_exporter_otlp_intake_items_total",
                          {"signal": signal, "outcome": outcome})


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    served = App(tmp_path)
    yield served
    served.runtime.stop()


def tokens(app: App, token_type: str) -> float:
    return app.value("ai_llm_tokens_total", {**LLM, "gen_ai_token_type": token_type})


def requests_ok(app: App) -> float:
    return app.value("ai_llm_requests_total", {**LLM, "outcome": "success"})


# --- traces -------------------------------------------------------------------------------
def test_genai_spans_count_once_even_when_the_export_is_retried(app: App) -> None:
    body = traces([{"attrs": chat_attrs(input_tokens=12, output_tokens=7)},
                   {"attrs": chat_attrs(input_tokens=3, output_tokens=1,
                                        extra={"gen_ai.usage.cache_read.input_tokens": 2})},
                   {"attrs": {"http.method": "GET"}, "name": "GET /"}]).SerializeToString()
    for _ in range(3):  # the SDK retried twice: same spans, same ids
        answer = app.post("/v1/traces", body)
        assert answer.status_code == 200 and answer.content_type == "application/x-protobuf"
        assert not ExportTraceServiceResponse.FromString(answer.data).HasField("partial_success")
    assert requests_ok(app) == 2
    assert tokens(app, "input") == 15 and tokens(app, "output") == 8
    assert tokens(app, "cache_read") == 2
    assert app.items("traces", "mapped") == 2 and app.items("traces", "duplicate") == 4
    assert app.items("traces", "ignored") == 3
    text = app.metrics()
    assert sample_value(text, "gen_ai_client_operation_duration_seconds_count",
                        {"gen_ai_operation_name": "chat", **LLM}) == 2
    assert sample_value(text, "gen_ai_client_operation_duration_seconds_sum",
                        {"gen_ai_operation_name": "chat", **LLM}) == 1.0


def test_otlp_json_with_hex_ids_and_gzip_is_read_like_protobuf(app: App) -> None:
    request = traces([{"attrs": chat_attrs(input_tokens=4, output_tokens=2)}], trace=7)
    document = json_format.MessageToDict(request)
    for span in document["resourceSpans"][0]["scopeSpans"][0]["spans"]:
        span["traceId"] = request.resource_spans[0].scope_spans[0].spans[0].trace_id.hex()
        span["spanId"] = request.resource_spans[0].scope_spans[0].spans[0].span_id.hex()
        span["unknownFieldFromTheFuture"] = 1  # receivers ignore unknown fields
    body = gzip.compress(json.dumps(document).encode())
    answer = app.post("/v1/traces", body, {"Content-Type": "application/json",
                                           "Content-Encoding": "gzip"})
    assert answer.status_code == 200 and answer.content_type == "application/json"
    assert answer.get_json() == {}
    assert tokens(app, "input") == 4
    # The same span as protobuf is the same identity: not counted again.
    assert app.post("/v1/traces", request.SerializeToString()).status_code == 200
    assert tokens(app, "input") == 4 and app.items("traces", "duplicate") == 1


@pytest.mark.parametrize("body", [
    b'{"resourceSpans": [{"\\udf04": 1}]}',                     # a lone surrogate as a key
    b'{"resourceSpans": [{"resource": {"attributes": [{"key": "\\ud800", '
    b'"value": {"stringValue": "x"}}]}}]}',                     # in a value
    b'{"\\ude88resourceSpans": []}',
])
def test_otlp_json_with_lone_surrogates_is_a_bad_request(app: App, body: bytes) -> None:
    """Valid JSON, no valid Unicode: answered 400 with a reason, never a 500."""
    answer = app.post("/v1/traces", body, {"Content-Type": "application/json"})
    assert answer.status_code in (200, 400), answer.get_data()
    if answer.status_code == 400:
        assert answer.content_type == "application/json"
    assert app.post("/v1/traces", b'{"resourceSpans": []}',
                    {"Content-Type": "application/json"}).status_code == 200


def test_older_attribute_names_are_normalised(app: App) -> None:
    old = {"gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o-mini",
           "llm.request.type": "chat", "gen_ai.usage.prompt_tokens": 20,
           "gen_ai.usage.completion_tokens": 9}
    openllmetry = {"gen_ai.system": "Anthropic", "gen_ai.request.model": "claude-3",
                   "llm.request.type": "completion", "llm.usage.prompt_tokens": 5,
                   "llm.usage.completion_tokens": 1}
    app.post("/v1/traces", traces([{"attrs": old}, {"attrs": openllmetry}]).SerializeToString())
    assert tokens(app, "input") == 20 and tokens(app, "output") == 9
    assert app.value("ai_llm_tokens_total", {"gen_ai_provider_name": "anthropic",
                                             "gen_ai_request_model": "claude-3",
                                             "gen_ai_token_type": "input"}) == 5
    assert app.value("gen_ai_client_operation_duration_seconds_count", {
        "gen_ai_operation_name": "text_completion", "gen_ai_provider_name": "anthropic",
        "gen_ai_request_model": "claude-3"}) == 1


def test_errors_tools_agents_and_mcp_spans_map_to_their_kinds(app: App) -> None:
    spans: list[dict[str, Any]] = [
        {"attrs": chat_attrs(extra={"error.type": "429"}), "error": True},
        {"attrs": chat_attrs(model="gpt-4o"), "error": True},  # status only: _OTHER
        {"attrs": {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search",
                   "gen_ai.agent.name": "planner"}, "name": "execute_tool search"},
        {"attrs": {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "planner"},
         "seconds": 2.0},
        {"attrs": {"mcp.method.name": "tools/call", "gen_ai.tool.name": "fetch"},
         "kind": CLIENT},
        {"attrs": {"mcp.method.name": "tools/call", "gen_ai.tool.name": "fetch"},
         "kind": SERVER},  # the server side of the same call: not a second tool call
        {"attrs": {"mcp.method.name": "tools/list"}},
        {"attrs": {"traceloop.span.kind": "tool", "traceloop.entity.name": "add"},
         "name": "add.tool"},
        {"attrs": {"traceloop.span.kind": "tool", "traceloop.entity.name": "fail",
                   "error.type": "tool_error"}, "name": "fail.tool", "error": True},
    ]
    app.post("/v1/traces", traces(spans).SerializeToString())
    text = app.metrics()
    assert sample_value(text, "ai_llm_requests_total",
                        {**LLM, "outcome": "error", "error_type": "429"}) == 1
    assert sample_value(text, "ai_llm_requests_total",
                        {"gen_ai_request_model": "gpt-4o", "error_type": "_OTHER"}) == 1
    assert sample_value(text, "ai_tool_calls_total", {"gen_ai_tool_name": "search",
                                                      "gen_ai_agent_name": "planner",
                                                      "outcome": "success"}) == 1
    assert sample_value(text, "ai_tool_calls_total", {"gen_ai_tool_name": "fetch",
                                                      "gen_ai_agent_name": "agent-svc"}) == 1
    assert sample_value(text, "ai_tasks_total", {"component": "planner",
                                                 "queue": "invoke_agent",
                                                 "status": "succeeded"}) == 1
    assert sample_value(text, "ai_tool_calls_total", {"gen_ai_tool_name": "add",
                                                      "outcome": "success"}) == 1
    assert sample_value(text, "gen_ai_execute_tool_duration_seconds_count", {
        "gen_ai_tool_name": "fail", "error_type": "tool_error"}) == 1
    assert app.items("traces", "mapped") == 9 and app.items("traces", "rejected") == 0


def test_a_call_traced_by_the_sdk_and_an_instrumentation_counts_once(app: App) -> None:
    """anthropic 2.x traces its own calls (scope com.anthropic.sdk.python) and OpenLLMetry
    traces them again in another trace: the SDK's span counts, for errors too."""
    ok = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic",
          "gen_ai.request.model": "claude", "gen_ai.usage.input_tokens": 10,
          "gen_ai.usage.output_tokens": 6, "gen_ai.response.id": "msg_1"}
    failed = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic",
              "gen_ai.request.model": "claude", "error.type": "rate_limit_error"}
    instrumented = traces([{"attrs": {**ok, "gen_ai.usage.output_tokens": 7}, "span": 1},
                           {"attrs": failed, "error": True, "span": 2}],
                          trace=5, scope="opentelemetry.instrumentation.anthropic")
    native = traces([{"attrs": ok, "span": 1}, {"attrs": failed, "error": True, "span": 2}],
                    trace=6, scope="com.anthropic.sdk.python")
    # One request holding both, the instrumentation's first: the SDK's still win.
    both = traces([], trace=9)
    both.resource_spans[0].scope_spans.pop()
    both.resource_spans[0].scope_spans.extend([*instrumented.resource_spans[0].scope_spans,
                                                *native.resource_spans[0].scope_spans])
    app.post("/v1/traces", both.SerializeToString())
    labels = {"gen_ai_provider_name": "anthropic", "gen_ai_request_model": "claude"}
    assert app.value("ai_llm_tokens_total", {**labels, "gen_ai_token_type": "output"}) == 6
    assert app.value("ai_llm_requests_total", {**labels, "outcome": "success"}) == 1
    assert app.value("ai_llm_requests_total", {**labels, "outcome": "error"}) == 1
    # Later batches of the instrumentation alone are still the same calls' second trace.
    later = traces([{"attrs": {**ok, "gen_ai.response.id": "msg_2"}, "span": 3}], trace=7,
                   scope="opentelemetry.instrumentation.anthropic")
    app.post("/v1/traces", later.SerializeToString())
    assert app.value("ai_llm_requests_total", {**labels, "outcome": "success"}) == 1


def test_one_response_id_traced_twice_counts_once(app: App) -> None:
    span = {"attrs": chat_attrs(extra={"gen_ai.response.id": "chatcmpl-1"})}
    app.post("/v1/traces", traces([span], trace=1).SerializeToString())
    app.post("/v1/traces", traces([span], trace=2).SerializeToString())
    assert requests_ok(app) == 1 and app.items("traces", "duplicate") == 1


def test_the_native_span_reader_gives_what_the_protobuf_binding_gives() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    from exporter.otlp_intake import spantree

    native = spantree.NATIVE
    assert native is not None, "exporter._otlp is not built"
    value = st.one_of(st.text(max_size=20), st.integers(min_value=-(1 << 63),
                                                        max_value=(1 << 63) - 1),
                      st.floats(allow_nan=False), st.booleans())

    @settings(max_examples=200, deadline=None)
    @given(spans=st.lists(st.dictionaries(st.text(max_size=8), value, max_size=6),
                          max_size=6),
           service=st.text(max_size=10), scope=st.text(max_size=10))
    def same(spans: list[dict[str, Any]], service: str, scope: str) -> None:
        request = traces([{"attrs": a, "error": i % 2 == 1, "name": "" if i % 3 else "x"}
                          for i, a in enumerate(spans)], service=service, scope=scope)
        body = request.SerializeToString()
        parsed = ExportTraceServiceRequest.FromString(body)
        assert native.spans(body, False) == spantree.from_message(parsed)

    same()


GENAI_KEYS = ["gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.system",
              "gen_ai.request.model", "gen_ai.response.model", "gen_ai.usage.input_tokens",
              "gen_ai.usage.output_tokens", "gen_ai.usage.cache_read.input_tokens",
              "error.type", "gen_ai.response.time_to_first_chunk", "gen_ai.response.id",
              "mcp.method.name", "gen_ai.usage.prompt_tokens", "llm.request.type",
              "gen_ai.server.time_to_first_token", "other.key",
              "gen_ai.usage.cache_creation.input_tokens", "gen_ai.usage.cache_write.input_tokens",
              "gen_ai.usage.reasoning.output_tokens", "gen_ai.agent.name", "gen_ai.usage.cost",
              "gen_ai.usage.reasoning_tokens", "gen_ai.usage.cache_creation_input_tokens"]


def test_fast_llm_calls_are_the_events_the_mapping_makes() -> None:
    """Where the C reader turns a span into llm_call JSON itself, that JSON decodes to the
    very event the Python mapping makes from the same span, with the same identities."""
    import msgspec
    from hypothesis import given, settings
    from hypothesis import strategies as st
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    from exporter.events import LlmCall
    from exporter.otlp_intake import spantree
    from exporter.otlp_intake.mapping import map_span

    native = spantree.NATIVE
    assert native is not None, "exporter._otlp is not built"
    value = st.one_of(
        st.sampled_from(["chat", "embeddings", "completion", "embedding", "openai", "",
                         "gpt-4o", "x" * 140, 'q"uote', "ünï"]),
        st.integers(min_value=-5, max_value=1 << 42), st.floats(allow_nan=True),
        st.booleans())
    fast_seen = []

    base = st.fixed_dictionaries({
        "gen_ai.operation.name": st.sampled_from(["chat", "embeddings", "completion",
                                                  "embedding", "generate_content"]),
        "gen_ai.provider.name": st.sampled_from(["openai", "anthropic", "aws.bedrock"]),
        "gen_ai.request.model": st.sampled_from(["gpt-4o", "claude", ""]),
        "gen_ai.usage.input_tokens": st.integers(min_value=-3, max_value=1 << 41),
    }, optional={
        "gen_ai.response.model": st.sampled_from(["gpt-4o-2024", ""]),
        "gen_ai.usage.output_tokens": st.integers(min_value=0, max_value=10_000),
        "gen_ai.usage.cache_read.input_tokens": st.integers(min_value=0, max_value=100),
        "error.type": st.sampled_from(["429", "", "openai.RateLimitError"]),
        "gen_ai.response.time_to_first_chunk": st.one_of(
            st.floats(min_value=-1, max_value=1e12), st.integers(min_value=0, max_value=9)),
        "gen_ai.response.id": st.sampled_from(["chatcmpl-1", "msg_2", ""]),
        # the subsets, past their totals too, the agent, a cost
        "gen_ai.usage.cache_creation.input_tokens": st.integers(min_value=-1, max_value=500),
        "gen_ai.usage.cache_write.input_tokens": st.integers(min_value=0, max_value=1 << 41),
        "gen_ai.usage.reasoning.output_tokens": st.integers(min_value=0, max_value=20_000),
        "gen_ai.agent.name": st.sampled_from(["planner", "", 'q"uote', "a" * 200]),
        "gen_ai.usage.cost": st.one_of(st.floats(allow_nan=True),
                                       st.integers(min_value=-1, max_value=10)),
    })
    span_attrs = st.tuples(base, st.dictionaries(st.sampled_from(GENAI_KEYS), value,
                                                 max_size=2)).map(
        lambda pair: {**pair[0], **pair[1]} if len(pair[1]) % 2 else pair[0])

    @settings(max_examples=400, deadline=None)
    @given(spans=st.lists(span_attrs, min_size=1, max_size=5),
           service=st.sampled_from(["svc", "", "s" * 200]), error=st.booleans(),
           trace=st.sampled_from([0, 7, (1 << 128) - 1]))
    def same(spans: list[dict[str, Any]], service: str, error: bool, trace: int) -> None:
        request = traces([{"attrs": a, "error": error, "span": i}
                          for i, a in enumerate(spans)], service=service, trace=trace)
        body = request.SerializeToString()
        fast = native.spans(body)[0][1][0][1]
        general = spantree.from_message(ExportTraceServiceRequest.FromString(body))
        for got, (key, name, kind, start, end, code, attrs, trace_id, span_id, _) in zip(
                fast, general[0][1][0][1], strict=True):
            if got[0] != spantree.FAST:
                continue
            fast_seen.append(1)
            _, fast_key, response, provider, raw = got
            fields = map_span(attrs, name, kind, code, start_ns=start, end_ns=end,
                              service=service, trace_id=trace_id, span_id=span_id)
            assert fields is not None and fields["kind"] == "llm_call"
            assert fast_key == key and provider == fields["provider"]
            rid = attrs.get("gen_ai.response.id")
            expected = (spantree.fnv64(f"{service}\0{rid}".encode())
                        if isinstance(rid, str) and rid else 0)
            assert response == expected
            try:
                python_event: Any = msgspec.convert(fields, LlmCall)
            except msgspec.ValidationError:
                python_event = None
            try:
                fast_event: Any = msgspec.json.decode(raw, type=LlmCall)
            except msgspec.ValidationError:
                fast_event = None
            assert fast_event == python_event, (raw, fields)

    same()
    assert len(fast_seen) > 50  # the fast path was exercised


def test_a_bad_span_is_rejected_with_a_reason_and_the_others_count(app: App) -> None:
    spans = [{"attrs": chat_attrs(input_tokens=-5)},
             {"attrs": chat_attrs(model="m" * 300)},
             {"attrs": chat_attrs(input_tokens=1 << 50)},
             {"attrs": chat_attrs(input_tokens=3)}]
    answer = app.post("/v1/traces", traces(spans).SerializeToString())
    assert answer.status_code == 200
    partial = ExportTraceServiceResponse.FromString(answer.data).partial_success
    assert partial.rejected_spans == 3
    assert "invalid_value" in partial.error_message
    assert tokens(app, "input") == 3
    assert app.value("ai_exporter_events_rejected_total",
                     {"source": "otlp", "reason": "invalid_value"}) == 3


@pytest.mark.parametrize(("body", "headers", "status"), [
    (b"\xff\xfe garbage", PROTO, 400),
    (traces([{"attrs": chat_attrs()}]).SerializeToString()[:-7], PROTO, 400),
    (b"[1, 2]", {"Content-Type": "application/json"}, 400),
    (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}',
     {"Content-Type": "application/json"}, 400),
    (b"{}", {"Content-Type": "text/plain"}, 415),
    (b"{}", {"Content-Type": "application/json", "Content-Encoding": "br"}, 415),
    (b"not gzip", {**PROTO, "Content-Encoding": "gzip"}, 400),
])
def test_bad_requests_get_a_clear_4xx_and_count_nothing(app: App, body: bytes,
                                                        headers: dict[str, str],
                                                        status: int) -> None:
    answer = app.post("/v1/traces", body, headers)
    assert answer.status_code == status
    if answer.content_type == "application/x-protobuf":
        assert status_pb2.Status.FromString(answer.data).message
    assert app.value("ai_llm_requests_total", LLM) == 0


def test_deep_json_nesting_and_huge_values_never_hurt(app: App) -> None:
    deep = b'{"resourceSpans": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert app.post("/v1/traces", deep, {"Content-Type": "application/json"}).status_code == 400
    huge = chat_attrs(extra={"gen_ai.prompt": "x" * 2_000_000})
    answer = app.post("/v1/traces", traces([{"attrs": huge}]).SerializeToString())
    assert answer.status_code == 200 and requests_ok(app) == 1


def test_a_body_past_the_limit_is_413(tmp_path: Path) -> None:
    small = App(tmp_path, web={"max_request_bytes": 1024})
    try:
        big = traces([{"attrs": chat_attrs(extra={"pad": "x" * 4000})}]).SerializeToString()
        assert small.post("/v1/traces", big).status_code == 413
        bomb = gzip.compress(b"\0" * 100_000)
        assert small.post("/v1/traces", bomb, {**PROTO, "Content-Encoding": "gzip"}
                          ).status_code == 413
    finally:
        small.runtime.stop()


def test_the_intake_answers_503_with_retry_after_while_storage_is_unwritable(
        tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the store's directory should be")
    broken = Runtime(config.build({"health": HEALTH, "storage": {"path": str(blocker / "d")}}))
    broken.start()
    try:
        client = create_app(broken).test_client()
        answer = client.post("/v1/traces", headers=PROTO,
                             data=traces([{"attrs": chat_attrs()}]).SerializeToString())
        assert answer.status_code == 503 and answer.headers["Retry-After"] == "1"
        assert "durable" in status_pb2.Status.FromString(answer.data).message
    finally:
        broken.stop()


def test_writes_from_another_network_need_a_credential(app: App) -> None:
    body = traces([{"attrs": chat_attrs()}]).SerializeToString()
    answer = app.client.post("/v1/traces", data=body, headers=PROTO,
                             environ_base={"REMOTE_ADDR": "10.9.8.7"})
    assert answer.status_code == 403
    assert answer.get_json()["setting"] == "web.write_allowed_networks"


def test_a_scoped_credential_may_send_only_for_its_service_names(tmp_path: Path) -> None:
    tokens_file = tmp_path / "tokens"
    from tests.websec import bearer, sha256_line

    tokens_file.write_text(sha256_line("operator", "svc-token", "svc")
                           + sha256_line("viewer", "read-token", "reader"))
    scoped = App(tmp_path, web={"security": {
        "tokens_file": str(tokens_file),
        "scopes": {"token:svc": {"service_names": ["agent-svc"]}}}})
    try:
        mine = traces([{"attrs": chat_attrs(input_tokens=2)}]).SerializeToString()
        other = traces([{"attrs": chat_attrs(input_tokens=50)}],
                       service="someone-else").SerializeToString()
        headers = {**PROTO, **bearer("svc-token")}
        assert scoped.client.post("/v1/traces", data=mine, headers=headers).status_code == 200
        answer = scoped.client.post("/v1/traces", data=other, headers=headers)
        partial = ExportTraceServiceResponse.FromString(answer.data).partial_success
        assert partial.rejected_spans == 1 and "forbidden_scope" in partial.error_message
        text = scoped.client.get("/metrics", headers=bearer("read-token")).get_data(as_text=True)
        assert sample_value(text, "ai_llm_tokens_total",
                            {**LLM, "gen_ai_token_type": "input"}) == 2
        assert scoped.client.post("/v1/traces", data=mine, headers=PROTO).status_code == 401
    finally:
        scoped.runtime.stop()


# --- logs ---------------------------------------------------------------------------------
def test_ai_event_log_records_become_events(app: App) -> None:
    request = logs([{"guardian": "pii", "verdict": "deny"},
                    {"event.name": "ai.quality_gate", "gate": "review", "decision": "approved",
                     "score": 0.75},
                    {"gate": "x"},  # ai.bogus: unknown kind, rejected
                    {"message": "plain log"}],
                   event_names=["ai.guardian", "", "ai.bogus"])
    answer = app.post("/v1/logs", request.SerializeToString())
    partial = ExportLogsServiceResponse.FromString(answer.data).partial_success
    assert partial.rejected_log_records == 1 and "unknown_kind" in partial.error_message
    text = app.metrics()
    assert sample_value(text, "ai_guardian_decisions_total",
                        {"guardian": "pii", "verdict": "deny"}) == 1
    assert sample_value(text, "ai_quality_gate_decisions_total",
                        {"gate": "review", "decision": "approved"}) == 1
    assert app.items("logs", "ignored") == 1
    app.post("/v1/logs", request.SerializeToString())  # retried: same records
    assert app.items("logs", "duplicate") == 3


# --- metrics ------------------------------------------------------------------------------
def test_genai_metrics_are_ignored_by_default_where_spans_count(app: App) -> None:
    answer = app.post("/v1/metrics", genai_metrics([0.3], [10]).SerializeToString())
    assert answer.status_code == 200
    assert not ExportMetricsServiceResponse.FromString(answer.data).HasField("partial_success")
    assert requests_ok(app) == 0 and app.items("metrics", "ignored") == 3


def metrics_app(tmp_path: Path) -> App:
    return App(tmp_path, sources={"otlp": {"genai_signal_by_service": {
        "metrics-svc": "metrics"}}})


def test_cumulative_genai_metrics_are_differenced_exactly(tmp_path: Path) -> None:
    app = metrics_app(tmp_path)
    try:
        first = genai_metrics([0.3, 1.5], [10, 100]).SerializeToString()
        app.post("/v1/metrics", first)
        app.post("/v1/metrics", first)  # retried: the same cumulative point
        assert requests_ok(app) == 2 and tokens(app, "input") == 110
        grown = genai_metrics([0.3, 1.5, 0.05], [10, 100, 7], end=70).SerializeToString()
        app.post("/v1/metrics", grown)
        assert requests_ok(app) == 3 and tokens(app, "input") == 117
        text = app.metrics()
        labels = {"gen_ai_operation_name": "chat", **LLM}
        assert sample_value(text, "gen_ai_client_operation_duration_seconds_count",
                            labels) == 3
        assert sample_value(text, "gen_ai_client_operation_duration_seconds_bucket",
                            {**labels, "le": "0.08"}) == 1
        # The application restarted: a new start time, counts from zero again.
        restarted = genai_metrics([2.0], [5], start=80, end=90).SerializeToString()
        app.post("/v1/metrics", restarted)
        assert requests_ok(app) == 4 and tokens(app, "input") == 122
        assert app.items("metrics", "duplicate") == 2
    finally:
        app.runtime.stop()


def test_delta_points_count_once_and_other_bounds_are_rejected(tmp_path: Path) -> None:
    app = metrics_app(tmp_path)
    try:
        delta = genai_metrics([0.5], [3], temporality=1).SerializeToString()
        app.post("/v1/metrics", delta)
        app.post("/v1/metrics", delta)
        app.post("/v1/metrics", genai_metrics([0.5], [4], temporality=1, start=60,
                                              end=70).SerializeToString())
        assert requests_ok(app) == 2 and tokens(app, "input") == 7
        odd = genai_metrics([0.5], [1], bounds=(0.1, 1.0), end=80).SerializeToString()
        answer = app.post("/v1/metrics", odd)
        partial = ExportMetricsServiceResponse.FromString(answer.data).partial_success
        assert partial.rejected_data_points == 1 and "bucket bounds" in partial.error_message
    finally:
        app.runtime.stop()


# --- durability ---------------------------------------------------------------------------
def test_a_crash_after_the_answer_replays_once_and_a_retry_stays_a_duplicate(
        tmp_path: Path) -> None:
    """Answered 200, killed before any commit: the log replays it; the SDK, which got its
    answer, does not retry, but if it had (a lost answer), the replayed span ids catch it."""
    body = traces([{"attrs": chat_attrs(input_tokens=11)}]).SerializeToString()
    first = App(tmp_path)
    assert first.post("/v1/traces", body).status_code == 200
    first.runtime.store.wal.close()
    first.runtime.store.lock.release()  # as kill -9: no final commit
    again = App(tmp_path)
    try:
        assert tokens(again, "input") == 11
        assert again.post("/v1/traces", body).status_code == 200
        assert tokens(again, "input") == 11
    finally:
        again.runtime.stop()


def test_dedup_ids_and_metric_streams_survive_a_restart(tmp_path: Path) -> None:
    body = traces([{"attrs": chat_attrs(input_tokens=6)}]).SerializeToString()
    first = metrics_app(tmp_path)
    first.post("/v1/traces", body)
    first.post("/v1/metrics", genai_metrics([0.3], [10]).SerializeToString())
    first.runtime.stop()
    again = metrics_app(tmp_path)
    try:
        again.post("/v1/traces", body)
        again.post("/v1/metrics", genai_metrics([0.3, 0.4], [10, 1], end=70).SerializeToString())
        assert tokens(again, "input") == 6 + 11
        assert requests_ok(again) == 1 + 2
    finally:
        again.runtime.stop()


def test_commits_and_concurrent_requests_never_deadlock(app: App) -> None:
    """The store's commit holds every participant, then the log; a request's apply step
    holds the log, then the intake's state. The intake must not ask a commit to take its
    own lock first (that order inversion once hung the exporter under load)."""
    import threading

    store = app.runtime.store
    bodies = [[traces([{"attrs": chat_attrs(), "span": 1}], trace=1000 * t + i
                      ).SerializeToString() for i in range(300)] for t in range(4)]
    source = app.runtime.source("otlp")
    assert source is not None
    done = threading.Event()

    def commit_loop() -> None:
        while not done.is_set():
            store.commit(force=True)

    def post(batch: list[bytes]) -> None:
        for body in batch:
            source.handle("traces", body, "application/x-protobuf")  # type: ignore[attr-defined]

    committer = threading.Thread(target=commit_loop, daemon=True)
    committer.start()
    workers = [threading.Thread(target=post, args=(b,), daemon=True) for b in bodies]
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
    done.set()
    committer.join(30)
    assert not any(w.is_alive() for w in workers) and not committer.is_alive()
    assert requests_ok(app) == 4 * 300
