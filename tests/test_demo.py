"""The demo workload: the real `ai-metrics-exporter demo` moves every event-fed AI metric,
marks its series, plays its failure episodes, and plain runs never invent data."""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.aggregator import CONFIG_FED, FEEDS
from exporter.config import PricingConfig
from exporter.events import KIND_OF, LlmCall
from exporter.pricing import PriceTable
from exporter.sources.demo import (
    EPISODES,
    OUTAGE_PROVIDER,
    QUEUE_TARGET,
    STUCK_COMPONENT,
    WORKERS,
    DemoWorkload,
    Schedule,
)
from tests.procs import EXPORTER_BIN, Exporter, sample_value, wait_until

EVENT_FED = sorted({spec.name for specs in FEEDS.values() for spec in specs})
AI_NAMES = EVENT_FED + [spec.name for spec in CONFIG_FED]

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples_by_metric(text: str) -> dict[str, Samples]:
    """metric name → {(sample name, labels): value}, for the AI metrics."""
    out: dict[str, Samples] = {name: {} for name in AI_NAMES}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            for name in AI_NAMES:
                if sample.name == name or (sample.name.startswith(name) and sample.name[
                        len(name):] in ("_bucket", "_sum", "_count", "_created")):
                    key = (sample.name, tuple(sorted(sample.labels.items())))
                    out[name][key] = sample.value
    return out


@pytest.mark.e2e
def test_demo_moves_every_event_fed_ai_metric(demo_exporter: Exporter) -> None:
    first = samples_by_metric(demo_exporter.metrics())
    unmoved = set(EVENT_FED)

    def all_moved() -> bool:
        current = samples_by_metric(demo_exporter.metrics())
        for name in list(unmoved):
            if current[name] and current[name] != first[name]:
                unmoved.discard(name)
        return not unmoved

    try:
        wait_until(all_moved, timeout=45, interval=1.0,
                   what="every event-fed AI metric to move")
    except AssertionError as exc:
        raise AssertionError(f"{exc} (still flat: {sorted(unmoved)})") from None
    last = samples_by_metric(demo_exporter.metrics())
    for name in AI_NAMES:
        assert last[name], f"{name} has no sample in the demo"


@pytest.mark.e2e
def test_demo_series_carry_the_demo_mark(demo_exporter: Exporter) -> None:
    text = demo_exporter.metrics()
    seen = 0
    for family in text_string_to_metric_families(text):
        if not family.name.startswith(("ai_", "gen_ai_")) or family.name.startswith(
                "ai_exporter"):
            continue
        for sample in family.samples:
            if any(sample.name.startswith(name) for name in AI_NAMES):
                assert sample.labels.get("demo") == "true", sample
                seen += 1
    assert seen > 100
    assert (sample_value(text, "ai_exporter_events_total", {"source": "demo"}) or 0) > 0
    aggregates = demo_exporter.get("/api/metrics/ai").json()
    assert aggregates["ai_llm_requests_total"]
    components = demo_exporter.get("/api/status/ai").json()["components"]
    assert {c["component"] for c in components} >= {"planner", "mcp-github", "vllm"}


@pytest.mark.e2e
def test_plain_exporter_never_invents_ai_data(tmp_path: Path) -> None:
    proc = Exporter(tmp_path)
    try:
        time.sleep(1.5)
        text = proc.metrics()
        for family in text_string_to_metric_families(text):
            if family.name.startswith(("ai_", "gen_ai_")) and not family.name.startswith(
                    ("ai_exporter", "ai_budget", "ai_llm_latency", "ai_task_success")):
                assert family.samples == [], family.name
            for sample in family.samples:
                assert "demo" not in sample.labels
        assert sample_value(text, "ai_budget_spend_usd", {"scope": "total"}) == 0
    finally:
        proc.stop()


@pytest.mark.e2e
def test_provider_outage_episode(tmp_path: Path) -> None:
    proc = Exporter(tmp_path, command="demo",
                    args=["--demo.rate=400", "--demo.episode=provider_outage",
                          "--demo.episode-after=0", "--demo.episode-duration=600"])
    try:
        provider = {"gen_ai_provider_name": OUTAGE_PROVIDER}

        def outage_visible() -> bool:
            text = proc.metrics()
            errors = sum(s.value for f in text_string_to_metric_families(text)
                         for s in f.samples if s.name == "ai_llm_requests_total"
                         and s.labels.get("gen_ai_provider_name") == OUTAGE_PROVIDER
                         and s.labels.get("outcome") == "error")
            ok = sum(s.value for f in text_string_to_metric_families(text)
                     for s in f.samples if s.name == "ai_llm_requests_total"
                     and s.labels.get("gen_ai_provider_name") == OUTAGE_PROVIDER
                     and s.labels.get("outcome") == "success")
            return errors > 2 * ok > 0

        wait_until(outage_visible, timeout=30, interval=0.5, what="provider outage errors")
        text = proc.metrics()
        remaining = sample_value(text, "ai_provider_rate_limit_remaining",
                                 {**provider, "limit_type": "requests"})
        capacity = sample_value(text, "ai_provider_rate_limit_capacity",
                                {**provider, "limit_type": "requests"})
        assert remaining is not None and capacity is not None
        assert remaining <= 0.05 * capacity
        assert sample_value(text, "ai_component_info",
                            {"component": "llm-gateway", "status": "degraded"}) == 1
        assert "provider_outage" in proc.get("/readyz").text
    finally:
        proc.stop()


@pytest.mark.e2e
def test_stuck_loop_episode(tmp_path: Path) -> None:
    proc = Exporter(tmp_path, command="demo",
                    args=["--demo.rate=40", "--demo.episode=stuck_loop",
                          "--demo.episode-after=0", "--demo.episode-duration=600"])
    try:
        stuck = {"component": STUCK_COMPONENT}
        wait_until(lambda: sample_value(proc.metrics(), "ai_resolution_active", stuck) == 1,
                   timeout=20, what="the stuck loop to open")
        first = sample_value(proc.metrics(), "ai_resolution_attempts_total", stuck) or 0
        age = sample_value(proc.metrics(), "ai_resolution_oldest_active_age_seconds", stuck)
        wait_until(lambda: (sample_value(proc.metrics(), "ai_resolution_attempts_total",
                                         stuck) or 0) > first + 1,
                   timeout=20, what="attempts on the stuck loop")
        text = proc.metrics()
        assert sample_value(text, "ai_resolution_active", stuck) == 1
        later = sample_value(text, "ai_resolution_oldest_active_age_seconds", stuck)
        assert age is not None and later is not None and later > age
        assert sample_value(text, "ai_resolution_closures_total", stuck) is None
    finally:
        proc.stop()


def test_cost_spike_multiplies_spend() -> None:
    """Normal calls carry no cost (the price table prices them); the spike reports ~20x."""
    prices = PriceTable.from_settings(PricingConfig())

    def spend(episode: str) -> float:
        workload = DemoWorkload(200, Schedule(episode, 0, 3600), seed=7)
        total = 0.0
        for tick in range(120):
            for event in workload.tick(tick * 0.25, 0.25):
                if not isinstance(event, LlmCall):
                    continue
                if event.cost_usd is not None:
                    total += event.cost_usd
                    continue
                rates = prices.rates(event.provider, event.model)
                if rates is None:  # the demo's one unpriced model
                    assert event.model == "qwen2.5-coder-32b"
                    continue
                total += rates.cost(event.input_tokens, event.output_tokens,
                                    event.cache_read_input_tokens,
                                    event.cache_creation_input_tokens,
                                    event.reasoning_output_tokens)
        return total

    normal, spike = spend("none"), spend("cost_spike")
    assert 15 < spike / normal < 25


def test_workload_state_stays_bounded_and_covers_every_kind() -> None:
    workload = DemoWorkload(400, Schedule("", 30, 60), seed=1)
    kinds: Counter[str] = Counter()
    episodes = set()
    for tick in range(4 * 300):  # five simulated minutes, every episode in turn
        for event in workload.tick(tick * 0.25, 0.25):
            kinds[KIND_OF[type(event)]] += 1
        episodes.add(workload.episode)
    assert set(kinds) == set(FEEDS)
    assert episodes == {"", *EPISODES}
    world = workload.world
    assert len(world.queued) <= QUEUE_TARGET * 10
    assert len(world.running) <= WORKERS * 10
    assert len(world.loops) < 200 and len(world.interventions) < 200
    assert len(world.security) < 200


@pytest.mark.e2e
def test_demo_flags_are_validated() -> None:
    for flag, field in (("--demo.rate=1e9", "demo.rate_per_second"),
                        ("--demo.episode=meteor", "demo.episode")):
        result = subprocess.run([EXPORTER_BIN, "demo", flag, "--web.listen-address=127.0.0.1:1"],
                                capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 2, result.stderr
        assert field in result.stderr
