"""Exemplars: the trace behind a histogram sample, kept per label
set and bucket, served in OpenMetrics when the scraper asks for it (the Prometheus text
format unchanged otherwise), stored by a real Prometheus, and pushed over OTLP."""

from __future__ import annotations

import bisect
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.sdk.metrics.export import AggregationTemporality
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics import exposition as om
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as om_families,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Exemplar

from exporter import catalog, exposition
from exporter.aggregation.state import AiState
from exporter.aggregation.stores import (
    EXEMPLAR_REFRESH_SECONDS,
    OTHER,
    HistogramStore,
    SampleBudget,
)
from exporter.aggregator import Aggregator
from exporter.events import LlmCall, Task, ToolCall
from exporter.otlp.encode import DirectEncoder
from exporter.otlp.translate import DeltaBaseline, Translator, to_metrics_data
from exporter.scrape import StaticFamilies
from tests.otlp_receiver import OtlpReceiver
from tests.otlpcases import chat_attrs, traces
from tests.procs import LOOPBACK, Exporter, Prometheus, static_job, wait_until
from tests.samples import promtool_check

TRACE = "0af7651916cd43dd8448eb211c80319c"
SPAN = "b7ad6b7169203331"
SLOW_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SLOW_SPAN = "00f067aa0ba902b7"
OM_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
             "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
TEXT_ACCEPT = "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
DURATION = catalog.GEN_AI_CLIENT_OPERATION_DURATION


def _om(families: list[Any]) -> bytes:
    """prometheus_client's own OpenMetrics rendering (the reference)."""
    return bytes(om.generate_latest(StaticFamilies(families)))  # type: ignore[no-untyped-call]


def _om_parse(text: str) -> list[Any]:
    """The strict OpenMetrics parser of prometheus_client."""
    return list(om_families(text))  # type: ignore[no-untyped-call]


def _trace(sample: Any) -> str:
    return str(sample.exemplar.labels["trace_id"])


def _store(cap: int = 10) -> tuple[HistogramStore, dict[str, float]]:
    overflow: dict[str, float] = {}
    return HistogramStore(DURATION, cap, overflow, SampleBudget(1_000_000)), overflow


def _key(model: str) -> tuple[str, ...]:
    """A key of the duration histogram: every label "x" but the model's."""
    return tuple(model if label == "gen_ai_request_model" else "x"
                 for label in DURATION.labels)


# --- storage ------------------------------------------------------------------------------
def test_latest_exemplar_per_bucket() -> None:
    store, _ = _store()
    key = _key("gpt-4o")
    for value, trace, ts in ((0.3, "a" * 32, 0.5), (0.31, "b" * 32, 0.9),
                             (30.0, "c" * 32, 1.0), (0.32, "e" * 32, 1.5)):
        store.observe(key, value)
        store.offer_exemplar(key, value, trace, "d" * 16, 1700000000.0 + ts)
    row = store.exemplars[key]
    assert len(row) == len(store.bounds) + 1
    held = [(i, ex) for i, ex in enumerate(row) if ex is not None]
    assert len(held) == 2
    # 0.3, 0.31 and 0.32 share a bucket: 0.31 came within EXEMPLAR_REFRESH_SECONDS of
    # 0.3 and changed nothing; 0.32, a second after 0.3, replaced it
    assert EXEMPLAR_REFRESH_SECONDS == 1.0
    assert held[0][1] == (0.32, "e" * 32, "d" * 16, 1700000001.5)
    assert held[1][1] == (30.0, "c" * 32, "d" * 16, 1700000001.0)
    assert held[1][0] == bisect.bisect_left(store.bounds, 30.0)


def test_no_exemplar_for_a_key_never_observed() -> None:
    store, _ = _store()
    store.offer_exemplar(_key("never"), 1.0, TRACE, SPAN, 1.0)
    assert store.exemplars == {}


def test_a_folded_key_keeps_its_exemplar_under_other() -> None:
    store, overflow = _store(cap=1)
    first, second = _key("m1"), _key("m2")
    store.observe(first, 1.0)
    store.observe(second, 2.0)  # past the cap: folded into other
    assert overflow[DURATION.name] == 1
    store.offer_exemplar(second, 2.0, TRACE, SPAN, 5.0)
    other = (OTHER,) * len(first)
    assert set(store.exemplars) == {other}
    assert [e for e in store.exemplars[other] if e is not None] == [(2.0, TRACE, SPAN, 5.0)]
    # bounded: many more folded keys add no row
    for i in range(100):
        store.observe(_key(f"x{i}"), 0.1)
        store.offer_exemplar(_key(f"x{i}"), 0.1, TRACE, SPAN, 6.0)
    assert set(store.exemplars) == {other}


def test_an_unclean_key_finds_its_cleaned_row() -> None:
    store, _ = _store()
    dirty = _key("gpt\x00-4o")
    store.observe(dirty, 1.0)
    store.offer_exemplar(dirty, 1.0, TRACE, SPAN, 5.0)
    assert set(store.exemplars) == {_key("gpt-4o")}


def test_exemplars_are_not_checkpointed() -> None:
    agg = Aggregator(clock=lambda: 1700000000.0)
    agg.ingest([LlmCall(provider="openai", model="gpt-4o", duration_seconds=1.0,
                        trace_id=TRACE, span_id=SPAN)])
    assert agg.state.llm_duration.exemplars
    saved = agg.snapshot()
    again = Aggregator(clock=lambda: 1700000000.0)
    again.restore(saved)
    assert again.state.llm_duration.values  # the counts come back
    assert not again.state.llm_duration.exemplars  # the exemplars do not


def test_events_without_a_trace_id_leave_no_exemplar() -> None:
    agg = Aggregator(clock=lambda: 1700000000.0)
    agg.ingest([LlmCall(provider="openai", model="gpt-4o", duration_seconds=1.0),
                ToolCall(tool="search", duration_seconds=0.2),
                Task(component="planner", status="succeeded", duration_seconds=3.0)])
    state: AiState = agg.state
    assert not any(isinstance(s, HistogramStore) and s.exemplars
                   for s in state.stores.values())


# --- exposition ---------------------------------------------------------------------------
def _aggregator_with_exemplars() -> Aggregator:
    agg = Aggregator(clock=lambda: 1700000000.25)
    agg.ingest([
        LlmCall(provider="openai", model="gpt-4o", duration_seconds=0.4,
                time_to_first_token_seconds=0.05, trace_id=TRACE, span_id=SPAN),
        LlmCall(provider="openai", model="gpt-4o", duration_seconds=42.0,
                trace_id=SLOW_TRACE, span_id=SLOW_SPAN),
        LlmCall(provider="openai", model="gpt-4o", duration_seconds=0.5),  # no trace
        ToolCall(tool="search", duration_seconds=0.2, trace_id=TRACE, span_id=SPAN),
        Task(component="planner", status="succeeded", duration_seconds=3.0,
             trace_id=TRACE),
    ])
    return agg


def test_families_carry_exemplars_on_buckets() -> None:
    families = {f.name: f for f in _aggregator_with_exemplars().families()}
    duration = families[DURATION.name]
    with_ex = [s for s in duration.samples if s.exemplar is not None]
    assert {_trace(s) for s in with_ex} == {TRACE, SLOW_TRACE}
    assert all(s.name.endswith("_bucket") for s in with_ex)
    slow = next(s for s in with_ex if _trace(s) == SLOW_TRACE)
    assert slow.exemplar == Exemplar({"trace_id": SLOW_TRACE, "span_id": SLOW_SPAN}, 42.0,
                                     1700000000.25)
    assert float(slow.labels["le"]) >= 42.0
    task = families[catalog.AI_TASK_DURATION.name]
    task_ex = [s.exemplar for s in task.samples if s.exemplar is not None]
    assert task_ex == [Exemplar({"trace_id": TRACE}, 3.0, 1700000000.25)]
    tool = families[catalog.GEN_AI_EXECUTE_TOOL_DURATION.name]
    assert any(s.exemplar is not None for s in tool.samples)


def test_openmetrics_identical_to_prometheus_client() -> None:
    families = _aggregator_with_exemplars().families()
    ours = exposition.render_openmetrics(families)
    assert ours == _om(families)
    assert ours.endswith(b"# EOF\n")
    assert f'# {{span_id="{SLOW_SPAN}",trace_id="{SLOW_TRACE}"}} 42.0 1700000000.25'.encode() \
        in ours
    parsed = _om_parse(ours.decode())  # the strict OpenMetrics parser takes it
    exemplars = [s.exemplar for f in parsed for s in f.samples if s.exemplar]
    assert any(e.labels["trace_id"] == SLOW_TRACE for e in exemplars)


def test_text_format_unchanged_by_exemplars() -> None:
    families = _aggregator_with_exemplars().families()
    text = exposition.render(families)
    assert text == generate_latest(StaticFamilies(families))
    stripped = Aggregator(clock=lambda: 1700000000.25)
    stripped.restore(_aggregator_with_exemplars().snapshot())  # same counts, no exemplars
    assert exposition.render(stripped.families()) == text
    assert b"trace_id" not in text


@pytest.mark.parametrize(("accept", "expected"), [
    (OM_ACCEPT, True),  # Prometheus 2.x
    ("application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;"
     "version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.1", True),  # Prometheus 3
    ("application/openmetrics-text; version=0.0.1", True),
    ("application/openmetrics-text;version=1.0.0;q=0.2,text/plain;version=0.0.4;q=0.5",
     False),
    ("application/openmetrics-text;version=2.0.0", False),
    ("application/openmetrics-text;q=0", False),
    (TEXT_ACCEPT, False), ("*/*", False), ("", False), (None, False),
    ("text/plain,application/openmetrics-text", False),  # a tie: the first listed wins
    ("application/openmetrics-text;q=abc", False),
])
def test_negotiation(accept: str | None, expected: bool) -> None:
    assert exposition.wants_openmetrics(accept) is expected


def test_openmetrics_speed() -> None:
    """Our renderer against the library's on 1,000 label sets, every bucket with an
    exemplar (the docstring of ``exposition.openmetrics_lines`` quotes this)."""
    store, _ = _store(cap=2000)
    for i in range(1000):
        key = _key(f"model-{i:04d}")
        for b in [*store.bounds, 100.0]:
            store.observe(key, b)
            store.offer_exemplar(key, b, TRACE, SPAN, 1700000000.5)
    family = store.family((), (), None, store.exemplar_snapshot())
    assert sum(1 for s in family.samples if s.exemplar is not None) == 1000 * (
        len(store.bounds) + 1)

    def best(fn: Any) -> float:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times)

    ours = best(lambda: exposition.render_openmetrics([family]))
    library = best(lambda: _om([family]))
    print(f"OpenMetrics render, {len(family.samples)} samples: ours {ours * 1000:.1f} ms, "
          f"prometheus_client {library * 1000:.1f} ms")
    assert exposition.render_openmetrics([family]) == _om([family])
    assert ours < library


# --- OTLP push ----------------------------------------------------------------------------
def test_otlp_histogram_points_carry_exemplars() -> None:
    families = _aggregator_with_exemplars().families()
    metrics = Translator().translate(families, 1_000)
    resource, scope = {"service.name": "t"}, InstrumentationScope("t")
    ours = DirectEncoder(resource, scope).request(metrics, 2_000,
                                                  AggregationTemporality.CUMULATIVE)
    sdk = encode_metrics(to_metrics_data(metrics, Resource(resource), scope, 2_000,
                                         AggregationTemporality.CUMULATIVE))
    assert ours == sdk
    found = {}
    for m in ours.resource_metrics[0].scope_metrics[0].metrics:
        for point in m.histogram.data_points:
            for ex in point.exemplars:
                found[(m.name, ex.trace_id.hex())] = ex
    slow = found[(DURATION.otel_name, SLOW_TRACE)]
    assert slow.span_id.hex() == SLOW_SPAN
    assert slow.as_double == 42.0
    assert slow.time_unix_nano == 1700000000250000000
    assert (catalog.AI_TASK_DURATION.otel_name, "") in found  # no span id: no ids (as SDK)


def test_otlp_delta_carries_only_new_exemplars() -> None:
    agg = _aggregator_with_exemplars()
    translator, baseline = Translator(), DeltaBaseline()
    first = translator.translate(agg.families(), 0)
    baseline.commit(first, 1700000001 * 10**9)
    agg.ingest([LlmCall(provider="openai", model="gpt-4o", duration_seconds=0.41,
                        trace_id="f" * 32, span_id="e" * 16)], now=1700000002.0)
    delta = baseline.deltas(translator.translate(agg.families(), 0))
    duration = next(m for m in delta if m.name == DURATION.otel_name)
    exemplars = [e for s in duration.series for e in s.value.exemplars]  # type: ignore[union-attr]
    assert [e.trace_id for e in exemplars] == ["f" * 32]


# --- end to end ---------------------------------------------------------------------------
def _events() -> list[dict[str, Any]]:
    return [
        {"kind": "llm_call", "provider": "openai", "model": "gpt-4o", "duration_seconds": 0.3,
         "trace_id": TRACE, "span_id": SPAN},
        {"kind": "llm_call", "provider": "openai", "model": "gpt-4o",
         "duration_seconds": 95.0, "trace_id": SLOW_TRACE, "span_id": SLOW_SPAN},
        {"kind": "tool_call", "tool": "search", "duration_seconds": 0.2, "trace_id": TRACE,
         "span_id": SPAN},
        {"kind": "task", "component": "planner", "status": "succeeded",
         "duration_seconds": 4.0, "trace_id": TRACE, "span_id": SPAN},
    ]


@pytest.fixture(scope="module")
def exp(workdir: Path) -> Iterator[Exporter]:
    proc = Exporter(workdir)
    try:
        response = proc.post("/api/v1/events", json=_events())
        assert response.status_code == 200, response.text
        yield proc
    finally:
        proc.stop()


@pytest.mark.e2e
def test_metrics_negotiates_openmetrics(exp: Exporter) -> None:
    text = exp.get("/metrics", headers={"Accept": TEXT_ACCEPT})
    assert text.headers["Content-Type"] == exposition.CONTENT_TYPE
    assert text.headers.get("Vary") in (None, "Accept-Encoding")  # as before
    assert b"trace_id" not in text.content and b"# EOF" not in text.content
    promtool_check(text.text)
    plain = exp.get("/metrics")  # no Accept header: the text format
    assert plain.headers["Content-Type"] == exposition.CONTENT_TYPE

    opened = exp.get("/metrics", headers={"Accept": OM_ACCEPT, "Accept-Encoding": "gzip"})
    assert opened.headers["Content-Type"] == exposition.OPENMETRICS_CONTENT_TYPE
    assert opened.headers["Vary"] == "Accept, Accept-Encoding"
    body = opened.text
    assert body.endswith("# EOF\n")
    assert f'trace_id="{SLOW_TRACE}"' in body
    # promtool 2.42 parses only the text format: OpenMetrics is checked by the strict
    # OpenMetrics parser here and by a real Prometheus below.
    families = {f.name: f for f in _om_parse(body)}
    slow = [s for s in families[DURATION.name].samples
            if s.exemplar and s.exemplar.labels["trace_id"] == SLOW_TRACE]
    assert len(slow) == 1 and slow[0].exemplar.value == 95.0
    # the same series in both formats
    text_names = {s.name for f in text_string_to_metric_families(text.text) for s in f.samples}
    om_names = {s.name for f in families.values() for s in f.samples}
    assert {n for n in text_names if n.startswith("gen_ai_")} == {
        n for n in om_names if n.startswith("gen_ai_")}


@pytest.mark.e2e
def test_every_family_of_the_demo_is_valid_openmetrics(demo_exporter: Exporter) -> None:
    """All of /metrics (host, process, self and every AI family the demo moves) passes the
    strict OpenMetrics parser; the text format of the same exporter passes promtool."""
    body = demo_exporter.get("/metrics", headers={"Accept": OM_ACCEPT}).text
    names = {f.name for f in _om_parse(body)}
    assert DURATION.name in names and "process_cpu_seconds" in names
    promtool_check(demo_exporter.get("/metrics", headers={"Accept": TEXT_ACCEPT}).text)


@pytest.mark.e2e
def test_real_prometheus_stores_the_slow_calls_trace(exp: Exporter, workdir: Path) -> None:
    prom = Prometheus(workdir, [static_job("ai", f"{LOOPBACK}:{exp.port}")],
                      flags=["--enable-feature=exemplar-storage"])
    try:
        prom.wait_for('up{job="ai"} == 1')
        # Every scrape of the job went through the OpenMetrics parser without error.
        targets = requests.get(f"{prom.url}/api/v1/targets", timeout=10).json()
        target = targets["data"]["activeTargets"][0]
        assert target["health"] == "up" and target["lastError"] == "", target

        def exemplars(query: str) -> list[dict[str, Any]]:
            now = time.time()
            params: dict[str, str | float] = {"query": query, "start": now - 600,
                                               "end": now + 60}
            response = requests.get(f"{prom.url}/api/v1/query_exemplars", params=params,
                                    timeout=10)
            response.raise_for_status()
            data: list[dict[str, Any]] = response.json()["data"]
            return data

        def traces(query: str) -> set[str]:
            return {e["labels"].get("trace_id", "") for series in exemplars(query)
                    for e in series["exemplars"]}

        found = wait_until(lambda: SLOW_TRACE in traces(
            f"{DURATION.name}_bucket") and traces(f"{DURATION.name}_bucket"), 30,
            interval=0.5, what="the slow call's exemplar in Prometheus")
        assert TRACE in found
        slow = [e for s in exemplars(f"{DURATION.name}_bucket") for e in s["exemplars"]
                if e["labels"]["trace_id"] == SLOW_TRACE]
        assert float(slow[0]["value"]) == 95.0 and slow[0]["labels"]["span_id"] == SLOW_SPAN
        assert TRACE in traces(f"{catalog.GEN_AI_EXECUTE_TOOL_DURATION.name}_bucket")
        assert TRACE in traces(f"{catalog.AI_TASK_DURATION.name}_bucket")
    finally:
        prom.stop()


@pytest.mark.e2e
def test_an_otlp_span_becomes_an_exemplar(exp: Exporter) -> None:
    """A GenAI span from the OTLP intake: its trace and span ids are the exemplar."""
    trace, span = 0x5A11_0000_0000_0000_0000_0000_0000_0001, 0x77
    body = traces([{"attrs": chat_attrs(model="otlp-model"), "seconds": 33.0, "span": span}],
                  trace=trace).SerializeToString()
    answer = exp.post("/v1/traces", data=body,
                      headers={"Content-Type": "application/x-protobuf"})
    assert answer.status_code == 200, answer.text

    def exemplar() -> Any:
        text = exp.get("/metrics", headers={"Accept": OM_ACCEPT}).text
        for family in _om_parse(text):
            if family.name == DURATION.name:
                for s in family.samples:
                    if s.exemplar and s.exemplar.labels["trace_id"] == f"{trace:032x}":
                        return s
        return None

    found = wait_until(exemplar, 15, what="the span's exemplar on /metrics")
    assert found.labels["gen_ai_request_model"] == "otlp-model"
    assert found.exemplar.labels["span_id"] == f"{span:016x}"
    assert found.exemplar.value == 33.0


@pytest.mark.e2e
def test_otlp_push_carries_exemplars(workdir: Path) -> None:
    with OtlpReceiver() as receiver:
        proc = Exporter(workdir, config={"otlp": {"endpoint": receiver.url,
                                                   "interval_seconds": 0.5}})
        try:
            assert proc.post("/api/v1/events", json=_events()).status_code == 200

            def pushed() -> dict[tuple[str, str], Any]:
                out = {}
                for received in receiver.requests():
                    for rm in received.request.resource_metrics:
                        for sm in rm.scope_metrics:
                            for m in sm.metrics:
                                for p in m.histogram.data_points:
                                    for e in p.exemplars:
                                        out[(m.name, e.trace_id.hex())] = e
                return out

            found = wait_until(lambda: pushed().get((DURATION.otel_name, SLOW_TRACE)), 20,
                               what="an OTLP push with the slow call's exemplar")
            assert found.span_id.hex() == SLOW_SPAN and found.as_double == 95.0
            assert found.time_unix_nano > 0
            assert (catalog.GEN_AI_EXECUTE_TOOL_DURATION.otel_name, TRACE) in pushed()
        finally:
            proc.stop()


# --- Grafana ------------------------------------------------------------------------------
ROOT = Path(__file__).resolve().parent.parent
# The histograms that carry exemplars (bucket series names); a time series panel reading
# one of them must fetch its exemplars.
EXEMPLAR_BUCKETS = ("gen_ai_client_operation_duration_seconds_bucket",
                    "gen_ai_client_operation_time_to_first_chunk_seconds_bucket",
                    "gen_ai_execute_tool_duration_seconds_bucket",
                    "ai_task_duration_seconds_bucket",
                    "mcp_client_operation_duration_seconds_bucket",
                    "mcp_server_operation_duration_seconds_bucket")


def test_datasource_links_exemplars_to_a_configurable_trace_store() -> None:
    sources = yaml.safe_load((ROOT / "grafana" / "provisioning" / "datasources"
                              / "datasources.yaml").read_text())["datasources"]
    by_uid = {s["uid"]: s for s in sources}
    links = by_uid["prometheus"]["jsonData"]["exemplarTraceIdDestinations"]
    assert [link["name"] for link in links] == ["trace_id"]
    traces_ds = by_uid[links[0]["datasourceUid"]]
    assert traces_ds["type"] in ("tempo", "jaeger")
    assert traces_ds["url"] == "${TRACES_URL}"
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    env = compose["services"]["grafana"]["environment"]
    assert env["TRACES_URL"] == "${TRACES_URL:-http://127.0.0.1:3200}"  # loopback default
    assert "--enable-feature=exemplar-storage" in compose["services"]["prometheus"]["command"]


def test_latency_panels_show_exemplars() -> None:
    checked = 0
    for path in sorted((ROOT / "grafana" / "dashboards").glob("*.json")):
        board = json.loads(path.read_text())
        panels = [p for p in board["panels"] if p.get("type") != "row"]
        panels += [p for row in board["panels"] for p in row.get("panels", [])]
        for panel in panels:
            if panel.get("type") != "timeseries":
                continue
            targets = panel.get("targets", [])
            if not any(b in t.get("expr", "") for t in targets for b in EXEMPLAR_BUCKETS):
                continue
            checked += 1
            assert any(t.get("exemplar") is True for t in targets), (path.name,
                                                                     panel["title"])
    assert checked >= 4
