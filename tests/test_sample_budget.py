"""The total AI sample budget and the scrape deadline, against the real exporter process.

A cardinality attack (distinct label values in every kind, pushed over HTTP) must leave
/metrics bounded by ``ai.max_total_samples`` with the excess folded into ``other`` and
counted, and an AI state too large to render before the scrape deadline must fail the
``ai`` collector alone while the host metrics are still served.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from exporter.aggregator import OTHER, exposed_samples
from tests.procs import Exporter, sample_value, wait_until
from tests.samples import EVENT_FED, promtool_check, split_ai_samples

pytestmark = pytest.mark.e2e

NDJSON = {"Content-Type": "application/x-ndjson"}
URL = "/api/v1/events"


def attack(start: int, count: int) -> bytes:
    """``count`` label sets not seen before in every kind, as NDJSON."""
    events: list[dict[str, Any]] = []
    for i in range(start, start + count):
        s = f"x{i}"
        events += [
            {"kind": "llm_call", "provider": "p" + s, "model": "m" + s, "input_tokens": 10,
             "output_tokens": 20, "cached_input_tokens": 5, "duration_seconds": 0.5,
             "time_to_first_token_seconds": 0.1, "cost_usd": 0.01},
            {"kind": "task", "component": "c" + s, "status": "queued", "task_id": "t" + s},
            {"kind": "task", "component": "c" + s, "status": "succeeded",
             "duration_seconds": 1.0},
            {"kind": "tool_call", "tool": "t" + s, "duration_seconds": 0.2},
            {"kind": "quality_gate", "gate": "g" + s, "decision": "approved", "score": 0.5},
            {"kind": "resolution", "loop_id": "l" + s, "action": "incident",
             "component": "r" + s},
            {"kind": "intervention", "intervention_id": "i" + s, "type": "t" + s,
             "status": "requested"},
            {"kind": "error", "component": "c" + s, "category": "auth"},
            {"kind": "provider_limit", "provider": "p" + s, "remaining_requests": 5},
            {"kind": "component_status", "component": "c" + s, "component_kind": "agent",
             "status": "up"},
        ]
    return "\n".join(json.dumps(e) for e in events).encode()


def llm_calls(count: int) -> bytes:
    """``count`` LLM calls of distinct models: 75 samples each (four histograms)."""
    return "\n".join(json.dumps(
        {"kind": "llm_call", "provider": "p", "model": f"m{i}", "input_tokens": 10,
         "output_tokens": 20, "cached_input_tokens": 5, "duration_seconds": 0.5,
         "time_to_first_token_seconds": 0.1, "cost_usd": 0.01}) for i in range(count)).encode()


def push(proc: Exporter, body: bytes) -> None:
    response = requests.post(f"{proc.url}{URL}", data=body, headers=NDJSON, timeout=60)
    assert response.status_code == 200, response.text[:500]


def ai_samples(text: str) -> tuple[int, int]:
    """(samples of event-fed AI label sets other than ``other``, samples of ``other``)."""
    return split_ai_samples(text_string_to_metric_families(text))


def success(text: str, collector: str) -> float | None:
    return sample_value(text, "ai_exporter_collector_success", {"collector": collector})


def line_value(text: str, series: str) -> float | None:
    """The value of the sample written exactly ``series`` (name and labels as the exporter
    renders them): a scan, for scrapes too large for the text parser (~16 s for 225,000
    samples)."""
    at = text.find(f"\n{series} ")
    if at < 0:
        return None
    return float(text[at + len(series) + 2:text.index("\n", at + 1)])


def assert_host_metrics_served(text: str) -> None:
    for collector in ("cpu", "memory", "loadavg"):
        assert success(text, collector) == 1.0, collector
    assert sample_value(text, "system_cpu_time_seconds_total") is not None
    assert sample_value(text, "system_memory_usage_bytes") is not None


def test_cardinality_attack_is_bounded_by_the_total_sample_budget(tmp_path: Path) -> None:
    budget = 3000
    groups = 1000  # distinct label sets per kind: ~100k samples without the budget
    proc = Exporter(tmp_path, config={"ai": {"max_total_samples": budget,
                                             "log_interval_seconds": 60}})
    try:
        for start in range(0, groups, 250):
            push(proc, attack(start, 250))
        text = proc.metrics()
        own, other = ai_samples(text)
        assert own == sample_value(text, "ai_exporter_samples")
        assert budget - 20 <= own <= budget  # full, short of at most one histogram row
        # one ``other`` label set at most per metric
        assert other <= sum(exposed_samples(spec) for spec in EVENT_FED.values())
        assert sample_value(text, "ai_exporter_samples_limit") == budget

        # Every error folded past the budget is counted, and counted in ``other``.
        errors = [s for f in text_string_to_metric_families(text) for s in f.samples
                  if s.name == "ai_errors_total" and s.labels["component"] != OTHER]
        folded = groups - len(errors)
        assert folded > 0
        assert sample_value(text, "ai_exporter_series_overflow_total",
                            {"metric": "ai_errors_total"}) == folded
        assert sample_value(text, "ai_errors_total", {"component": OTHER}) == folded
        for metric in ("gen_ai_client_operation_duration_seconds", "ai_task_queue_depth",
                       "ai_component_heartbeat_up"):
            overflow = sample_value(text, "ai_exporter_series_overflow_total",
                                    {"metric": metric})
            assert overflow is not None and overflow > 0, metric

        assert success(text, "ai") == 1.0
        assert_host_metrics_served(text)
        promtool_check(text)
    finally:
        proc.stop()


def test_ai_render_past_the_scrape_deadline_fails_alone(tmp_path: Path) -> None:
    """Many series and Prometheus's own timeout header asking for a short scrape: the ai
    collector reports success 0 at the deadline, the host collectors are served, and the
    next scrape with time enough serves the AI series again (the thread stopped)."""
    proc = Exporter(tmp_path, config={"ai": {"max_total_samples": 1_000_000,
                                             "log_interval_seconds": 60},
                                      "collectors": {"timeout_seconds": 60}})
    try:
        push(proc, llm_calls(3000))  # 225,000 samples
        full = proc.get("/metrics", timeout=60).text
        assert line_value(full, 'ai_exporter_collector_success{collector="ai"}') == 1.0
        assert line_value(full, "ai_exporter_samples") == 225_000
        took = line_value(full, 'ai_exporter_collector_duration_seconds{collector="ai"}')
        timeout = 0.2  # the header's seconds; it leaves the collectors half of it
        deadline = timeout / 2
        assert took is not None and took > 2 * deadline, f"the AI render took {took} s only"

        started = time.monotonic()
        response = proc.get("/metrics", timeout=30,
                            headers={"X-Prometheus-Scrape-Timeout-Seconds": str(timeout)})
        elapsed = time.monotonic() - started
        assert response.status_code == 200
        text = response.text
        assert elapsed < 1.0 + deadline, f"served after {elapsed:.2f} s"
        assert success(text, "ai") == 0.0
        assert "gen_ai_client_operation_duration_seconds_bucket" not in text
        assert_host_metrics_served(text)
        promtool_check(text)

        def ai_served_again() -> bool:
            again = proc.get("/metrics", timeout=60).text
            return line_value(again, 'ai_exporter_collector_success{collector="ai"}') == 1.0
        # "still running from an earlier scrape" (success 0) unless the thread stopped
        wait_until(ai_served_again, timeout=30, interval=0.2, what="ai collector success 1")
    finally:
        proc.stop()
