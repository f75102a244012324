"""Bad OTLP never hurts: hypothesis over the decoder and the routes, and the caps under a
flood of distinct names. In process (the Flask test client over a real Runtime)."""

from __future__ import annotations

import gzip
import math
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from exporter import config
from exporter.otlp_intake import decode as otlp_decode
from exporter.runtime import Runtime
from exporter.web import create_app
from tests.otlpcases import chat_attrs, genai_metrics, logs, traces

PROTO = {"Content-Type": "application/x-protobuf"}
HEALTH = {"max_memory_utilization": 1.0, "max_disk_utilization": 1.0}
FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    d = tmp_path_factory.mktemp("otlp-fuzz")
    rt = Runtime(config.build({"health": HEALTH, "storage": {"path": str(d / "data")},
                               "ai": {"max_series_per_metric": 50},
                               "web": {"max_request_bytes": 4 * 1024 * 1024}}))
    rt.start()
    yield rt
    rt.stop()


@given(body=st.binary(max_size=2048), signal=st.sampled_from(sorted(otlp_decode.SIGNALS)),
       encoding=st.sampled_from([otlp_decode.PROTOBUF, otlp_decode.JSON]))
@FUZZ
def test_the_decoder_gives_a_message_or_a_bad_request(body: bytes, signal: str,
                                                      encoding: str) -> None:
    try:
        otlp_decode.decode(otlp_decode.SIGNALS[signal], body, encoding)
    except otlp_decode.BadRequestError as exc:
        assert str(exc)


def _mutate(body: bytes, cuts: list[int], flips: list[tuple[int, int]]) -> bytes:
    data = bytearray(body)
    for at, value in flips:
        if data:
            data[at % len(data)] = value
    for at in cuts:
        if data:
            del data[at % len(data):]
    return bytes(data)


ATTR_KEYS = ["gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.system",
             "gen_ai.request.model", "gen_ai.response.model", "gen_ai.usage.input_tokens",
             "gen_ai.usage.output_tokens", "gen_ai.usage.prompt_tokens", "error.type",
             "gen_ai.tool.name", "mcp.method.name", "gen_ai.response.time_to_first_chunk",
             "gen_ai.usage.cache_read.input_tokens", "llm.request.type", "gen_ai.agent.name",
             "traceloop.span.kind", "gen_ai.response.id"]
VALUES = st.one_of(
    st.sampled_from(["chat", "execute_tool", "invoke_agent", "embeddings", "tools/call",
                     "openai", "", "workflow"]),
    st.text(max_size=40), st.text(min_size=250, max_size=400),
    st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1),
    st.floats(allow_nan=True, allow_infinity=True), st.booleans())


@given(spans=st.lists(st.dictionaries(st.sampled_from(ATTR_KEYS), VALUES, max_size=10),
                      min_size=1, max_size=20),
       errors=st.lists(st.booleans(), min_size=20, max_size=20),
       seconds=st.floats(min_value=-5, max_value=1e9, allow_nan=False))
@FUZZ
def test_any_attributes_give_200_and_every_span_is_accounted_for(
        runtime: Runtime, spans: list[dict[str, Any]], errors: list[bool],
        seconds: float) -> None:
    client = create_app(runtime).test_client()
    source = runtime.source("otlp")
    before = dict(source.items) if source is not None else {}  # type: ignore[attr-defined]
    request = traces([{"attrs": attrs, "error": errors[i], "span": 1 + i,
                       "seconds": seconds if math.isfinite(seconds) else 1}
                      for i, attrs in enumerate(spans)], trace=abs(hash(str(spans))) + 1)
    answer = client.post("/v1/traces", data=request.SerializeToString(), headers=PROTO)
    assert answer.status_code == 200, answer.data[:300]
    partial = ExportTraceServiceResponse.FromString(answer.data).partial_success
    after = source.items  # type: ignore[union-attr]
    seen = sum(after[("traces", o)] - before[("traces", o)]
               for o in ("mapped", "ignored", "duplicate", "rejected"))
    assert seen == len(spans)
    assert after[("traces", "rejected")] - before[("traces", "rejected")] == \
        partial.rejected_spans


@given(cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=2),
       flips=st.lists(st.tuples(st.integers(min_value=0, max_value=10_000),
                                st.integers(min_value=0, max_value=255)), max_size=6),
       path=st.sampled_from(["/v1/traces", "/v1/metrics", "/v1/logs"]),
       zipped=st.booleans())
@FUZZ
def test_mangled_requests_never_get_a_5xx(runtime: Runtime, cuts: list[int],
                                          flips: list[tuple[int, int]], path: str,
                                          zipped: bool) -> None:
    bodies = {"/v1/traces": traces([{"attrs": chat_attrs()}, {"attrs": {"x": 1}}]
                                   ).SerializeToString(),
              "/v1/metrics": genai_metrics([0.3], [10]).SerializeToString(),
              "/v1/logs": logs([{"guardian": "g", "verdict": "allow"}],
                               event_names=["ai.guardian"]).SerializeToString()}
    body = _mutate(bodies[path], cuts, flips)
    headers = dict(PROTO)
    if zipped:
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    answer = create_app(runtime).test_client().post(path, data=body, headers=headers)
    assert answer.status_code in (200, 400), (answer.status_code, answer.data[:300])


def test_a_flood_of_distinct_model_and_tool_names_stays_within_the_caps(
        runtime: Runtime) -> None:
    client = create_app(runtime).test_client()
    for batch in range(10):
        spans: list[dict[str, Any]] = []
        for i in range(500):
            n = batch * 500 + i
            spans.append({"attrs": chat_attrs(model=f"model-{n}"), "span": 2 * n + 1})
            spans.append({"attrs": {"gen_ai.operation.name": "execute_tool",
                                    "gen_ai.tool.name": f"tool-{n}"}, "span": 2 * n + 2})
        answer = client.post("/v1/traces", headers=PROTO,
                             data=traces(spans, trace=10_000 + batch).SerializeToString())
        assert answer.status_code == 200
    text = client.get("/metrics").get_data(as_text=True)
    models = {line.split('gen_ai_request_model="')[1].split('"')[0]
              for line in text.splitlines()
              if line.startswith("ai_llm_requests_total{") and "gen_ai_request_model" in line}
    assert len(models) <= 51 and "other" in models  # 50 series, then "other"
    tools = [line for line in text.splitlines() if line.startswith("ai_tool_calls_total{")]
    assert len(tools) <= 51


def nested(depth: int) -> bytes:
    return (b'{"resourceSpans":[{"resource":{"attributes":[{"key":"k","value":'
            + b'{"kvlistValue":{"values":[{"key":"k","value":' * depth
            + b'{"stringValue":"x"}' + b"}]}}" * depth + b"}]}}]}")


def test_the_json_decoder_reads_modest_nesting_and_refuses_deep_nesting() -> None:
    traces_signal = otlp_decode.SIGNALS["traces"]
    assert otlp_decode.decode(traces_signal, nested(10), otlp_decode.JSON).ByteSize() > 0
    for depth in (1000, 200_000):
        with pytest.raises(otlp_decode.BadRequestError):
            otlp_decode.decode(traces_signal, nested(depth), otlp_decode.JSON)
