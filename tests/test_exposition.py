"""The fast text renderer writes exactly what prometheus_client's generate_latest writes."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    StateSetMetricFamily,
    SummaryMetricFamily,
    UnknownMetricFamily,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString

from exporter import config, exposition
from exporter.runtime import Runtime
from exporter.scrape import StaticFamilies


def _reference(families: Iterable[Metric]) -> bytes:
    return bytes(generate_latest(StaticFamilies(list(families))))


def _edge_families() -> list[Metric]:
    counter = CounterMetricFamily("jobs", "Jobs done.\nSecond line with \\ backslash.",
                                  labels=["zeta", "alpha"])
    counter.add_metric(["z", "a"], 3.0, created=1700000000.5)
    counter.add_metric(['quote " back \\ nl \n', "ünïcödé ✓"], 1e21)
    gauge = GaugeMetricFamily("temperature", "Temp.", labels=["room"])
    gauge.add_metric(["x"], float("nan"))
    gauge.add_metric(["y"], float("inf"), timestamp=1700000000.123)
    gauge.add_metric(["z"], float("-inf"))
    gauge.add_metric(["w"], 12345678.0)
    plain = GaugeMetricFamily("plain", "No labels.", value=-0.0)
    histogram = HistogramMetricFamily("latency_seconds", "Latency.", labels=["route"])
    histogram.add_metric(["/a"], [("0.1", 1.0), ("1.0", 3.0), ("+Inf", 4.0)], 2.5)
    summary = SummaryMetricFamily("size_bytes", "Size.", count_value=3, sum_value=12.0)
    info = InfoMetricFamily("build", "Build.", value={"version": "1.0", "commit": "abc"})
    states = StateSetMetricFamily("mode", "Mode.", value={"on": True, "off": False})
    unknown = UnknownMetricFamily("mystery", "Unknown.", value=7)
    empty = GaugeMetricFamily("empty", "No samples.", labels=["a"])
    return [counter, gauge, plain, histogram, summary, info, states, unknown, empty]


def test_edge_cases_identical() -> None:
    families = _edge_families()
    assert exposition.render(families) == _reference(families)


def test_parses_back() -> None:
    text = exposition.render(_edge_families()).decode()
    parsed = {f.name: f for f in text_string_to_metric_families(text)}
    sample = next(s for s in parsed["jobs"].samples if s.labels.get("alpha") == "ünïcödé ✓")
    assert sample.labels["zeta"] == 'quote " back \\ nl \n'
    assert sample.value == 1e21


def test_real_runtime_families_identical() -> None:
    runtime = Runtime(config.build({}))
    try:
        raws = [json.dumps(e).encode() for e in (
            {"kind": "llm_call", "provider": "openai", "model": "gpt-x", "input_tokens": 10,
             "output_tokens": 20, "duration_seconds": 1.5, "cost_usd": 0.01},
            {"kind": "task", "component": 'a"b\\c', "status": "succeeded",
             "duration_seconds": 3.0},
            {"kind": "error", "component": "x", "category": "tool"},
        )]
        accepted, rejected = runtime.ingestor.ingest_raw("push", raws)
        assert (accepted, rejected) == (3, [])
        families = runtime.families()
        assert exposition.render(families) == _reference(families)
    finally:
        runtime.stop()


@settings(max_examples=200, deadline=None)
@given(st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(2**60), 2**60))
def test_format_value_matches_go_formatting(value: float) -> None:
    assert exposition.format_value(value) == floatToGoString(value)  # type: ignore[no-untyped-call]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=20), st.text(max_size=20),
                          st.floats(allow_nan=False)), max_size=20))
def test_random_label_values_identical(rows: list[tuple[str, str, float]]) -> None:
    family = GaugeMetricFamily("g", "G.", labels=["b_label", "a_label"])
    seen: set[tuple[str, str]] = set()
    for b, a, value in rows:
        if (b, a) not in seen:
            seen.add((b, a))
            family.add_metric([b, a], value)
    assert exposition.render([family]) == _reference([family])


def test_render_before_the_deadline_is_identical() -> None:
    families = _edge_families()
    assert exposition.render(families, deadline=time.monotonic() + 60) == _reference(families)


def test_render_past_the_deadline_stops_without_the_family_in_the_error() -> None:
    """A collector's render in its own thread gives up at its deadline; the error names no
    family (a family's repr holds every sample: megabytes in a log line)."""
    family = GaugeMetricFamily("g", "G.", labels=["a"])
    for i in range(3 * exposition._CHUNK):
        family.add_metric([str(i)], 1.0)
    with pytest.raises(TimeoutError) as raised:
        exposition.render([family], deadline=time.monotonic() - 1)
    assert raised.value.args == ("past the scrape deadline",)


def test_runtime_serves_the_pieces_its_collectors_rendered() -> None:
    """/metrics joins the collectors' own renders and the runtime's families, in order:
    the same bytes as rendering the whole collection at once."""
    runtime = Runtime(config.build({}))
    try:
        rendered: list[str] = []
        families = runtime.families(rendered=rendered)
        assert exposition.join(rendered) == exposition.render(families)
        assert b"ai_exporter_collector_success" in runtime.render_metrics()
    finally:
        runtime.stop()
