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
from prometheus_client.openmetrics import exposition as om
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString

from exporter import catalog, config, exposition
from exporter.aggregation.stores import CounterStore, HistogramStore, SampleBudget
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


# --- the AI stores' families, which write their own lines ------------------------------------
_LABEL_TEXT = st.text(st.characters(codec="utf-8"), max_size=12)


def _store_families(rows: list[tuple[str, str, str, float]], extra: tuple[str, ...],
                    traced: bool) -> list[Metric]:
    """A task counter and a task-duration histogram (labels that sort before and after
    ``le``) filled with ``rows``, rendered through the stores' kept label texts."""
    overflow: dict[str, float] = {}
    budget = SampleBudget(10_000)
    counter = CounterStore(catalog.AI_TASKS, 50, overflow, budget)
    histogram = HistogramStore(catalog.AI_TASK_DURATION, 50, overflow, budget)
    for n, (component, queue, status, value) in enumerate(rows):
        key = (component, queue, status)
        counter.inc(key, value)
        histogram.observe(key, value)
        if traced and n % 2 == 0:
            histogram.offer_exemplar(key, value, f"{n + 1:032x}", f"{n + 1:016x}", 1.7e9 + n)
    values = tuple(f"x{i}\"\\" for i in range(len(extra)))
    exemplars = histogram.exemplar_snapshot()
    return [counter.family(extra, values, counter.snapshot()),
            histogram.family(extra, values, histogram.snapshot(), exemplars)]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(_LABEL_TEXT, _LABEL_TEXT, st.sampled_from(["ok", "failed", 'q"\\']),
                          st.floats(0, 1e7, allow_nan=False)), max_size=30),
       st.sampled_from([(), ("demo",), ("zone", "aa_first")]), st.booleans())
def test_store_families_write_what_prometheus_client_writes(
        rows: list[tuple[str, str, str, float]], extra: tuple[str, ...], traced: bool) -> None:
    """Both formats, label values that need escaping, labels on both sides of ``le``,
    extra labels, exemplars, values past Python's repr range: the stores' own lines are
    the library's, for the samples the same families build."""
    text = exposition.render(_store_families(rows, extra, traced))
    assert text == _reference(_store_families(rows, extra, traced))
    families = _store_families(rows, extra, traced)
    ours = exposition.render_openmetrics(families)
    # The reference reads ``samples`` (built when read) of equal families.
    assert ours == bytes(om.generate_latest(  # type: ignore[no-untyped-call]
        StaticFamilies(_store_families(rows, extra, traced))))


def test_store_families_keep_each_label_sets_text_between_scrapes() -> None:
    rows = [("a", "q", "ok", 1.0), ("b", "q", "ok", 2.0)]
    overflow: dict[str, float] = {}
    store = CounterStore(catalog.AI_TASKS, 50, overflow, SampleBudget(100))
    for component, queue, status, value in rows:
        store.inc((component, queue, status), value)
    first = exposition.render([store.family((), (), store.snapshot())])
    store.inc(("a", "q", "ok"), 5.0)
    second = exposition.render([store.family((), (), store.snapshot())])
    assert b'ai_tasks_total{component="a",queue="q",status="ok"} 6.0\n' in second
    assert first != second
    # A reload that changes the extra labels changes every line's labels.
    third = exposition.render([store.family(("demo",), ("true",), store.snapshot())])
    assert b'ai_tasks_total{component="a",demo="true",queue="q",status="ok"} 6.0\n' in third


def test_an_exemplar_offered_after_the_scrape_copy_renders_as_the_library_writes_it() -> None:
    """The scrape copy hands out the exemplar rows themselves: an offer landing between the
    copy and the render is still a tuple there, and renders like a converted one."""
    store = HistogramStore(catalog.AI_TASK_DURATION, 50, {}, SampleBudget(1_000))
    key = ("c", "q", "ok")
    store.observe(key, 0.2)
    store.offer_exemplar(key, 0.2, "a" * 32, "b" * 16, 1.7e9)
    exemplars = store.exemplar_snapshot()
    store.observe(key, 30.0)
    store.offer_exemplar(key, 30.0, "c" * 32, "", 1.7e9 + 1)  # after the copy
    rows = store.snapshot()
    ours = exposition.render_openmetrics([store.family((), (), rows, exemplars)])
    reference = bytes(om.generate_latest(  # type: ignore[no-untyped-call]
        StaticFamilies([store.family((), (), rows, exemplars)])))
    assert ours == reference
    assert b'# {trace_id="' + b"c" * 32 + b'"} 30.0 1700000001.0' in ours
