"""Pure parts of the OTLP push: translation, delta baseline, settings, collection gate."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.sdk.metrics.export import AggregationTemporality
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    StateSetMetricFamily,
    SummaryMetricFamily,
)
from prometheus_client.metrics_core import Metric

from exporter import catalog, config, exposition
from exporter.config import ConfigError
from exporter.otlp.encode import DirectEncoder
from exporter.otlp.gate import CollectGate
from exporter.otlp.settings import resolve
from exporter.otlp.translate import (
    SLICE,
    DeltaBaseline,
    HistValue,
    OtelMetric,
    Translator,
    batches,
    otlp_unit,
    to_metrics_data,
)
from tests.otlp_receiver import collector_name, prometheus_name, scraped, to_prometheus

START_NS = 1_700_000_000 * 10**9
NOW_NS = START_NS + 60 * 10**9


def _by_name(metrics: list[OtelMetric]) -> dict[str, OtelMetric]:
    return {m.name: m for m in metrics}


def test_counter_gets_catalog_identity_and_created_start_time() -> None:
    family = catalog.SYSTEM_CPU_TIME.family()
    family.add_metric(["0", "user"], 12.5, created=1_600_000_000.25)
    family.add_metric(["0", "idle"], 100.0)
    (metric,) = Translator().translate([family], START_NS)
    assert (metric.name, metric.unit, metric.kind) == ("system.cpu.time", "s", "counter")
    assert metric.description == catalog.SYSTEM_CPU_TIME.description
    user, idle = metric.series
    assert user.attributes == {"cpu.logical_number": "0", "cpu.mode": "user"}
    assert user.value == 12.5 and user.start_ns == 1_600_000_000_250_000_000
    assert idle.value == 100.0 and idle.start_ns == START_NS


def test_gauge_ratio_and_extra_labels_keep_their_names() -> None:
    family = catalog.SYSTEM_CPU_UTILIZATION.family(extra_labels=["demo"])
    family.add_metric(["user", "true"], 0.25)
    (metric,) = Translator().translate([family], START_NS)
    assert (metric.name, metric.unit, metric.kind) == ("system.cpu.utilization", "1", "gauge")
    assert metric.series[0].attributes == {"cpu.mode": "user", "demo": "true"}


def test_histogram_buckets_become_explicit_bounds() -> None:
    family = catalog.GEN_AI_CLIENT_OPERATION_DURATION.family()
    bounds = catalog.DURATION_BUCKETS
    cumulative = [min(i, 5) for i in range(len(bounds))]
    buckets = [(str(b), float(c)) for b, c in zip(bounds, cumulative, strict=True)]
    buckets.append(("+Inf", 7.0))
    family.add_metric(["chat", "openai", "gpt-4o", ""], buckets, 3.5)
    (metric,) = Translator().translate([family], START_NS)
    assert (metric.name, metric.unit, metric.kind) == (
        "gen_ai.client.operation.duration", "s", "histogram")
    (series,) = metric.series
    value = series.value
    assert isinstance(value, HistValue)
    assert value.bounds == bounds
    assert sum(value.counts) == value.count == 7
    assert list(value.counts[:6]) == [0, 1, 1, 1, 1, 1] and value.counts[-1] == 2
    assert value.total == 3.5
    assert series.attributes["gen_ai.request.model"] == "gpt-4o"


def test_families_outside_the_catalog_keep_their_prometheus_names() -> None:
    counter = CounterMetricFamily("process_cpu_seconds", "CPU time", value=1.5)
    gauge = GaugeMetricFamily("process_open_fds", "fds", value=9)
    info = InfoMetricFamily("thing", "some info", value={"a": "b"})
    summary = SummaryMetricFamily("latency_seconds", "lat", count_value=2, sum_value=0.5)
    empty = GaugeMetricFamily("nothing_here", "no samples", labels=["x"])
    metrics = _by_name(Translator().translate([counter, gauge, info, summary, empty], START_NS))
    assert set(metrics) == {"process_cpu_seconds_total", "process_open_fds", "thing_info",
                            "latency_seconds_count", "latency_seconds_sum"}
    assert metrics["process_cpu_seconds_total"].kind == "counter"
    assert metrics["thing_info"].series[0].attributes == {"a": "b"}
    assert metrics["latency_seconds_count"].series[0].value == 2.0


def test_round_trip_through_the_wire_format_gives_the_served_names() -> None:
    """Encode as the OTLP exporter does, translate back by the compatibility rules."""
    families = []
    for spec in (catalog.SYSTEM_CPU_TIME, catalog.SYSTEM_MEMORY_UTILIZATION,
                 catalog.AI_LLM_COST, catalog.AI_COMPONENT_UP, catalog.AI_TASK_DURATION):
        family = spec.family()
        labels = [f"v{i}" for i in range(len(spec.labels))]
        if spec.kind is catalog.Kind.HISTOGRAM:
            family.add_metric(labels, [("1.0", 1.0), ("+Inf", 2.0)], 4.0)
        else:
            family.add_metric(labels, 3.0)
        families.append(family)
    metrics = Translator().translate(families, START_NS)
    data = to_metrics_data(metrics, Resource({"service.name": "t"}), InstrumentationScope("t"),
                           NOW_NS, AggregationTemporality.CUMULATIVE)
    request = encode_metrics(data)
    names = {prometheus_name(m) for rm in request.resource_metrics
             for sm in rm.scope_metrics for m in sm.metrics}
    assert names == {"system_cpu_time_seconds_total", "system_memory_utilization_ratio",
                     "ai_llm_cost_usd_total", "ai_component_up", "ai_task_duration_seconds"}
    samples = to_prometheus(request)
    assert samples[("ai_task_duration_seconds_bucket",
                    frozenset({("component", "v0"), ("queue", "v1"), ("status", "v2"),
                               ("le", "1.0")}))] == 1.0
    sums = [m for rm in request.resource_metrics for sm in rm.scope_metrics
            for m in sm.metrics if m.WhichOneof("data") == "sum"]
    assert all(m.sum.is_monotonic and m.sum.aggregation_temporality == 2 for m in sums)
    hist = next(m for rm in request.resource_metrics for sm in rm.scope_metrics
                for m in sm.metrics if m.WhichOneof("data") == "histogram")
    point = hist.histogram.data_points[0]
    assert not point.HasField("min") and not point.HasField("max")


# --- units and names through a collector -------------------------------------------------
_KINDS = {catalog.Kind.COUNTER: "counter", catalog.Kind.GAUGE: "gauge",
          catalog.Kind.HISTOGRAM: "histogram"}


def test_currency_is_sent_so_a_collector_derives_the_served_suffix() -> None:
    assert otlp_unit("USD") == "usd"
    assert collector_name("ai.llm.cost", "USD", "counter") == "ai_llm_cost_USD_total"
    assert collector_name("ai.llm.cost", "usd", "counter") == "ai_llm_cost_usd_total"
    for unit in ("s", "By", "1", "{token}", "By/s", "%", ""):
        assert otlp_unit(unit) == unit


def test_every_catalog_metric_gets_its_served_name_through_a_collector() -> None:
    """For every catalog metric: the OTLP name, unit and type it is pushed with, run
    through a collector's translation, give the names /metrics serves."""
    families: list[Metric] = []
    for spec in catalog.all_metrics():
        assert collector_name(spec.otel_name, otlp_unit(spec.unit), _KINDS[spec.kind]) == \
            spec.name, spec.otel_name
        family = spec.family()
        labels = [f"v{i}" for i in range(len(spec.labels))]
        if spec.kind is catalog.Kind.HISTOGRAM:
            family.add_metric(labels, [("1.0", 1.0), ("+Inf", 2.0)], 4.0)
        else:
            family.add_metric(labels, 3.0)
        families.append(family)
    served = scraped(exposition.render(families).decode())
    request = DirectEncoder({"service.name": "t"}, InstrumentationScope("t")).request(
        Translator().translate(families, START_NS), NOW_NS, AggregationTemporality.CUMULATIVE)
    pushed = to_prometheus(request)
    assert set(pushed) == set(served)
    assert {prometheus_name(m) for rm in request.resource_metrics for sm in rm.scope_metrics
            for m in sm.metrics} == {spec.name for spec in catalog.all_metrics()}
    assert len(served) > len(families) > 100


# --- the direct encoder ---------------------------------------------------------------------
def _mixed_families() -> list[Metric]:
    """Every family shape the exporter serves, with awkward values."""
    cpu = catalog.SYSTEM_CPU_TIME.family()
    cpu.add_metric(["0", "user"], 12.5, created=1_600_000_000.25)
    cpu.add_metric(["1", "idle"], 1e15)
    gauge = catalog.SYSTEM_MEMORY_UTILIZATION.family(extra_labels=["demo"])
    gauge.add_metric(["used", "true"], 0.0)
    gauge.add_metric(["free", ""], -0.0)
    gauge.add_metric(["cached", "é ünïcode ☃"], math.inf)
    gauge.add_metric(["buffers", "x" * 20_000], -1.5)  # lengths beyond 16 KiB
    hist = catalog.AI_TASK_DURATION.family()
    bounds = catalog.TASK_BUCKETS
    for n in range(3):
        buckets = [(str(b), float(i * n)) for i, b in enumerate(bounds, 1)]
        buckets.append(("+Inf", float((len(bounds) + 1) * n)))
        hist.add_metric([f"c{n}", "q", "succeeded"], buckets, 1.25 * n)
    empty_bounds = HistogramMetricFamily("plain_seconds", "only +Inf",
                                         buckets=[("+Inf", 3.0)], sum_value=2.0)
    info = InfoMetricFamily("thing", "some info", value={"a": "b"})
    states = StateSetMetricFamily("mode", "a state set", value={"on": True, "off": False})
    summary = SummaryMetricFamily("latency_seconds", "lat", count_value=2, sum_value=0.5)
    process = CounterMetricFamily("process_cpu_seconds", "CPU time", value=1.5)
    big = catalog.AI_TASKS.family()
    for i in range(2 * SLICE + 7):
        big.add_metric([f"component-{i}", "q", "succeeded"], float(i))
    return [cpu, gauge, hist, empty_bounds, info, states, summary, process, big]


@pytest.mark.parametrize("temporality", [AggregationTemporality.CUMULATIVE,
                                         AggregationTemporality.DELTA])
def test_direct_encoder_writes_what_the_sdk_encoder_writes(
        temporality: AggregationTemporality) -> None:
    resource = {"service.name": "svc", "service.instance.id": "h:1", "team": "ai platform"}
    scope = InstrumentationScope("ai-metrics-exporter", "1.2.3")
    metrics = Translator().translate(_mixed_families(), START_NS)
    encoder = DirectEncoder(resource, scope)
    for _ in range(2):  # the second time from the caches
        direct = encoder.request(metrics, NOW_NS, temporality)
        sdk = encode_metrics(to_metrics_data(metrics, Resource(resource), scope, NOW_NS,
                                             temporality))
        assert direct == sdk
        assert len(direct.SerializeToString()) == len(sdk.SerializeToString())
    points = sum(len(m.series) for m in metrics)
    assert points > 2 * SLICE


def test_encoding_and_translation_run_in_slices() -> None:
    families = _mixed_families()
    out: list[OtelMetric] = []
    slices = sum(1 for _ in Translator().steps(families, START_NS, out))
    assert slices >= 3 + len(families)  # the big family alone takes three slices
    assert out == Translator().translate(families, START_NS)
    encoded: list[bytes] = []
    encoder = DirectEncoder({}, InstrumentationScope("t"))
    assert sum(1 for _ in encoder.steps(out, NOW_NS, AggregationTemporality.CUMULATIVE,
                                        encoded)) >= 3
    assert len(encoded) == len(out)


def test_batches_split_large_metrics_and_keep_every_point() -> None:
    metrics = Translator().translate(_mixed_families(), START_NS)
    total = sum(len(m.series) for m in metrics)
    groups = batches(metrics, 100)
    sizes = [sum(len(m.series) for m in g) for g in groups]
    assert all(size <= 100 for size in sizes) and sum(sizes) == total
    assert sizes[:-1] == [100] * (len(sizes) - 1)
    rejoined: dict[str, list[object]] = {}
    for group in groups:
        for m in group:
            rejoined.setdefault(m.name, []).extend(m.series)
    assert rejoined == {m.name: list(m.series) for m in metrics}
    assert batches(metrics, 10**6) == [metrics]


def _counter_metric(value: float, start: int = START_NS) -> list[OtelMetric]:
    family = catalog.AI_TASKS.family()
    family.add_metric(["c", "q", "succeeded"], value)
    return Translator().translate([family], start)


def test_delta_baseline_advances_only_on_commit_and_handles_resets() -> None:
    baseline = DeltaBaseline()
    first = _counter_metric(10.0)
    assert baseline.deltas(first)[0].series[0].value == 10.0  # new series: all of it
    baseline.commit(first, NOW_NS)
    second = _counter_metric(15.0)
    assert baseline.deltas(second)[0].series[0].value == 5.0
    # The export of `second` failed: no commit, so the next delta spans both rounds.
    third = _counter_metric(18.0)
    delta = baseline.deltas(third)[0].series[0]
    assert delta.value == 8.0 and delta.start_ns == NOW_NS
    baseline.commit(third, NOW_NS + 10)
    reset = baseline.deltas(_counter_metric(2.0))[0].series[0]
    assert reset.value == 2.0  # counter went down: a reset, the cumulative is the delta
    baseline.commit([], NOW_NS + 20)
    assert len(baseline) == 0  # series that vanished are dropped


def test_delta_baseline_after_a_partly_delivered_round() -> None:
    """Two requests, the second refused: only the first one's series advance."""
    def snapshot(a: float, b: float, c: float) -> list[OtelMetric]:
        family = catalog.AI_TASKS.family()
        for name, value in (("a", a), ("b", b), ("c", c)):
            family.add_metric([name, "q", "succeeded"], value)
        return Translator().translate([family], START_NS)

    baseline = DeltaBaseline()
    first = snapshot(1, 1, 1)
    baseline.commit(first, NOW_NS)
    second = snapshot(5, 6, 7)
    sent, _refused = batches(second, 2)
    assert [s.value for s in baseline.deltas(sent)[0].series] == [4.0, 5.0]
    baseline.advance(sent, second, NOW_NS + 10)
    third = snapshot(10, 10, 10)
    deltas = baseline.deltas(third)[0].series
    assert [s.value for s in deltas] == [5.0, 4.0, 9.0]  # c spans both rounds
    assert [s.start_ns for s in deltas] == [NOW_NS + 10, NOW_NS + 10, NOW_NS]
    assert len(baseline) == 3
    baseline.advance([], snapshot(11, 11, 11)[:0], NOW_NS + 20)
    assert len(baseline) == 0  # vanished series are dropped


def test_delta_of_histograms() -> None:
    def hist(counts: tuple[int, int], total: float) -> list[OtelMetric]:
        family = catalog.AI_GUARDIAN_DURATION.family()
        family.add_metric(["g", "t"], [("0.5", float(counts[0])), ("+Inf", float(counts[1]))],
                          total)
        return Translator().translate([family], START_NS)

    baseline = DeltaBaseline()
    baseline.commit(hist((1, 2), 0.75), NOW_NS)
    value = baseline.deltas(hist((3, 5), 2.0))[0].series[0].value
    assert isinstance(value, HistValue)
    assert value.counts == (2, 1) and value.count == 3 and math.isclose(value.total, 1.25)


# --- settings -------------------------------------------------------------------------
def _cfg(otlp: dict[str, object] | None = None) -> config.Config:
    return config.build({"otlp": otlp or {}})


def test_off_without_an_endpoint() -> None:
    assert resolve(_cfg(), environ={}) is None
    assert resolve(_cfg({"endpoint": "http://127.0.0.1:4318", "enabled": False}), {}) is None


def test_standard_variables() -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318/",
        "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20abc,x-tenant=t1",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "2500",
        "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
        "OTEL_METRIC_EXPORT_INTERVAL": "15000",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod,service.name=from-attrs",
        "OTEL_SERVICE_NAME": "svc",
        "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "delta",
    }
    s = resolve(_cfg(), env)
    assert s is not None
    assert s.endpoint == "http://127.0.0.1:4318/v1/metrics"
    assert s.headers == {"authorization": "Bearer abc", "x-tenant": "t1"}
    assert (s.timeout, s.interval, s.compression, s.temporality) == (2.5, 15.0, "gzip", "delta")
    assert s.resource["service.name"] == "svc"
    assert s.resource["deployment.environment"] == "prod"
    assert {"service.version", "service.instance.id", "host.name"} <= set(s.resource)
    env["OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"] = "http://127.0.0.1:9999/custom"
    s = resolve(_cfg(), env)
    assert s is not None and s.endpoint == "http://127.0.0.1:9999/custom"


def test_config_wins_over_the_environment() -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_SERVICE_NAME": "env"}
    s = resolve(_cfg({"endpoint": "https://127.0.0.1:2", "protocol": "grpc",
                      "resource_attributes": {"service.name": "cfg"}}), env)
    assert s is not None
    assert (s.endpoint, s.protocol, s.resource["service.name"]) == (
        "https://127.0.0.1:2", "grpc", "cfg")


@pytest.mark.parametrize(("otlp", "env", "field"), [
    ({"endpoint": "127.0.0.1:4318"}, {}, "otlp.endpoint"),
    ({"endpoint": "http://h:1", "protocol": "thrift"}, {}, "otlp.protocol"),
    ({"endpoint": "http://h:1", "temporality": "sometimes"}, {}, "otlp.temporality"),
    ({"endpoint": "http://h:1", "compression": "zstd"}, {}, "otlp.compression"),
    ({"endpoint": "http://h:1", "certificate": "/nonexistent/ca.pem"}, {}, "otlp.certificate"),
    ({"endpoint": "http://h:1"}, {"OTEL_METRIC_EXPORT_INTERVAL": "soon"},
     "OTEL_METRIC_EXPORT_INTERVAL"),
    ({"endpoint": "http://h:1"}, {"OTEL_EXPORTER_OTLP_HEADERS": "novalue"},
     "OTEL_EXPORTER_OTLP_HEADERS"),
    ({"endpoint": "http://h:1"}, {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
     "OTEL_EXPORTER_OTLP_PROTOCOL"),
])
def test_bad_values_name_the_field(otlp: dict[str, object], env: dict[str, str],
                                   field: str) -> None:
    with pytest.raises(ConfigError, match=f"^{field}: "):
        resolve(_cfg(otlp), env)


def test_bad_types_are_config_errors(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text("otlp:\n  interval_seconds: -1\n")
    with pytest.raises(ConfigError, match=r"otlp\.interval_seconds"):
        config.load(str(path), environ={})


# --- gate -----------------------------------------------------------------------------
def test_push_collection_waits_for_scrapes_and_scrapes_wait_for_it() -> None:
    gate = CollectGate()
    inside = threading.Event()
    release = threading.Event()

    def scrape() -> None:
        with gate.shared():
            inside.set()
            release.wait(5)

    t = threading.Thread(target=scrape)
    t.start()
    assert inside.wait(5)
    assert not gate.acquire_exclusive(timeout=0.1)  # a scrape is collecting
    release.set()
    t.join(5)
    assert gate.acquire_exclusive(timeout=1)
    # A scrape arriving now waits for the push's collection, then proceeds.
    waited: list[float] = []

    def late_scrape() -> None:
        start = time.monotonic()
        with gate.shared():
            waited.append(time.monotonic() - start)

    t = threading.Thread(target=late_scrape)
    t.start()
    time.sleep(0.2)
    assert not waited
    # The push's own families() call passes through while it holds the gate.
    with gate.shared():
        pass
    gate.release_exclusive()
    t.join(5)
    assert waited and waited[0] >= 0.15


def test_the_push_gives_way_while_metrics_is_served() -> None:
    gate = CollectGate()
    assert gate.yield_to_scrapes(1.0) == 0.0  # nothing served: only a short pause
    served = threading.Event()
    release = threading.Event()

    def serve() -> None:
        with gate.serving():
            served.set()
            release.wait(5)

    t = threading.Thread(target=serve)
    t.start()
    assert served.wait(5) and gate.requests_in_flight == 1
    # Capped: a request that lasts longer than the cap does not stop the push for good.
    assert 0.1 <= gate.yield_to_scrapes(0.1) < 1.0
    threading.Timer(0.2, release.set).start()
    waited = gate.yield_to_scrapes(5.0)
    assert 0.1 <= waited < 2.0  # resumed as soon as the request was answered
    t.join(5)
    assert gate.requests_in_flight == 0


def test_a_scrape_never_waits_past_half_its_deadline() -> None:
    gate = CollectGate()
    done = threading.Event()
    def hold() -> None:
        gate.acquire_exclusive(1)
        done.wait(5)
        gate.release_exclusive()

    holder = threading.Thread(target=hold)
    holder.start()
    time.sleep(0.05)
    start = time.monotonic()
    with gate.shared(deadline=time.monotonic() + 0.4):
        elapsed = time.monotonic() - start
    done.set()
    holder.join(5)
    assert 0.1 <= elapsed < 1.0
