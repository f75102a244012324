"""The OTLP intake fed by real GenAI clients: the ``openai``, ``anthropic`` and ``mcp`` SDKs,
instrumented by their real OTel instrumentations (tests/otlp_clients/), export over OTLP to
the real exporter process; the LLM calls go to the loopback stand-in provider
(tests/llm_standin.py), whose deterministic usage makes every count and token sum exact.

What each instrumentation emits is recorded in tests/otlp_clients/capture.py's dumps; the
mapping facts these tests rely on:

- official OpenAI instrumentation: one span per call; input tokens include the cached ones
  (``gen_ai.usage.cache_read.input_tokens``), output tokens the reasoning ones
  (``gen_ai.usage.reasoning.output_tokens``); error.type is ``openai.RateLimitError``;
- the spans carry no cost: ``ai_llm_cost_usd_total`` is computed from the tokens, the OpenAI
  stand-in model's with an ``ai.pricing`` override, claude-3-5-haiku's from genai-prices;
- anthropic 2.x traces every call itself (scope ``com.anthropic.sdk.python``) besides
  OpenLLMetry's span, in another trace: one call must still count once; both report input
  tokens as input + cache read + cache write; OpenLLMetry adds message_start's output token
  to the streamed count (7 for 6), the SDK's span does not;
- OpenLLMetry MCP: ``{tool}.tool`` spans with ``traceloop.span.kind=tool``,
  ``traceloop.entity.name``; a tool error has ``error.type=tool_error``; ``tools/list.mcp``,
  ``initialize.mcp`` and ``ResponseStreamWriter`` spans are no tool calls. Every span but
  ``ResponseStreamWriter`` is a client MCP operation (``mcp.client.operation.duration``,
  the method from the span name); no span has an ``mcp.*`` attribute, and the server side
  has only ``ResponseStreamWriter`` spans.
"""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.pricing import PriceTable, Rates
from tests.llm_standin import LlmStandin, tokens_for, words
from tests.procs import (
    LOOPBACK,
    ROOT,
    Exporter,
    Prometheus,
    free_port,
    sample_value,
    static_job,
    wait_until,
)

pytestmark = pytest.mark.e2e

CLIENTS = ROOT / "tests" / "otlp_clients"
CLIENT_TIMEOUT_S = 120
PROMPT = "one two three four five six"
PROMPT_TOKENS = words(PROMPT)
OPENAI_MODEL = "gpt-e2e-out7-cached3-reason2"
EMBEDDING_MODEL = "text-embedding-e2e"
# genai-prices knows claude-3-5-haiku by its prefix: the calls are priced from its table
ANTHROPIC_MODEL = "claude-3-5-haiku-e2e-out6-cached4-cwrite2"
# the stand-in OpenAI model is priced by an ai.pricing override (per million tokens)
OPENAI_PRICES = {"provider": "openai", "model": OPENAI_MODEL, "input": 0.15, "output": 0.6,
                 "cache_read": 0.075, "reasoning": 2.4}
OPENAI_RATES = Rates.per_million(0.15, 0.6, 0.075, None, 2.4)
PRICING = {"ai": {"pricing": {"overrides": [OPENAI_PRICES]}}}
OPENAI_CALLS = {"CHAT_CALLS": 3, "STREAM_CALLS": 2, "EMBEDDING_CALLS": 2, "ERROR_CALLS": 1}
ANTHROPIC_CALLS = {"MESSAGES_CALLS": 3, "STREAM_CALLS": 1, "ERROR_CALLS": 1}
OPENAI_ENV = {**OPENAI_CALLS, "CHAT_MODEL": OPENAI_MODEL, "EMBEDDING_MODEL": EMBEDDING_MODEL}
ANTHROPIC_ENV = {**ANTHROPIC_CALLS, "MODEL": ANTHROPIC_MODEL}
MCP_CALLS = {"LIST_CALLS": 2, "ADD_CALLS": 3, "WORD_COUNT_CALLS": 1, "FAIL_CALLS": 2}


@pytest.fixture
def llm() -> Iterator[LlmStandin]:
    with LlmStandin() as standin:
        yield standin


@pytest.fixture
def exporter(tmp_path: Path) -> Iterator[Exporter]:
    process = Exporter(tmp_path, PRICING)
    try:
        yield process
    finally:
        process.stop()


def run_client(name: str, endpoint: str, llm: LlmStandin | None, env: dict[str, Any],
               protocol: str = "http/protobuf") -> str:
    """Runs tests/otlp_clients/<name>.py to its end (it flushes its telemetry before it
    exits); returns what it printed."""
    full = {k: v for k, v in os.environ.items()
            if not k.startswith(("OTEL_", "AI_EXPORTER_", "ANTHROPIC_", "TRACELOOP_"))}
    full.update({
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        "OTEL_SERVICE_NAME": name,
        "OTEL_EXPORTER_OTLP_TIMEOUT": "10",
        "PROMPT": PROMPT,
    })
    if llm is not None:
        full["STANDIN_URL"] = llm.base_url
    full.update({k: str(v) for k, v in env.items()})
    run = subprocess.run([sys.executable, str(CLIENTS / f"{name}.py")], env=full, cwd=ROOT,
                         capture_output=True, text=True, timeout=CLIENT_TIMEOUT_S, check=False)
    assert run.returncode == 0, f"{name} failed:\n{run.stdout}\n{run.stderr[-4000:]}"
    return run.stdout


def only(text: str, name: str, labels: dict[str, str]) -> float:
    """The value of the one sample ``name`` whose labels include ``labels``: none, or more
    than one (a series split by a label the test does not expect), fails."""
    found = [(s.labels, s.value) for family in text_string_to_metric_families(text)
             for s in family.samples
             if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, f"{name}{labels}: want one sample, got {found}"
    return float(found[0][1])


def total(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    """The sum over every sample ``name`` whose labels include ``labels``."""
    return sum(float(s.value) for family in text_string_to_metric_families(text)
               for s in family.samples
               if s.name == name and all(s.labels.get(k) == v
                                         for k, v in (labels or {}).items()))


def mapped_spans(exporter: Exporter) -> float:
    return sample_value(exporter.metrics(), "ai_exporter_otlp_intake_items_total",
                        {"signal": "traces", "outcome": "mapped"}) or 0.0


def settled(exporter: Exporter, mapped: int) -> str:
    """/metrics once ``mapped`` spans are mapped (the client has exited, so all were sent)
    and the count stays there for a moment (nothing else arrives)."""
    try:
        wait_until(lambda: mapped_spans(exporter) >= mapped, 15, what=f"{mapped} mapped spans")
    except AssertionError as failed:
        raise AssertionError(f"{failed}; the intake's series:\n{_intake(exporter.metrics())}"
                             ) from None
    time.sleep(0.5)
    text = exporter.metrics()
    assert sample_value(text, "ai_exporter_otlp_intake_items_total",
                        {"signal": "traces", "outcome": "mapped"}) == mapped, \
        _intake(text)
    return text


def _intake(text: str) -> str:
    return "\n".join(line for line in text.splitlines()
                     if line.startswith(("ai_exporter_otlp_intake", "ai_llm", "ai_tool"))
                     and not line.endswith(" 0.0"))


def wait_for_port(port: int, timeout: float = 15.0) -> None:
    def accepting() -> bool:
        with socket.socket() as s:
            s.settimeout(0.5)
            return s.connect_ex((LOOPBACK, port)) == 0
    wait_until(accepting, timeout, what=f"a listener on {LOOPBACK}:{port}")


# --- official OpenAI instrumentation -----------------------------------------------------

def assert_openai_counts(text: str, llm: LlmStandin) -> None:
    chat = tokens_for(OPENAI_MODEL, PROMPT_TOKENS)
    n_chat = OPENAI_CALLS["CHAT_CALLS"] + OPENAI_CALLS["STREAM_CALLS"]
    n_embed = OPENAI_CALLS["EMBEDDING_CALLS"]
    # the stand-in answered exactly what the client was asked to call
    assert len(llm.answered("/v1/chat/completions")) == n_chat + OPENAI_CALLS["ERROR_CALLS"]
    assert len(llm.answered("/v1/embeddings")) == n_embed

    openai = {"gen_ai_provider_name": "openai"}
    chat_model = {**openai, "gen_ai_request_model": OPENAI_MODEL}
    embed_model = {**openai, "gen_ai_request_model": EMBEDDING_MODEL}
    failing = {**openai, "gen_ai_request_model": "fail-429"}

    assert only(text, "ai_llm_requests_total", {**chat_model, "outcome": "success"}) == n_chat
    assert only(text, "ai_llm_requests_total", {**embed_model, "outcome": "success"}) == n_embed
    assert only(text, "ai_llm_requests_total",
                {**failing, "outcome": "error", "error_type": "openai.RateLimitError"}) == \
        OPENAI_CALLS["ERROR_CALLS"]
    assert total(text, "ai_llm_requests_total", openai) == \
        n_chat + n_embed + OPENAI_CALLS["ERROR_CALLS"]

    tokens = "ai_llm_tokens_total"
    assert only(text, tokens, {**chat_model, "gen_ai_token_type": "input"}) == \
        n_chat * chat.input
    assert only(text, tokens, {**chat_model, "gen_ai_token_type": "output"}) == \
        n_chat * chat.output
    assert only(text, tokens, {**chat_model, "gen_ai_token_type": "cache_read"}) == \
        n_chat * chat.cached
    assert only(text, tokens, {**chat_model, "gen_ai_token_type": "reasoning"}) == \
        n_chat * chat.reasoning
    # no cost in the spans: computed from the tokens with the configured prices
    per_call = OPENAI_RATES.cost(chat.input, chat.output, chat.cached, 0, chat.reasoning)
    assert only(text, "ai_llm_cost_usd_total", chat_model) == \
        pytest.approx(n_chat * per_call, rel=1e-9)
    # the embedding model has no price: cost 0, counted
    assert only(text, "ai_llm_unpriced_requests_total", embed_model) == n_embed
    assert only(text, tokens, {**embed_model, "gen_ai_token_type": "input"}) == \
        n_embed * PROMPT_TOKENS
    assert sample_value(text, tokens, {**embed_model, "gen_ai_token_type": "output"}) is None
    assert total(text, tokens, failing) == 0

    usage = "gen_ai_client_token_usage"
    chat_op = {**chat_model, "gen_ai_operation_name": "chat"}
    embed_op = {**embed_model, "gen_ai_operation_name": "embeddings"}
    assert only(text, f"{usage}_sum", {**chat_op, "gen_ai_token_type": "input"}) == \
        n_chat * chat.input
    assert only(text, f"{usage}_count", {**chat_op, "gen_ai_token_type": "input"}) == n_chat
    assert only(text, f"{usage}_sum", {**chat_op, "gen_ai_token_type": "output"}) == \
        n_chat * chat.output
    assert only(text, f"{usage}_sum", {**embed_op, "gen_ai_token_type": "input"}) == \
        n_embed * PROMPT_TOKENS

    duration = "gen_ai_client_operation_duration_seconds_count"
    assert only(text, duration, {**chat_op, "error_type": ""}) == n_chat
    assert only(text, duration, {**embed_op, "error_type": ""}) == n_embed
    assert only(text, duration, {**failing, "gen_ai_operation_name": "chat",
                                 "error_type": "openai.RateLimitError"}) == \
        OPENAI_CALLS["ERROR_CALLS"]
    assert only(text, "gen_ai_client_operation_time_to_first_chunk_seconds_count", chat_op) == \
        OPENAI_CALLS["STREAM_CALLS"]


def test_openai_official_over_http(exporter: Exporter, llm: LlmStandin) -> None:
    run_client("openai_official", exporter.url, llm, OPENAI_ENV)
    spans = sum(OPENAI_CALLS.values())
    text = settled(exporter, spans)
    assert_openai_counts(text, llm)
    # one export request per span (SimpleSpanProcessor), every one accepted; the metrics
    # (the instrumentation's own histograms) are received but not counted a second time
    intake = "ai_exporter_otlp_intake_requests_total"
    assert only(text, intake, {"signal": "traces", "transport": "http",
                               "outcome": "success"}) == spans
    assert only(text, intake, {"signal": "metrics", "transport": "http",
                               "outcome": "success"}) >= 1
    assert total(text, intake, {"outcome": "rejected"}) == 0
    assert only(text, "ai_exporter_otlp_intake_items_total",
                {"signal": "metrics", "outcome": "mapped"}) == 0


def prom_value(prom: Prometheus, expr: str) -> float | None:
    """The value of an instant query that returns one series (None while it has none)."""
    result = prom.query(expr)
    assert len(result) <= 1, f"{expr}: want one series, got {result}"
    return float(result[0]["value"][1]) if result else None


def wait_prom_value(prom: Prometheus, expr: str, want: float, timeout: float = 30) -> None:
    seen: list[float | None] = []

    def reached() -> bool:
        seen.append(prom_value(prom, expr))
        return seen[-1] == want
    try:
        wait_until(reached, timeout, interval=0.5, what=f"PromQL {expr} == {want}")
    except AssertionError as failed:
        raise AssertionError(f"{failed}; last value {seen[-1:]}") from None


def wait_prom_some(prom: Prometheus, expr: str, timeout: float = 30) -> float:
    """An instant query's value once it has one: a scrape that times out on a loaded
    machine marks every series stale until the next one, so a single query may see none."""
    seen: list[float | None] = []

    def present() -> bool:
        seen.append(prom_value(prom, expr))
        return seen[-1] is not None
    wait_until(present, timeout, interval=0.5, what=f"PromQL {expr} has a value")
    value = seen[-1]
    assert value is not None
    return value


def observed_bucket_range(text: str, name: str) -> tuple[float, float]:
    """(the bound below the first non-empty bucket, the bound of the bucket where every
    observation is in) of histogram ``name`` summed over its label sets, from /metrics."""
    counts: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == f"{name}_bucket":
                le = float(s.labels["le"])
                counts[le] = counts.get(le, 0.0) + float(s.value)
    bounds = sorted(counts)
    every = counts[math.inf]
    assert every > 0, f"{name}: no observation"
    first = next(i for i, b in enumerate(bounds) if counts[b] > 0)
    last = next(b for b in bounds if counts[b] == every)
    return (bounds[first - 1] if first > 0 else 0.0), last


def test_openai_official_through_a_real_prometheus(
        tmp_path: Path, exporter: Exporter, llm: LlmStandin) -> None:
    """The counts through PromQL, as the dashboards and alerts read them: exact sums, and
    rate() and histogram_quantile() over the instrumented client's two runs (Prometheus
    scrapes the first run's totals before the second adds to them)."""
    prom = Prometheus(tmp_path, [static_job("ai-metrics-exporter",
                                            f"{LOOPBACK}:{exporter.port}")], interval="1s")
    try:
        prom.wait_for('up{job="ai-metrics-exporter"} == 1', timeout=30)
        spans = sum(OPENAI_CALLS.values())
        input_tokens = 'sum(ai_llm_tokens_total{gen_ai_token_type="input"})'
        requests_ = "sum(ai_llm_requests_total)"
        for run in (1, 2):
            run_client("openai_official", exporter.url, llm, OPENAI_ENV)
            text = settled(exporter, run * spans)
            served = llm.answered()
            assert len(served) == run * spans
            served_input = sum(c.tokens.input for c in served if c.tokens is not None)
            assert total(text, "ai_llm_tokens_total", {"gen_ai_token_type": "input"}) == \
                served_input
            # what the stand-in served, exactly, through Prometheus
            wait_prom_value(prom, input_tokens, served_input)
            wait_prom_value(prom, requests_, len(served))
        wait_prom_value(prom, 'sum(ai_llm_requests_total{outcome="error"})',
                        2 * OPENAI_CALLS["ERROR_CALLS"])
        wait_prom_value(prom, 'sum(ai_llm_tokens_total{gen_ai_token_type="output"})',
                        2 * (OPENAI_CALLS["CHAT_CALLS"] + OPENAI_CALLS["STREAM_CALLS"])
                        * tokens_for(OPENAI_MODEL, PROMPT_TOKENS).output)

        rate = wait_prom_some(prom, "sum(rate(ai_llm_requests_total[1m]))")
        assert rate > 0
        duration = "gen_ai_client_operation_duration_seconds"
        low, high = observed_bucket_range(exporter.metrics(), duration)
        median = wait_prom_some(prom, f"histogram_quantile(0.5, sum by (le) "
                                      f"(rate({duration}_bucket[1m])))")
        assert math.isfinite(median), median
        assert low <= median <= high, (median, low, high)
        wait_prom_value(prom, f"sum({duration}_count)", 2 * spans)
    finally:
        prom.stop()


def test_openai_official_over_grpc(tmp_path: Path, llm: LlmStandin) -> None:
    grpc_port = free_port()
    exporter = Exporter(tmp_path, {**PRICING, "sources": {"otlp": {
        "grpc_listen_address": f"{LOOPBACK}:{grpc_port}"}}})
    try:
        wait_for_port(grpc_port)
        run_client("openai_official", f"http://{LOOPBACK}:{grpc_port}", llm, OPENAI_ENV,
                   protocol="grpc")
        spans = sum(OPENAI_CALLS.values())
        text = settled(exporter, spans)
        assert_openai_counts(text, llm)
        intake = "ai_exporter_otlp_intake_requests_total"
        assert only(text, intake, {"signal": "traces", "transport": "grpc",
                                   "outcome": "success"}) == spans
        assert total(text, intake, {"transport": "http"}) == 0
        assert total(text, intake, {"outcome": "rejected"}) == 0
    finally:
        exporter.stop()


def test_openai_content_events_delta_metrics_and_gzip_count_each_call_once(
        exporter: Exporter, llm: LlmStandin) -> None:
    """With message content captured, the instrumentation also sends one log record per chat
    call (``gen_ai.client.inference.operation.details``, the span's attributes again);
    metrics go as delta and every body is gzipped: still one count per call."""
    run_client("openai_official", exporter.url, llm, {
        **OPENAI_ENV,
        "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "span_and_event",
        "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "delta",
        "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip"})
    text = settled(exporter, sum(OPENAI_CALLS.values()))
    assert_openai_counts(text, llm)
    intake = "ai_exporter_otlp_intake_requests_total"
    assert only(text, intake, {"signal": "logs", "transport": "http", "outcome": "success"}) >= 1
    assert total(text, intake, {"outcome": "rejected"}) == 0
    assert total(text, intake, {"outcome": "unsupported"}) == 0
    assert only(text, "ai_exporter_otlp_intake_items_total",
                {"signal": "logs", "outcome": "mapped"}) == 0


# --- OpenLLMetry Anthropic instrumentation (and the anthropic SDK's own spans) -------------

def assert_anthropic_counts(text: str, llm: LlmStandin, error_type: str,
                            streamed_output_extra: int) -> None:
    usage = tokens_for(ANTHROPIC_MODEL, PROMPT_TOKENS)
    n_ok = ANTHROPIC_CALLS["MESSAGES_CALLS"] + ANTHROPIC_CALLS["STREAM_CALLS"]
    assert len(llm.answered("/v1/messages")) == n_ok + ANTHROPIC_CALLS["ERROR_CALLS"]
    anthropic = {"gen_ai_provider_name": "anthropic"}
    model = {**anthropic, "gen_ai_request_model": ANTHROPIC_MODEL}
    failing = {**anthropic, "gen_ai_request_model": "fail-429"}
    assert only(text, "ai_llm_requests_total", {**model, "outcome": "success"}) == n_ok
    assert only(text, "ai_llm_requests_total",
                {**failing, "outcome": "error", "error_type": error_type}) == \
        ANTHROPIC_CALLS["ERROR_CALLS"]
    assert total(text, "ai_llm_requests_total", anthropic) == \
        n_ok + ANTHROPIC_CALLS["ERROR_CALLS"]
    # both instrumentations report input tokens as Anthropic's input_tokens (the uncached
    # part) + cache reads + cache writes, per OTel's convention that input includes cache
    input_tokens = usage.input + usage.cached + usage.cache_write
    tokens = "ai_llm_tokens_total"
    assert only(text, tokens, {**model, "gen_ai_token_type": "input"}) == n_ok * input_tokens
    assert only(text, tokens, {**model, "gen_ai_token_type": "cache_read"}) == \
        n_ok * usage.cached
    assert only(text, tokens, {**model, "gen_ai_token_type": "cache_creation"}) == \
        n_ok * usage.cache_write
    # the cost, from genai-prices' claude-3-5-haiku prices: every cache token at its rate
    rates = PriceTable().rates("anthropic", ANTHROPIC_MODEL)
    assert rates is not None and rates.cache_read < rates.input
    outputs = [usage.output] * n_ok
    outputs[-1] += ANTHROPIC_CALLS["STREAM_CALLS"] * streamed_output_extra
    cost = sum(rates.cost(input_tokens, out, usage.cached, usage.cache_write, 0)
               for out in outputs)
    assert only(text, "ai_llm_cost_usd_total", model) == pytest.approx(cost, rel=1e-9)
    assert total(text, "ai_llm_unpriced_requests_total", model) == 0
    assert only(text, tokens, {**model, "gen_ai_token_type": "output"}) == \
        n_ok * usage.output + ANTHROPIC_CALLS["STREAM_CALLS"] * streamed_output_extra
    chat = {**model, "gen_ai_operation_name": "chat"}
    assert only(text, "gen_ai_client_token_usage_count",
                {**chat, "gen_ai_token_type": "input"}) == n_ok
    assert only(text, "gen_ai_client_token_usage_sum",
                {**chat, "gen_ai_token_type": "input"}) == n_ok * input_tokens
    assert only(text, "gen_ai_client_operation_duration_seconds_count",
                {**chat, "error_type": ""}) == n_ok
    assert only(text, "gen_ai_client_operation_duration_seconds_count",
                {**failing, "error_type": error_type}) == ANTHROPIC_CALLS["ERROR_CALLS"]


def test_anthropic_openllmetry_and_the_sdks_own_spans_count_each_call_once(
        exporter: Exporter, llm: LlmStandin) -> None:
    """The anthropic SDK's spans are on (its default): two spans per call, in two traces."""
    run_client("anthropic_openllmetry", exporter.url, llm, ANTHROPIC_ENV)
    text = settled(exporter, sum(ANTHROPIC_CALLS.values()))
    # the SDK's span is the one counted: its error.type is the API's error type, its
    # streamed output count the API's (message_delta's cumulative count)
    assert_anthropic_counts(text, llm, error_type="rate_limit_error", streamed_output_extra=0)
    # only the SDK's span measures the time to the first chunk
    assert only(text, "gen_ai_client_operation_time_to_first_chunk_seconds_count",
                {"gen_ai_provider_name": "anthropic",
                 "gen_ai_request_model": ANTHROPIC_MODEL}) == ANTHROPIC_CALLS["STREAM_CALLS"]


def test_anthropic_openllmetry_alone(exporter: Exporter, llm: LlmStandin) -> None:
    run_client("anthropic_openllmetry", exporter.url, llm, {
        **ANTHROPIC_ENV, "ANTHROPIC_OPEN_TELEMETRY": "false", "TRACELOOP_TRACE_CONTENT": "false"})
    text = settled(exporter, sum(ANTHROPIC_CALLS.values()))
    # OpenLLMetry's error.type is the exception's class name; it adds message_start's
    # output_tokens (1) to message_delta's cumulative count for a streamed call
    assert_anthropic_counts(text, llm, error_type="RateLimitError", streamed_output_extra=1)


# --- OpenLLMetry MCP instrumentation ---------------------------------------------------------

def test_mcp_openllmetry_tool_calls(exporter: Exporter) -> None:
    run_client("mcp_openllmetry", exporter.url, None, MCP_CALLS)
    calls = MCP_CALLS["ADD_CALLS"] + MCP_CALLS["WORD_COUNT_CALLS"] + MCP_CALLS["FAIL_CALLS"]
    # every request the client sent is one span mapped: initialize, tools/list, tools/call
    text = settled(exporter, 1 + MCP_CALLS["LIST_CALLS"] + calls)
    tool_calls = "ai_tool_calls_total"
    assert only(text, tool_calls, {"gen_ai_tool_name": "add", "outcome": "success"}) == \
        MCP_CALLS["ADD_CALLS"]
    assert only(text, tool_calls, {"gen_ai_tool_name": "word_count", "outcome": "success"}) == \
        MCP_CALLS["WORD_COUNT_CALLS"]
    assert only(text, tool_calls, {"gen_ai_tool_name": "fail", "outcome": "error"}) == \
        MCP_CALLS["FAIL_CALLS"]
    # tools/list, initialize and the transport's spans are no tool calls
    assert total(text, tool_calls) == calls
    duration = "gen_ai_execute_tool_duration_seconds_count"
    assert only(text, duration, {"gen_ai_tool_name": "add", "error_type": ""}) == \
        MCP_CALLS["ADD_CALLS"]
    assert only(text, duration, {"gen_ai_tool_name": "fail", "error_type": "tool_error"}) == \
        MCP_CALLS["FAIL_CALLS"]
    assert total(text, "ai_llm_requests_total") == 0
    assert_mcp_operations(text, calls)
    # each span's trace is an exemplar of the MCP histogram (OpenMetrics only)
    om = exporter.get("/metrics", headers={
        "Accept": "application/openmetrics-text; version=1.0.0"}).text
    fail = [line for line in om.splitlines()
            if line.startswith("mcp_client_operation_duration_seconds_bucket{")
            and 'gen_ai_tool_name="fail"' in line and "# {" in line]
    assert fail and all('trace_id="' in line and 'span_id="' in line for line in fail), fail


def assert_mcp_operations(text: str, calls: int) -> None:
    """the client's requests on mcp.client.operation.duration with the
    MCP conventions' names and labels; the isError result is error_type tool_error."""
    ops = "mcp_client_operation_duration_seconds_count"
    spec_labels = {"mcp_method_name", "gen_ai_tool_name", "gen_ai_prompt_name", "error_type",
                   "mcp_protocol_version", "network_transport"}
    assert only(text, ops, {"mcp_method_name": "initialize", "error_type": ""}) == 1
    assert only(text, ops, {"mcp_method_name": "tools/list", "error_type": ""}) == \
        MCP_CALLS["LIST_CALLS"]
    for tool, error, want in (("add", "", MCP_CALLS["ADD_CALLS"]),
                              ("word_count", "", MCP_CALLS["WORD_COUNT_CALLS"]),
                              ("fail", "tool_error", MCP_CALLS["FAIL_CALLS"])):
        assert only(text, ops, {"mcp_method_name": "tools/call", "gen_ai_tool_name": tool,
                                "error_type": error}) == want
    assert total(text, ops) == 1 + MCP_CALLS["LIST_CALLS"] + calls
    for family in text_string_to_metric_families(text):
        if family.name == "mcp_client_operation_duration_seconds":
            assert all(set(s.labels) - {"le"} == spec_labels for s in family.samples)
    # the instrumentation traces no server-side operation and no session of the mcp SDK
    # (only the ResponseStreamWriter transport writes, which are no operations)
    assert total(text, "mcp_server_operation_duration_seconds_count") == 0
    assert total(text, "mcp_client_session_duration_seconds_count") == 0
