"""The aggregator in process: exact values per kind, lifecycles, caps, bounded memory."""

from __future__ import annotations

import gc
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter import catalog, config, exposition
from exporter.aggregator import MAX_SAMPLES, OTHER, Aggregator, exposed_samples
from exporter.events import (
    AnyEvent,
    ComponentStatus,
    Error,
    Guardian,
    Intervention,
    LlmCall,
    ProviderLimit,
    QualityGate,
    Resolution,
    SecurityEvent,
    Task,
    ToolCall,
)
from exporter.scrape import StaticFamilies
from tests.procs import sample_value
from tests.samples import split_ai_samples


class Clock:
    """A settable clock, so that ages and freshness are exact."""

    def __init__(self, now: float = 1_767_225_600.0) -> None:  # 2026-01-01T00:00:00Z
        self.now = now

    def __call__(self) -> float:
        return self.now


def text(agg: Aggregator) -> str:
    return bytes(generate_latest(StaticFamilies(agg.families()))).decode()


def value(agg: Aggregator, name: str, **labels: str) -> float | None:
    return sample_value(text(agg), name, labels)


def bucket_counts(out: str, name: str, **labels: str) -> dict[str, float]:
    """le → cumulative count of one histogram series."""
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(out):
        for sample in family.samples:
            if sample.name == f"{name}_bucket" and all(
                    sample.labels.get(k) == v for k, v in labels.items()):
                counts[sample.labels["le"]] = sample.value
    return counts


def test_llm_calls_exact() -> None:
    agg = Aggregator(budgets={"total": 100.0, "openai": 50.0}, clock=Clock())
    agg.ingest([
        LlmCall(provider="openai", model="gpt-4o", input_tokens=100, output_tokens=20,
                cached_input_tokens=60, duration_seconds=0.32, cost_usd=0.25,
                time_to_first_token_seconds=0.05),
        LlmCall(provider="openai", model="gpt-4o", input_tokens=4000, output_tokens=0,
                duration_seconds=3.0, cost_usd=0.5),
        LlmCall(provider="openai", model="gpt-4o", duration_seconds=30.0,
                error_type="timeout"),
        LlmCall(provider="anthropic", model="claude", operation="embeddings",
                input_tokens=10, cost_usd=1.0),
    ])
    out = text(agg)
    base = {"gen_ai_operation_name": "chat", "gen_ai_provider_name": "openai",
            "gen_ai_request_model": "gpt-4o"}
    dur = "gen_ai_client_operation_duration_seconds"
    ok = {**base, "error_type": ""}
    buckets = bucket_counts(out, dur, **ok)
    assert buckets["0.16"] == 0 and buckets["0.32"] == 1  # le is inclusive
    assert buckets["2.56"] == 1 and buckets["5.12"] == 2 and buckets["+Inf"] == 2
    assert sample_value(out, f"{dur}_count", ok) == 2
    assert sample_value(out, f"{dur}_sum", ok) == 3.32
    assert sample_value(out, f"{dur}_count", {**base, "error_type": "timeout"}) == 1
    usage = "gen_ai_client_token_usage"
    assert sample_value(out, f"{usage}_count", {**base, "gen_ai_token_type": "input"}) == 2
    assert sample_value(out, f"{usage}_sum", {**base, "gen_ai_token_type": "input"}) == 4100
    # a call that reported no output tokens is not an observation of 0
    assert sample_value(out, f"{usage}_count", {**base, "gen_ai_token_type": "output"}) == 1
    ttft = "gen_ai_client_operation_time_to_first_chunk_seconds"
    assert sample_value(out, f"{ttft}_count", base) == 1
    assert sample_value(out, f"{ttft}_sum", base) == 0.05
    pm = {"gen_ai_provider_name": "openai", "gen_ai_request_model": "gpt-4o"}
    assert sample_value(out, "ai_llm_requests_total",
                        {**pm, "outcome": "success", "error_type": ""}) == 2
    assert sample_value(out, "ai_llm_requests_total",
                        {**pm, "outcome": "error", "error_type": "timeout"}) == 1
    for token_type, n in (("input", 4100), ("output", 20), ("cache_read", 60)):
        assert sample_value(out, "ai_llm_tokens_total",
                            {**pm, "gen_ai_token_type": token_type}) == n
    assert sample_value(out, "ai_llm_cost_usd_total", pm) == 0.75
    assert sample_value(out, "ai_budget_spend_usd", {"scope": "total"}) == 1.75
    assert sample_value(out, "ai_budget_spend_usd", {"scope": "openai"}) == 0.75
    assert sample_value(out, "ai_budget_limit_usd", {"scope": "openai"}) == 50.0


def test_budget_spend_resets_at_midnight_utc() -> None:
    clock = Clock(1_767_225_600.0 - 10)  # 23:59:50 UTC
    agg = Aggregator(clock=clock)
    agg.ingest([LlmCall(provider="p", model="m", cost_usd=2.0)])
    assert value(agg, "ai_budget_spend_usd", scope="total") == 2.0
    clock.now += 20
    assert value(agg, "ai_budget_spend_usd", scope="total") == 0.0
    agg.ingest([LlmCall(provider="p", model="m", cost_usd=0.5)])
    assert value(agg, "ai_budget_spend_usd", scope="total") == 0.5
    assert value(agg, "ai_llm_cost_usd_total", gen_ai_provider_name="p") == 2.5


def test_task_lifecycle() -> None:
    clock = Clock()
    agg = Aggregator(clock=clock)
    cq = {"component": "coder", "queue": "q"}
    agg.ingest([Task(component="coder", queue="q", status="queued", task_id="t1"),
                Task(component="coder", queue="q", status="queued", task_id="t2")])
    clock.now += 30
    assert value(agg, "ai_task_queue_depth", **cq) == 2
    assert value(agg, "ai_task_queue_oldest_age_seconds", **cq) == 30
    agg.ingest([Task(component="coder", queue="q", status="started", task_id="t1")])
    assert value(agg, "ai_task_queue_depth", **cq) == 1
    assert value(agg, "ai_task_in_progress", **cq) == 1
    clock.now += 12.5
    agg.ingest([Task(component="coder", queue="q", status="succeeded", task_id="t1"),
                Task(component="coder", queue="q", status="started", task_id="t2"),
                Task(component="coder", queue="q", status="retried", task_id="t2"),
                Task(component="coder", queue="q", status="failed", duration_seconds=7.0)])
    out = text(agg)
    assert sample_value(out, "ai_task_in_progress", cq) == 0
    assert sample_value(out, "ai_task_queue_depth", cq) == 1  # t2 is back in the queue
    for status, n in (("queued", 2), ("started", 2), ("succeeded", 1), ("retried", 1),
                      ("failed", 1)):
        assert sample_value(out, "ai_tasks_total", {**cq, "status": status}) == n
    done = {**cq, "status": "succeeded"}
    assert sample_value(out, "ai_task_duration_seconds_sum", done) == 12.5
    assert sample_value(out, "ai_task_duration_seconds_sum", {**cq, "status": "failed"}) == 7.0


def test_resolution_loops() -> None:
    clock = Clock()
    agg = Aggregator(clock=clock)
    agg.ingest([Resolution(loop_id="a", action="incident", component="fixer"),
                Resolution(loop_id="a", action="attempt", component="fixer"),
                Resolution(loop_id="a", action="attempt", component="fixer"),
                Resolution(loop_id="b", action="attempt", component="fixer")])
    clock.now += 5
    out = text(agg)
    assert sample_value(out, "ai_resolution_active", {"component": "fixer"}) == 2
    assert sample_value(out, "ai_resolution_attempts_total", {"component": "fixer"}) == 3
    assert sample_value(out, "ai_resolution_incidents_total", {"component": "fixer"}) == 1
    assert sample_value(out, "ai_resolution_oldest_active_age_seconds",
                        {"component": "fixer"}) == 5
    agg.ingest([Resolution(loop_id="a", action="closed", component="fixer"),
                Resolution(loop_id="b", action="closed", component="fixer",
                           outcome="escalated")])
    out = text(agg)
    assert sample_value(out, "ai_resolution_active", {"component": "fixer"}) == 0
    assert sample_value(out, "ai_resolution_closures_total",
                        {"component": "fixer", "outcome": "resolved"}) == 1
    assert sample_value(out, "ai_resolution_closures_total",
                        {"component": "fixer", "outcome": "escalated"}) == 1


def test_intervention_lifecycle() -> None:
    clock = Clock()
    agg = Aggregator(clock=clock)
    tp = {"type": "approval", "priority": "high"}
    agg.ingest([Intervention(intervention_id="i1", type="approval", priority="high",
                             status="requested"),
                Intervention(intervention_id="i2", type="approval", priority="high",
                             status="requested")])
    clock.now += 90
    agg.ingest([Intervention(intervention_id="i1", type="approval", priority="high",
                             status="acknowledged")])
    assert value(agg, "ai_intervention_open", **tp) == 2
    assert value(agg, "ai_intervention_oldest_open_age_seconds", **tp) == 90
    agg.ingest([Intervention(intervention_id="i1", type="approval", priority="high",
                             status="resolved"),
                Intervention(intervention_id="i2", type="approval", priority="high",
                             status="expired")])
    out = text(agg)
    assert sample_value(out, "ai_intervention_open", tp) == 0
    assert sample_value(out, "ai_intervention_time_to_resolve_seconds_count", tp) == 1
    assert sample_value(out, "ai_intervention_time_to_resolve_seconds_sum", tp) == 90
    assert bucket_counts(out, "ai_intervention_time_to_resolve_seconds", **tp)["120.0"] == 1
    assert sample_value(out, "ai_interventions_total", {**tp, "status": "expired"}) == 1


def test_security_events_count_once_and_resolve() -> None:
    agg = Aggregator(clock=Clock())
    cs = {"category": "prompt_injection", "severity": "high"}
    agg.ingest([SecurityEvent(category="prompt_injection", severity="high", event_id="s1"),
                SecurityEvent(category="prompt_injection", severity="high", event_id="s1"),
                SecurityEvent(category="prompt_injection", severity="high", event_id="s2"),
                SecurityEvent(category="prompt_injection", severity="high")])
    assert value(agg, "ai_security_events_total", **cs) == 3
    assert value(agg, "ai_security_unresolved", **cs) == 2
    agg.ingest([SecurityEvent(category="prompt_injection", severity="high", event_id="s1",
                              resolved=True),
                SecurityEvent(category="prompt_injection", severity="high", event_id="s9",
                              resolved=True)])
    assert value(agg, "ai_security_events_total", **cs) == 4  # s9 was never seen open
    assert value(agg, "ai_security_unresolved", **cs) == 1


def test_tools_gates_guardians_errors_limits() -> None:
    agg = Aggregator(clock=Clock())
    agg.ingest([
        ToolCall(tool="grep", agent="coder", duration_seconds=0.02),
        ToolCall(tool="grep", agent="coder", duration_seconds=0.5, error_type="timeout"),
        QualityGate(gate="review", decision="approved", score=0.9),
        QualityGate(gate="review", decision="rejected", score=0.3),
        QualityGate(gate="review", decision="rejected"),
        Guardian(guardian="cerberus", guardian_type="sync", verdict="deny",
                 duration_seconds=0.001),
        Guardian(guardian="cerberus", guardian_type="sync", verdict="allow"),
        Error(component="planner", category="rate_limit"),
        Error(component="planner", category="rate_limit"),
        ProviderLimit(provider="openai", remaining_requests=10, limit_requests=100,
                      reset_at=1_767_225_660.0),
    ])
    out = text(agg)
    tool = {"gen_ai_tool_name": "grep", "gen_ai_agent_name": "coder"}
    assert sample_value(out, "ai_tool_calls_total", {**tool, "outcome": "success"}) == 1
    assert sample_value(out, "ai_tool_calls_total", {**tool, "outcome": "error"}) == 1
    assert sample_value(out, "gen_ai_execute_tool_duration_seconds_count",
                        {**tool, "error_type": "timeout"}) == 1
    assert sample_value(out, "ai_quality_gate_decisions_total",
                        {"gate": "review", "decision": "rejected"}) == 2
    assert sample_value(out, "ai_quality_gate_score_count", {"gate": "review"}) == 2
    assert sample_value(out, "ai_quality_gate_score_sum", {"gate": "review"}) == 1.2
    assert bucket_counts(out, "ai_quality_gate_score", gate="review")["0.3"] == 1
    g = {"guardian": "cerberus", "guardian_type": "sync"}
    assert sample_value(out, "ai_guardian_decisions_total", {**g, "verdict": "deny"}) == 1
    assert sample_value(out, "ai_guardian_duration_seconds_count", g) == 1
    assert sample_value(out, "ai_errors_total",
                        {"component": "planner", "category": "rate_limit"}) == 2
    rl = {"gen_ai_provider_name": "openai", "limit_type": "requests"}
    assert sample_value(out, "ai_provider_rate_limit_remaining", rl) == 10
    assert sample_value(out, "ai_provider_rate_limit_capacity", rl) == 100
    assert sample_value(out, "ai_provider_rate_limit_reset_timestamp_seconds",
                        rl) == 1_767_225_660.0
    assert sample_value(out, "ai_provider_rate_limit_remaining",
                        {"gen_ai_provider_name": "openai", "limit_type": "tokens"}) is None


def test_component_heartbeats_go_stale() -> None:
    clock = Clock()
    agg = Aggregator(heartbeat_timeout=60, clock=clock)
    agg.ingest([ComponentStatus(component="mcp-git", component_kind="mcp_server",
                                version="2.0", status="up"),
                ComponentStatus(component="vllm", component_kind="model_server",
                                status="down")])
    out = text(agg)
    assert sample_value(out, "ai_component_heartbeat_up", {"component": "mcp-git"}) == 1
    assert sample_value(out, "ai_component_heartbeat_up", {"component": "vllm"}) == 0
    assert sample_value(out, "ai_component_info",
                        {"component": "mcp-git", "kind": "mcp_server", "version": "2.0",
                         "status": "up"}) == 1
    clock.now += 61
    assert value(agg, "ai_component_heartbeat_up", component="mcp-git") == 0
    assert value(agg, "ai_component_heartbeat_last_seen_timestamp_seconds",
                 component="mcp-git") == clock.now - 61
    assert [c["fresh"] for c in agg.components()] == [False, False]


def test_extra_labels_mark_every_ai_series() -> None:
    agg = Aggregator(extra_labels={"demo": "true"}, budgets={"total": 1.0}, clock=Clock())
    agg.ingest([LlmCall(provider="p", model="m", duration_seconds=1.0),
                Task(component="c", status="queued", task_id="t")])
    families = agg.families()
    marked = [f for f in families if not f.name.startswith("ai_exporter")]
    assert sum(len(f.samples) for f in marked) > 20
    for family in marked:
        for sample in family.samples:
            assert sample.labels.get("demo") == "true", (family.name, sample)


def test_label_values_are_sanitized() -> None:
    agg = Aggregator(clock=Clock())
    agg.ingest([Error(component="plan\x00ner\n\u202e" + "x" * 300, category="auth")])
    [labels] = [k for k in agg.state.errors.values]
    assert labels[0].startswith("plannerx") and len(labels[0]) == 128


def test_series_cap_folds_into_other_and_counts() -> None:
    agg = Aggregator(max_series=3, clock=Clock())
    agg.ingest([Error(component=f"c{i}", category="auth") for i in range(5)])
    agg.ingest([Error(component="c0", category="auth"), Error(component="c4", category="auth")])
    out = text(agg)
    assert sample_value(out, "ai_errors_total", {"component": "c0"}) == 2
    assert sample_value(out, "ai_errors_total", {"component": "c3"}) is None
    assert sample_value(out, "ai_errors_total",
                        {"component": OTHER, "category": OTHER}) == 3
    assert sample_value(out, "ai_exporter_series_overflow_total",
                        {"metric": "ai_errors_total"}) == 3
    # the cap's label sets plus the one ``other`` set
    assert sample_value(out, "ai_exporter_series", {"metric": "ai_errors_total"}) == 4


def test_llm_rows_past_the_cap_keep_counting_overflow() -> None:
    """The per-combination row cache must not hide observations folded into ``other``."""
    agg = Aggregator(max_series=2, clock=Clock())
    calls = [LlmCall(provider="p", model=f"m{i}", duration_seconds=1.0) for i in range(4)]
    agg.ingest(calls)
    agg.ingest(calls)
    out = text(agg)
    name = "gen_ai_client_operation_duration_seconds"
    assert sample_value(out, f"{name}_count", {"gen_ai_request_model": "m0"}) == 2
    assert sample_value(out, f"{name}_count", {"gen_ai_request_model": OTHER}) == 4
    assert sample_value(out, "ai_exporter_series_overflow_total", {"metric": name}) == 4


def test_concurrent_ingest_and_scrapes_are_exact() -> None:
    agg = Aggregator(clock=Clock())
    stop = threading.Event()

    def scraper() -> None:
        while not stop.is_set():
            agg.families()

    def pusher(n: int) -> None:
        for _ in range(200):
            agg.ingest([Error(component=f"w{n}", category="auth")] * 50)

    scrapers = [threading.Thread(target=scraper) for _ in range(2)]
    pushers = [threading.Thread(target=pusher, args=(n,)) for n in range(4)]
    for t in scrapers + pushers:
        t.start()
    for t in pushers:
        t.join(60)
    stop.set()
    for t in scrapers:
        t.join(60)
    out = text(agg)
    for n in range(4):
        assert sample_value(out, "ai_errors_total", {"component": f"w{n}"}) == 10_000


def test_ten_thousand_series_scrape_completely() -> None:
    agg = Aggregator(clock=Clock())
    agg.ingest([Error(component=f"c{i}", category="auth") for i in range(10_000)])
    [errors] = [f for f in agg.families() if f.name == "ai_errors"]
    assert len(errors.samples) == 10_000
    assert {s.value for s in errors.samples} == {1.0}


def _distinct(n: int, batch: int = 10_000) -> Iterator[list[AnyEvent]]:
    """Events whose label values (and task ids) are all distinct; every fifth batch also
    offers distinct LLM models."""
    for start in range(0, n, batch):
        events: list[AnyEvent] = []
        for i in range(start, start + batch):
            events.append(Error(component=f"agent-{i}", category="internal"))
            events.append(Task(component=f"agent-{i}", status="queued", task_id=f"t-{i}"))
        if start % (5 * batch) == 0:
            events.extend(LlmCall(provider="p", model=f"model-{i}", duration_seconds=1.0)
                          for i in range(start, start + batch))
        yield events


def rss() -> int:
    gc.collect()
    return int(psutil.Process().memory_info().rss)


def test_a_million_distinct_label_values_keep_memory_bounded(fast_tier: bool) -> None:
    cap, tracked = 1000, 5000
    n = 200_000 if fast_tier else 1_000_000  # the fast tier: a fifth, still 40x the caps
    agg = Aggregator(max_series=cap, max_tracked=tracked, clock=Clock())
    batches = _distinct(n)
    for _ in range(10):  # warm up: every store reaches its cap
        agg.ingest(next(batches))
    before = rss()
    for events in batches:
        agg.ingest(events)
    del events
    grown = rss() - before
    # Unbounded state would hold ~2M label sets and ids here: hundreds of MB.
    assert grown < 16 * 1024 * 1024, f"RSS grew by {grown} bytes after reaching the caps"
    for store in agg.stores.values():
        assert len(store.values) <= cap + 1
    assert len(agg.state.queued.where) <= tracked
    assert agg.series_count() < 12 * (cap + 1)
    overflow = agg.overflow
    assert overflow["ai_errors_total"] == n - cap
    assert overflow["ai_tasks_total"] == n - cap
    assert overflow["gen_ai_client_operation_duration_seconds"] == n // 5 - cap
    assert overflow["ai_task_queue_depth"] >= n - tracked
    assert value(agg, "ai_errors_total", component=OTHER) == n - cap


def test_families_copy_state_so_scrapes_do_not_block_ingest() -> None:
    agg = Aggregator(clock=Clock())
    agg.ingest([LlmCall(provider="p", model="m", duration_seconds=1.0)])
    families = agg.families()
    agg.ingest([LlmCall(provider="p", model="m", duration_seconds=1.0)])
    [duration] = [f for f in families if f.name == "gen_ai_client_operation_duration_seconds"]
    counts = [s.value for s in duration.samples if s.name.endswith("_count")]
    assert counts == [1.0]  # the earlier scrape is not changed by later ingest


# --- the total sample budget ---------------------------------------------------------------


def own_samples(agg: Aggregator) -> tuple[int, int]:
    """(samples of event-fed label sets that are not ``other``, samples of ``other`` ones)
    in one scrape, counted from the families as /metrics serves them."""
    return split_ai_samples(agg.families())


def test_sample_budget_folds_new_label_sets_of_every_metric() -> None:
    agg = Aggregator(max_samples=50, clock=Clock())
    agg.ingest([Error(component=f"c{i}", category="auth") for i in range(55)])
    agg.ingest([Task(component="late", status="succeeded"), Error(component="c0",
                                                                   category="auth")])
    out = text(agg)
    assert sample_value(out, "ai_errors_total", {"component": "c0"}) == 2  # still counting
    assert sample_value(out, "ai_errors_total", {"component": "c50"}) is None
    assert sample_value(out, "ai_errors_total", {"component": OTHER}) == 5
    assert sample_value(out, "ai_tasks_total", {"component": OTHER}) == 1
    for metric, folded in (("ai_errors_total", 5), ("ai_tasks_total", 1)):
        assert sample_value(out, "ai_exporter_series_overflow_total",
                            {"metric": metric}) == folded
    assert sample_value(out, "ai_exporter_samples") == 50
    assert sample_value(out, "ai_exporter_samples_limit") == 50
    assert own_samples(agg) == (50, 2)


def test_a_histogram_label_set_takes_its_buckets_sum_and_count() -> None:
    name = catalog.GEN_AI_CLIENT_OPERATION_DURATION.name
    width = exposed_samples(catalog.GEN_AI_CLIENT_OPERATION_DURATION)
    assert width == len(catalog.GEN_AI_CLIENT_OPERATION_DURATION.buckets) + 3
    agg = Aggregator(max_samples=width, clock=Clock())
    # the request counter (1 sample) is admitted after the histogram row, which took it all
    agg.ingest([LlmCall(provider="p", model="m0", duration_seconds=1.0)])
    agg.ingest([LlmCall(provider="p", model="m1", duration_seconds=1.0)] * 2)
    out = text(agg)
    assert sample_value(out, f"{name}_count", {"gen_ai_request_model": "m0"}) == 1
    assert sample_value(out, f"{name}_count", {"gen_ai_request_model": OTHER}) == 2
    assert sample_value(out, "ai_exporter_series_overflow_total", {"metric": name}) == 2
    assert sample_value(out, "ai_llm_requests_total", {"gen_ai_request_model": OTHER}) == 3
    assert own_samples(agg)[0] == agg.budget.used == width


def test_open_items_and_heartbeats_take_from_the_budget() -> None:
    agg = Aggregator(max_samples=5, clock=Clock())
    # tasks_total 1 + queue depth and oldest age 2; then the heartbeat's 3 do not fit
    agg.ingest([Task(component="a", status="queued", task_id="t1"),
                ComponentStatus(component="gw", component_kind="gateway", status="up")])
    out = text(agg)
    assert sample_value(out, "ai_task_queue_depth", {"component": "a"}) == 1
    assert sample_value(out, "ai_component_heartbeat_up", {"component": "gw"}) is None
    assert sample_value(out, "ai_exporter_series_overflow_total",
                        {"metric": "ai_component_heartbeat_up"}) == 1
    # 2 left: a second queue's tasks_total takes 1, its depth and age (2) no longer fit
    agg.ingest([Task(component="b", status="queued", task_id="t2")])
    out = text(agg)
    assert sample_value(out, "ai_tasks_total", {"component": "b"}) == 1
    assert sample_value(out, "ai_task_queue_depth", {"component": OTHER}) == 1
    assert sample_value(out, "ai_exporter_series_overflow_total",
                        {"metric": "ai_task_queue_depth"}) == 1
    assert agg.budget.used == 4
    assert own_samples(agg)[0] == 4


def test_restore_keeps_to_the_budget() -> None:
    source = Aggregator(clock=Clock())
    source.ingest([Error(component=f"c{i}", category="auth") for i in range(100)])
    source.ingest([ComponentStatus(component=f"k{i}", component_kind="agent", status="up")
                   for i in range(10)])
    target = Aggregator(max_samples=20, clock=Clock())
    target.restore(source.snapshot())
    assert target.budget.used <= 20
    assert own_samples(target)[0] == target.budget.used
    # counts kept, folded past the budget
    assert sum(target.state.errors.values.values()) == 100


def test_families_stop_at_the_deadline() -> None:
    agg = Aggregator(clock=Clock())
    agg.ingest([Error(component=f"c{i}", category="auth") for i in range(1000)])
    with pytest.raises(TimeoutError):
        agg.families(deadline=time.monotonic() - 1.0)
    in_time = agg.families(deadline=time.monotonic() + 60.0)
    assert exposition.render(in_time) == exposition.render(agg.families())


def test_default_budget_is_the_configured_default() -> None:
    assert config.AIConfig().max_total_samples == MAX_SAMPLES == Aggregator().budget.limit


# A checkpoint written by the aggregator before it was split into exporter.aggregation
# (one event of each kind, budgets {"openai": 5.0}, clock 1.76e9): the format is unchanged,
# so it restores as it was.
PRE_SPLIT_SNAPSHOT = (
    "{\"stores\":{\"gen_ai_client_operation_duration_seconds\":[[[\"chat\",\"openai\",\"gpt-4o\",\"\"],[0"
    ".0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,1.0,0.0,0.0,0.0,0.0,0.0,0.0,1.5]],[[\"chat\",\"openai\",\"gpt-"
    "4o\",\"timeout\"],[0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,1.0,0.0,0.0,30.0]]],\"gen"
    "_ai_client_token_usage\":[[[\"chat\",\"openai\",\"gpt-4o\",\"input\"],[0.0,0.0,0.0,0.0,1.0,0.0,0."
    "0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,120.0]],[[\"chat\",\"openai\",\"gpt-4o\",\"output\"],[0.0,0.0,"
    "0.0,1.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,30.0]]],\"gen_ai_client_operation_tim"
    "e_to_first_chunk_seconds\":[[[\"chat\",\"openai\",\"gpt-4o\"],[0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,"
    "1.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.2]]],\"ai_llm_requests_total\":[[[\"openai\",\"gpt-4o\","
    "\"success\",\"\"],1.0],[[\"openai\",\"gpt-4o\",\"error\",\"timeout\"],1.0]],\"ai_llm_tokens_total\":[["
    "[\"openai\",\"gpt-4o\",\"input\"],120.0],[[\"openai\",\"gpt-4o\",\"output\"],30.0],[[\"openai\",\"gpt-4"
    "o\",\"cached_input\"],5.0]],\"ai_llm_cost_usd_total\":[[[\"openai\",\"gpt-4o\"],0.01]],\"gen_ai_ex"
    "ecute_tool_duration_seconds\":[[[\"search\",\"a\",\"\"],[0.0,0.0,0.0,0.0,0.0,1.0,0.0,0.0,0.0,0."
    "0,0.0,0.0,0.0,0.0,0.0,0.3]]],\"ai_tool_calls_total\":[[[\"search\",\"a\",\"success\"],1.0]],\"ai_"
    "provider_rate_limit_remaining\":[[[\"openai\",\"requests\"],10.0]],\"ai_provider_rate_limit_ca"
    "pacity\":[[[\"openai\",\"requests\"],100.0]],\"ai_provider_rate_limit_reset_timestamp_seconds\""
    ":[[[\"openai\",\"requests\"],1760000100.0]],\"ai_tasks_total\":[[[\"planner\",\"default\",\"queued\""
    "],1.0],[[\"planner\",\"default\",\"started\"],1.0],[[\"planner\",\"default\",\"succeeded\"],1.0]],\"a"
    "i_task_duration_seconds\":[[[\"planner\",\"default\",\"succeeded\"],[0.0,0.0,0.0,0.0,1.0,0.0,0."
    "0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,3.0]]],\"ai_quality_gate_decisions_total\":[[[\"review\",\"appr"
    "oved\"],1.0]],\"ai_quality_gate_score\":[[[\"review\"],[0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,1.0,0"
    ".0,0.0,0.9]]],\"ai_resolution_attempts_total\":[[[\"c\"],1.0]],\"ai_resolution_incidents_tota"
    "l\":[],\"ai_resolution_closures_total\":[],\"ai_guardian_decisions_total\":[[[\"g\",\"criteria\","
    "\"deny\"],1.0]],\"ai_guardian_duration_seconds\":[[[\"g\",\"criteria\"],[0.0,0.0,0.0,0.0,1.0,0.0"
    ",0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.01]]],\"ai_interventions_total\":[[[\"approval\",\"high\",\"requ"
    "ested\"],1.0]],\"ai_intervention_time_to_resolve_seconds\":[],\"ai_security_events_total\":[["
    "[\"prompt_injection\",\"high\"],1.0]],\"ai_errors_total\":[[[\"c\",\"tool\"],1.0]]},\"tracked\":{\"ai"
    "_task_queue_depth\":{\"items\":[[\"t1\",[\"planner\",\"default\"],1760000000.0]],\"keys\":[[\"planne"
    "r\",\"default\"]]},\"ai_task_in_progress\":{\"items\":[[\"t2\",[\"planner\",\"default\"],1760000000.0"
    "]],\"keys\":[[\"planner\",\"default\"]]},\"ai_resolution_active\":{\"items\":[[\"l1\",[\"c\"],17600000"
    "00.0]],\"keys\":[[\"c\"]]},\"ai_intervention_open\":{\"items\":[[\"i1\",[\"approval\",\"high\"],176000"
    "0000.0]],\"keys\":[[\"approval\",\"high\"]]},\"ai_security_unresolved\":{\"items\":[[\"e1\",[\"prompt"
    "_injection\",\"high\"],1760000000.0]],\"keys\":[[\"prompt_injection\",\"high\"]]}},\"heartbeats\":{"
    "\"mcp\":[\"mcp_server\",\"1.0\",\"up\",1760000000.0]},\"spend_day\":\"2025-10-09\",\"spend\":{\"total\":"
    "0.01,\"openai\":0.01},\"overflow\":{}}")


def issue16_migrated(saved: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint from an earlier release restores as: "" for the labels appended
    since (gen_ai_response_model, gen_ai_tool_type), cached_input renamed cache_read, the
    time-to-first-chunk rows (whose buckets changed) dropped, the new stores empty."""
    stores = dict(saved["stores"])
    for name in ("gen_ai_client_operation_duration_seconds",
                 "gen_ai_execute_tool_duration_seconds", "ai_tool_calls_total"):
        stores[name] = [[[*key, ""], value] for key, value in stores[name]]
    stores["ai_llm_tokens_total"] = [
        [[*key[:-1], "cache_read" if key[-1] == "cached_input" else key[-1]], value]
        for key, value in stores["ai_llm_tokens_total"]]
    stores["gen_ai_client_operation_time_to_first_chunk_seconds"] = []
    return {**saved, "stores": stores}


def test_a_checkpoint_of_the_pre_split_aggregator_restores_unchanged() -> None:
    saved = json.loads(PRE_SPLIT_SNAPSHOT)
    agg = Aggregator(clock=lambda: 1.76e9, budgets={"openai": 5.0})
    agg.restore(saved)
    snapshot = agg.snapshot()
    expected = issue16_migrated(saved)
    new = set(snapshot["stores"]) - set(expected["stores"])
    assert all(snapshot["stores"][name] == [] for name in new)
    expected["stores"].update({name: [] for name in new})
    assert snapshot == expected
    assert agg.components()[0]["component"] == "mcp"
    summary = agg.summary()
    assert summary["ai_budget_spend_usd"] == {"openai": 0.01, "total": 0.01}
