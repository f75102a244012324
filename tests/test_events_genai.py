"""the llm_call / tool_call / task fields of the current GenAI
conventions, cost computed from tokens, unpriced calls, cache savings, agent tokens, the
new histograms and the exemplar offers, on the Python path (tests/test_native.py holds
the native path to it), and one push through a real exporter process."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from exporter import catalog
from exporter.aggregation.stores import HistogramStore
from exporter.aggregator import Aggregator
from exporter.events import EventDecoder, LlmCall, Rejection, Task, ToolCall
from exporter.pricing import PriceTable, Rates
from tests.procs import Exporter, sample_value

NOW = 1.76e9
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
GPT4O = Rates(2.5e-6, 1e-5, 1.25e-6, 3.1e-6, 1.1e-5)


class Prices(PriceTable):
    """gpt-4o at openai priced, nothing else; counts the questions."""

    def __init__(self) -> None:
        super().__init__(library=False)
        self.asked: list[tuple[str, str]] = []

    def rates(self, provider: str, model: str) -> Rates | None:
        self.asked.append((provider, model))
        return GPT4O if (provider, model) == ("openai", "gpt-4o") else None


Offer = tuple[str, tuple[str, ...], float, str, str, float]


def aggregator(**kwargs: Any) -> tuple[Aggregator, Prices, list[Offer]]:
    prices = Prices()
    agg = Aggregator(clock=lambda: NOW, prices=prices, **kwargs)
    offers: list[Offer] = []
    for name, store in agg.stores.items():
        if isinstance(store, HistogramStore):
            def offer(key: tuple[str, ...], value: float, trace_id: str, span_id: str,
                      ts: float, _name: str = name) -> None:
                offers.append((_name, key, value, trace_id, span_id, ts))
            store.offer_exemplar = offer  # type: ignore[method-assign]
    return agg, prices, offers


def counter(agg: Aggregator, spec: catalog.MetricSpec, key: tuple[str, ...]) -> float | None:
    value = agg.stores[spec.name].values.get(key)
    assert value is None or isinstance(value, float)
    return value


def rows(agg: Aggregator, spec: catalog.MetricSpec) -> dict[tuple[str, ...], list[float]]:
    store = agg.stores[spec.name]
    assert isinstance(store, HistogramStore)
    return store.values


def decode(raw: dict[str, Any]) -> Any:
    return EventDecoder().decode_one(json.dumps(raw).encode())


# --- the event model ------------------------------------------------------------------


def test_new_fields_decode_with_their_defaults() -> None:
    event = decode({"kind": "llm_call", "provider": "openai", "model": "gpt-4o"})
    assert isinstance(event, LlmCall)
    assert event.cost_usd is None  # not given: computed
    assert (event.cache_read_input_tokens, event.cache_creation_input_tokens,
            event.reasoning_output_tokens) == (0, 0, 0)
    assert event.time_per_output_chunk_seconds is None
    assert (event.response_model, event.trace_id, event.span_id) == ("", "", "")
    tool = decode({"kind": "tool_call", "tool": "t", "tool_type": "function"})
    assert isinstance(tool, ToolCall) and tool.tool_type == "function"
    task = decode({"kind": "task", "component": "c", "status": "started",
                   "operation": "invoke_agent", "trace_id": TRACE, "span_id": SPAN})
    assert isinstance(task, Task) and task.operation == "invoke_agent"
    assert decode({"kind": "llm_call", "provider": "p", "model": "m",
                   "cost_usd": None}).cost_usd is None


@pytest.mark.parametrize(("field", "value"), [
    ("trace_id", TRACE.upper()), ("trace_id", TRACE[:-1]), ("trace_id", TRACE + "0"),
    ("trace_id", "g" * 32), ("span_id", SPAN.upper()), ("span_id", SPAN * 2),
    ("span_id", "0x" + SPAN[2:]),
])
@pytest.mark.parametrize("kind", ["llm_call", "tool_call", "task"])
def test_malformed_trace_and_span_ids_are_invalid_values(kind: str, field: str,
                                                         value: str) -> None:
    base = {"llm_call": {"provider": "p", "model": "m"}, "tool_call": {"tool": "t"},
            "task": {"component": "c", "status": "started"}}[kind]
    result = decode({"kind": kind, **base, field: value})
    assert isinstance(result, Rejection)
    assert result.reason == "invalid_value"


# --- cost from tokens -----------------------------------------------------------------


def test_cost_is_computed_from_every_token_type_when_not_given() -> None:
    agg, prices, _ = aggregator(budgets={"openai": 5.0})
    call = LlmCall(provider="openai", model="gpt-4o", input_tokens=1000, output_tokens=300,
                   cache_read_input_tokens=400, cache_creation_input_tokens=100,
                   reasoning_output_tokens=50)
    agg.ingest([call, call])
    one = 500 * 2.5e-6 + 400 * 1.25e-6 + 100 * 3.1e-6 + 250 * 1e-5 + 50 * 1.1e-5
    assert one == GPT4O.cost(1000, 300, 400, 100, 50)
    assert counter(agg, catalog.AI_LLM_COST, ("openai", "gpt-4o")) == one + one
    assert agg.spend == {"total": one + one, "openai": one + one}  # budgets count it
    savings = counter(agg, catalog.AI_LLM_CACHE_SAVINGS, ("openai", "gpt-4o"))
    assert savings == 2 * 400 * (2.5e-6 - 1.25e-6)
    assert counter(agg, catalog.AI_LLM_UNPRICED_REQUESTS, ("openai", "gpt-4o")) is None
    assert prices.asked == [("openai", "gpt-4o")]  # once per label set, not per event
    for token_type, n in (("input", 2000), ("output", 600), ("cache_read", 800),
                          ("cache_creation", 200), ("reasoning", 100)):
        assert counter(agg, catalog.AI_LLM_TOKENS, ("openai", "gpt-4o", token_type)) == n


def test_a_given_cost_always_wins_zero_included() -> None:
    agg, _, _ = aggregator()
    agg.ingest([LlmCall(provider="openai", model="gpt-4o", input_tokens=1000,
                        cost_usd=0.5),
                LlmCall(provider="openai", model="gpt-4o", input_tokens=1000, cost_usd=0.0),
                LlmCall(provider="x", model="unknown", input_tokens=10, cost_usd=0.25)])
    assert counter(agg, catalog.AI_LLM_COST, ("openai", "gpt-4o")) == 0.5
    assert counter(agg, catalog.AI_LLM_COST, ("x", "unknown")) == 0.25
    assert agg.stores[catalog.AI_LLM_UNPRICED_REQUESTS.name].values == {}


def test_a_model_without_a_price_costs_zero_and_is_counted() -> None:
    agg, _, _ = aggregator()
    agg.ingest([LlmCall(provider="acme", model="m1", input_tokens=100, output_tokens=20,
                        cache_read_input_tokens=30, reasoning_output_tokens=5)] * 3)
    key = ("acme", "m1")
    assert counter(agg, catalog.AI_LLM_COST, key) is None
    assert agg.spend == {}
    assert counter(agg, catalog.AI_LLM_UNPRICED_REQUESTS, key) == 3
    unpriced = agg.stores[catalog.AI_LLM_UNPRICED_TOKENS.name].values
    assert unpriced == {(*key, "input"): 300, (*key, "output"): 60,
                        (*key, "cache_read"): 90, (*key, "reasoning"): 15}


def test_cached_input_tokens_is_an_alias_the_new_name_wins() -> None:
    agg, _, _ = aggregator()
    agg.ingest([LlmCall(provider="openai", model="gpt-4o", input_tokens=100,
                        cached_input_tokens=40),  # old name alone: counts
                LlmCall(provider="openai", model="gpt-4o", input_tokens=100,
                        cached_input_tokens=40, cache_read_input_tokens=10)])  # new wins
    assert counter(agg, catalog.AI_LLM_TOKENS, ("openai", "gpt-4o", "cache_read")) == 50
    expected = GPT4O.cost(100, 0, 40, 0, 0) + GPT4O.cost(100, 0, 10, 0, 0)
    assert counter(agg, catalog.AI_LLM_COST, ("openai", "gpt-4o")) == expected


def test_agent_tokens_by_component() -> None:
    agg, _, _ = aggregator()
    agg.ingest([LlmCall(provider="openai", model="gpt-4o", input_tokens=7, output_tokens=3,
                        component="planner"),
                LlmCall(provider="openai", model="gpt-4o", input_tokens=1)])
    assert agg.stores[catalog.AI_AGENT_TOKENS.name].values == {
        ("planner", "gpt-4o", "input"): 7, ("planner", "gpt-4o", "output"): 3,
        ("", "gpt-4o", "input"): 1}


# --- histograms -----------------------------------------------------------------------


def test_streaming_histograms_on_the_spec_buckets() -> None:
    assert catalog.GEN_AI_CLIENT_TIME_TO_FIRST_CHUNK.buckets == (
        0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96,
        81.92)
    agg, _, _ = aggregator()
    agg.ingest([LlmCall(provider="openai", model="gpt-4o", time_to_first_token_seconds=50.0,
                        time_per_output_chunk_seconds=0.03, duration_seconds=60.0,
                        response_model="gpt-4o-2024-08-06")])
    key = ("chat", "openai", "gpt-4o")
    ttft = rows(agg, catalog.GEN_AI_CLIENT_TIME_TO_FIRST_CHUNK)[key]
    assert ttft[catalog.TTFT_BUCKETS.index(81.92)] == 1 and ttft[-1] == 50.0
    tpoc = rows(agg, catalog.GEN_AI_CLIENT_TIME_PER_OUTPUT_CHUNK)[key]
    assert tpoc[catalog.TPOC_BUCKETS.index(0.04)] == 1 and tpoc[-1] == 0.03
    duration = agg.stores[catalog.GEN_AI_CLIENT_OPERATION_DURATION.name].values
    assert list(duration) == [(*key, "", "gpt-4o-2024-08-06")]


def test_tool_type_and_invoke_agent_duration() -> None:
    agg, _, _ = aggregator()
    agg.ingest([ToolCall(tool="search", agent="a", tool_type="function", duration_seconds=0.2),
                Task(component="planner", status="succeeded", operation="invoke_agent",
                     duration_seconds=3.0),
                Task(component="planner", status="failed", operation="invoke_agent",
                     duration_seconds=1.0),
                Task(component="planner", status="succeeded", duration_seconds=9.0)])
    tools = agg.stores[catalog.GEN_AI_EXECUTE_TOOL_DURATION.name].values
    assert list(tools) == [("search", "a", "", "function")]
    calls = agg.stores[catalog.AI_TOOL_CALLS.name].values
    assert calls == {("search", "a", "success", "function"): 1.0}
    invoke = rows(agg, catalog.GEN_AI_INVOKE_AGENT_DURATION)
    assert {k: v[-1] for k, v in invoke.items()} == {("planner", ""): 3.0,
                                                     ("planner", "failed"): 1.0}


def test_every_histogram_observation_with_a_trace_id_offers_an_exemplar() -> None:
    agg, _, offers = aggregator()
    agg.ingest([LlmCall(provider="openai", model="gpt-4o", duration_seconds=1.5,
                        time_to_first_token_seconds=0.2, time_per_output_chunk_seconds=0.01,
                        input_tokens=10, output_tokens=2, trace_id=TRACE, span_id=SPAN),
                LlmCall(provider="openai", model="gpt-4o", duration_seconds=1.5),  # no trace
                ToolCall(tool="t", duration_seconds=0.5, trace_id=TRACE),
                Task(component="c", status="succeeded", operation="invoke_agent",
                     duration_seconds=2.0, trace_id=TRACE, span_id=SPAN)])
    llm = ("chat", "openai", "gpt-4o")
    names = catalog
    assert offers == [
        (names.GEN_AI_CLIENT_OPERATION_DURATION.name, (*llm, "", ""), 1.5, TRACE, SPAN, NOW),
        (names.GEN_AI_CLIENT_TIME_TO_FIRST_CHUNK.name, llm, 0.2, TRACE, SPAN, NOW),
        (names.GEN_AI_CLIENT_TIME_PER_OUTPUT_CHUNK.name, llm, 0.01, TRACE, SPAN, NOW),
        (names.GEN_AI_CLIENT_TOKEN_USAGE.name, (*llm, "input"), 10.0, TRACE, SPAN, NOW),
        (names.GEN_AI_CLIENT_TOKEN_USAGE.name, (*llm, "output"), 2.0, TRACE, SPAN, NOW),
        (names.GEN_AI_EXECUTE_TOOL_DURATION.name, ("t", "", "", ""), 0.5, TRACE, "", NOW),
        (names.AI_TASK_DURATION.name, ("c", "default", "succeeded"), 2.0, TRACE, SPAN, NOW),
        (names.GEN_AI_INVOKE_AGENT_DURATION.name, ("c", ""), 2.0, TRACE, SPAN, NOW),
    ]


def test_an_exemplar_of_a_folded_label_set_is_offered_for_other() -> None:
    agg, _, offers = aggregator(max_series=1)
    agg.ingest([ToolCall(tool="a", duration_seconds=0.5, trace_id=TRACE),
                ToolCall(tool="b", duration_seconds=0.5, trace_id=TRACE)])
    assert [o[1] for o in offers] == [("a", "", "", ""), ("other",) * 4]


def test_every_metric_says_its_semantic_convention() -> None:
    for spec in catalog.all_metrics():
        if spec.otel_name.startswith(("gen_ai.", "mcp.")):
            assert spec.convention == catalog.SEMCONV_GENAI, spec.name
        elif spec.otel_name.startswith(("ai.", "ai_exporter.")):
            assert spec.convention == "exporter", spec.name
        else:
            assert "development" in spec.convention or "stable" in spec.convention, spec.name
    text = Path("docs/metrics.md").read_text(encoding="utf-8")
    assert "| Semantic convention |" in text
    assert f"`gen_ai.client.operation.time_per_output_chunk` | {catalog.SEMCONV_GENAI}" in text


# --- the push path, end to end --------------------------------------------------------


@pytest.mark.e2e
def test_a_call_without_a_cost_shows_the_right_dollars_on_metrics(tmp_path: Path) -> None:
    """A real exporter with the bundled genai-prices table and a per-model override: the
    dollars on /metrics are the tokens times the table's rates."""
    table = PriceTable()
    table.load()
    rates = table.rates("openai", "gpt-4o")
    assert rates is not None, "genai-prices knows gpt-4o"
    config = {"ai": {"pricing": {"overrides": [
        {"model": "house-llm", "provider": "selfhosted", "input": 1.0, "output": 2.0}]}}}
    proc = Exporter(tmp_path, config=config)
    try:
        events = [
            {"kind": "llm_call", "provider": "openai", "model": "gpt-4o",
             "input_tokens": 12000, "output_tokens": 3000, "cache_read_input_tokens": 2000,
             "duration_seconds": 1.2, "trace_id": TRACE, "span_id": SPAN},
            {"kind": "llm_call", "provider": "selfhosted", "model": "house-llm",
             "input_tokens": 1_000_000, "output_tokens": 500_000},
            {"kind": "llm_call", "provider": "acme", "model": "nobody-prices-me",
             "input_tokens": 50, "output_tokens": 5},
        ]
        response = proc.post("/api/v1/events", data=json.dumps(events).encode(),
                             headers={"Content-Type": "application/json"})
        assert response.status_code in (200, 202), response.text
        text = proc.metrics()
    finally:
        proc.stop()
    openai = {"gen_ai_provider_name": "openai", "gen_ai_request_model": "gpt-4o"}
    expected = rates.cost(12000, 3000, 2000, 0, 0)
    cost = sample_value(text, "ai_llm_cost_usd_total", openai)
    assert cost is not None and math.isclose(cost, expected, rel_tol=1e-12), (cost, expected)
    house = {"gen_ai_provider_name": "selfhosted", "gen_ai_request_model": "house-llm"}
    assert sample_value(text, "ai_llm_cost_usd_total", house) == pytest.approx(2.0)
    acme = {"gen_ai_provider_name": "acme", "gen_ai_request_model": "nobody-prices-me"}
    assert sample_value(text, "ai_llm_cost_usd_total", acme) is None
    assert sample_value(text, "ai_llm_unpriced_requests_total", acme) == 1
    assert sample_value(text, "ai_llm_unpriced_tokens_total",
                        {**acme, "gen_ai_token_type": "input"}) == 50
    savings = sample_value(text, "ai_llm_cache_savings_usd_total", openai)
    assert savings == pytest.approx(2000 * (rates.input - rates.cache_read))
    assert sample_value(text, "ai_llm_tokens_total",
                        {**openai, "gen_ai_token_type": "cache_read"}) == 2000
    spend = sample_value(text, "ai_budget_spend_usd", {"scope": "total"})
    assert spend is None or spend == pytest.approx(expected + 2.0)
