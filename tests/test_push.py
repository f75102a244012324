"""HTTP push against the real exporter: what only a real process shows. Every value of a
mixed batch on the scraped /metrics, rejections logged at most once per interval, the body
limit as the server enforces it, memory and series caps under load, the tokens file at
config check, and a real Prometheus reading the series back; then properties of the
endpoint in process. The push API's answers and counters request by request (refusals,
NDJSON, gzip, views, bearer tokens) are checked in process by ``test_push_app.py``."""

from __future__ import annotations

import gzip
import json
import math
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from exporter import config
from exporter.aggregator import Aggregator
from exporter.ingest import Ingestor
from exporter.runtime import Runtime
from exporter.security import PushTokens
from exporter.sources.push import PushSource
from exporter.web import create_app
from tests.procs import (
    EXPORTER_BIN,
    Exporter,
    Prometheus,
    rss_bytes,
    sample_value,
    static_job,
    wait_until,
)
from tests.pushcases import JSON, NDJSON, TOKEN_A, TOKEN_B, URL, VALID_BY_KIND, Delta, every_kind


@pytest.fixture(scope="module")
def push(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exporter]:
    """An exporter with push on, its defaults otherwise, and a daily budget."""
    work = tmp_path_factory.mktemp("push")
    proc = Exporter(work, config={"ai": {"budgets": [{"scope": "total", "usd_per_day": 20}],
                                         "log_interval_seconds": 60}})
    yield proc
    proc.stop()


def metric(proc: Exporter, name: str, **labels: str) -> float:
    found = sample_value(proc.metrics(), name, labels)
    return 0.0 if found is None else found


# (raw element, reason) pairs spliced between the valid events of a JSON array.
BAD_ELEMENTS: list[tuple[bytes, str]] = [
    (b'{"kind":"error","component":"x","category":"client","ts":NaN}', "non_finite_number"),
    (b'{"kind":"llm_call","provider":"x","model":"m","cost_usd":Infinity}',
     "non_finite_number"),
    (b'{"kind":"llm_call","provider":"x","model":"m","input_tokens":-5}', "invalid_value"),
    (b'{"kind":"llm_call","provider":"x","model":"m","input_tokens":"5"}', "wrong_type"),
    (b'{"kind":"teleport","component":"x"}', "unknown_kind"),
    (b'{"component":"x","category":"client"}', "missing_field"),
    (b'{"kind":"error","component":"x","category":"client","colour":"red"}',
     "unknown_field"),
    (b'{"kind":"error","component":"x","category":"client","component":"y"}',
     "duplicate_key"),
    (b'{"kind":"error","component":"\xc3\x28","category":"client"}', "invalid_utf8"),
    (b'"just a string"', "not_an_object"),
    (b'{"kind":"error","component":"' + b"x" * (1024 * 1024 + 10) +
     b'","category":"client"}', "too_large"),
    (b'{"kind":"error","component":"x",', "malformed_json"),
]


def mixed_array(tag: str) -> tuple[bytes, dict[int, str]]:
    """A JSON array: valid events with a bad element after every other one."""
    valid = [json.dumps(e).encode() for e in every_kind(tag)]
    elements: list[bytes] = []
    bad_at: dict[int, str] = {}
    bad = list(BAD_ELEMENTS)
    for i, raw in enumerate(valid):
        elements.append(raw)
        if i % 2 == 1 and bad:
            element, reason = bad.pop(0)
            bad_at[len(elements)] = reason
            elements.append(element)
    for element, reason in bad:
        bad_at[len(elements)] = reason
        elements.append(element)
    # the truncated element must be last: it swallows what follows it
    return b"[" + b",\n".join(elements) + b"]", bad_at


@pytest.mark.e2e
def test_every_kind_in_a_mixed_batch_reaches_metrics_exactly(push: Exporter) -> None:
    tag = "mixed"
    delta = Delta(push)
    body, bad_at = mixed_array(tag)
    response = push.post(URL, data=body, headers=JSON)
    assert response.status_code == 207, response.text
    result = response.json()
    assert result["accepted"] == sum(VALID_BY_KIND.values())
    assert result["rejected"] == len(BAD_ELEMENTS)
    assert {e["index"]: e["reason"] for e in result["errors"]} == bad_at
    assert response.headers["Cache-Control"] == "no-store"

    accepted, rejected = delta()
    assert accepted == VALID_BY_KIND
    expected_rejected: dict[str, float] = {}
    for _, reason in BAD_ELEMENTS:
        expected_rejected[reason] = expected_rejected.get(reason, 0) + 1
    assert rejected == expected_rejected

    out = push.metrics()

    def v(name: str, **labels: str) -> float | None:
        return sample_value(out, name, labels)

    p = {"gen_ai_provider_name": f"{tag}-openai", "gen_ai_request_model": "gpt-4o"}
    chat = {**p, "gen_ai_operation_name": "chat"}
    dur = "gen_ai_client_operation_duration_seconds"
    assert v(f"{dur}_bucket", **chat, error_type="", le="0.16") == 0
    assert v(f"{dur}_bucket", **chat, error_type="", le="0.32") == 1
    assert v(f"{dur}_sum", **chat, error_type="") == 0.3
    assert v(f"{dur}_bucket", **chat, error_type="429", le="5.12") == 0
    assert v(f"{dur}_bucket", **chat, error_type="429", le="10.24") == 1
    assert v("gen_ai_client_token_usage_sum", **chat, gen_ai_token_type="input") == 1000
    assert v("gen_ai_client_token_usage_bucket", **chat, gen_ai_token_type="output",
             le="256.0") == 1
    assert v("gen_ai_client_operation_time_to_first_chunk_seconds_sum", **chat) == 0.09
    assert v("ai_llm_requests_total", **p, outcome="success") == 1
    assert v("ai_llm_requests_total", **p, outcome="error", error_type="429") == 1
    assert v("ai_llm_tokens_total", **p, gen_ai_token_type="cache_read") == 400
    assert v("ai_llm_cost_usd_total", **p) == 0.75
    assert v("ai_budget_limit_usd", scope="total") == 20
    assert v("ai_budget_spend_usd", scope="total") is not None

    cq = {"component": tag, "queue": "q"}
    assert v("ai_tasks_total", **cq, status="queued") == 2
    assert v("ai_task_queue_depth", **cq) == 1
    assert v("ai_task_in_progress", **cq) == 0
    assert v("ai_task_duration_seconds_bucket", **cq, status="succeeded", le="30.0") == 0
    assert v("ai_task_duration_seconds_bucket", **cq, status="succeeded", le="60.0") == 1
    assert v("ai_tool_calls_total", gen_ai_tool_name=f"{tag}-grep", outcome="success") == 1
    assert v("gen_ai_execute_tool_duration_seconds_count", gen_ai_tool_name=f"{tag}-grep") == 1
    assert v("ai_quality_gate_decisions_total", gate=tag, decision="rejected") == 1
    assert v("ai_quality_gate_score_sum", gate=tag) == 1.25
    assert v("ai_quality_gate_score_bucket", gate=tag, le="0.8") == 1
    assert v("ai_resolution_active", component=tag) == 1
    assert v("ai_resolution_attempts_total", component=tag) == 1
    assert v("ai_resolution_incidents_total", component=tag) == 1
    assert v("ai_guardian_decisions_total", guardian=tag, verdict="escalate") == 1
    assert v("ai_guardian_duration_seconds_bucket", guardian=tag, le="0.0025") == 1
    tp = {"type": tag, "priority": "high"}
    assert v("ai_interventions_total", **tp, status="resolved") == 1
    assert v("ai_intervention_open", **tp) == 0
    assert v("ai_intervention_time_to_resolve_seconds_bucket", **tp, le="300.0") == 1
    assert v("ai_security_events_total", category=tag, severity="critical") == 1
    assert v("ai_security_unresolved", category=tag, severity="critical") == 1
    assert v("ai_errors_total", component=tag, category="provider") == 1
    rl = {"gen_ai_provider_name": f"{tag}-openai", "limit_type": "tokens"}
    assert v("ai_provider_rate_limit_remaining", **rl) == 5000
    assert v("ai_provider_rate_limit_capacity", **rl) == 80000
    assert v("ai_provider_rate_limit_reset_timestamp_seconds", **rl) == 1767225600
    assert v("ai_component_heartbeat_up", component=tag, kind="agent") == 1
    assert v("ai_component_info", component=tag, version="9.9", status="up") == 1

    # The same batch again: every value counts exactly once more.
    again = push.post(URL, data=body, headers=JSON).json()
    assert again["accepted"] == sum(VALID_BY_KIND.values())
    assert metric(push, "ai_errors_total", component=tag) == 2
    assert metric(push, f"{dur}_count", **chat, error_type="") == 2


@pytest.mark.e2e
def test_rejections_are_logged_at_most_once_per_interval(push: Exporter) -> None:
    for _ in range(50):
        push.post(URL, data=b'[{"kind":"nope"}]', headers=JSON)
    lines = [line for line in push.log().splitlines() if "source push rejected" in line]
    assert 1 <= len(lines) <= 2, lines  # log_interval_seconds is 60 in this exporter
    assert metric(push, "ai_exporter_events_rejected_total", source="push",
                  reason="unknown_kind") >= 50


@pytest.mark.e2e
def test_body_over_the_limit_is_413_and_counted(tmp_path: Path) -> None:
    proc = Exporter(tmp_path, config={"web": {"max_request_bytes": 4096}})
    try:
        events = [{"kind": "error", "component": "big", "category": "auth"}] * 100
        response = proc.post(URL, data=json.dumps(events), headers=JSON)
        assert response.status_code == 413
        ok = proc.post(URL, data=json.dumps(events[:10]), headers=JSON)
        assert ok.status_code == 200
        assert metric(proc, "ai_exporter_events_rejected_total", source="push",
                      reason="too_large") == 1
        assert metric(proc, "ai_errors_total", component="big") == 10
    finally:
        proc.stop()


@pytest.mark.e2e
def test_distinct_label_values_are_capped_in_the_real_process(tmp_path: Path) -> None:
    cap = 50
    proc = Exporter(tmp_path, config={"ai": {"max_series_per_metric": cap,
                                             "max_tracked_ids": 1000}})
    try:
        def batch(start: int) -> bytes:
            events: list[dict[str, Any]] = []
            for i in range(start, start + 1000):
                events.append({"kind": "error", "component": f"c-{i}", "category": "auth"})
                events.append({"kind": "task", "component": f"c-{i}", "status": "queued",
                               "task_id": f"t-{i}"})
                events.append({"kind": "llm_call", "provider": "p", "model": f"m-{i}",
                               "duration_seconds": 0.5})
            return json.dumps(events).encode()

        session = requests.Session()
        for start in range(0, 20_000, 1000):  # warm up past every cap
            assert session.post(f"{proc.url}{URL}", data=batch(start), headers=JSON,
                                timeout=30).status_code == 200
        before = rss_bytes(proc.pid)
        for start in range(20_000, 120_000, 1000):
            assert session.post(f"{proc.url}{URL}", data=batch(start), headers=JSON,
                                timeout=30).status_code == 200
        grown = rss_bytes(proc.pid) - before
        assert grown < 24 * 1024 * 1024, f"exporter RSS grew by {grown} bytes"
        text = proc.metrics()
        errors = [s for f in text_string_to_metric_families(text) for s in f.samples
                  if s.name == "ai_errors_total"]
        assert len(errors) == cap + 1
        assert sample_value(text, "ai_errors_total", {"component": "other"}) == 120_000 - cap
        for metric_name in ("ai_errors_total", "ai_tasks_total",
                            "gen_ai_client_operation_duration_seconds"):
            assert sample_value(text, "ai_exporter_series_overflow_total",
                                {"metric": metric_name}) == 120_000 - cap
            assert sample_value(text, "ai_exporter_series", {"metric": metric_name}) == cap + 1
        depth = sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
                    if s.name == "ai_task_queue_depth")
        assert depth == 1000  # max_tracked_ids: the oldest queued ids are forgotten
    finally:
        proc.stop()


def test_push_source_checks_tokens_itself_in_constant_time() -> None:
    """Without the web layer in front (an embedding app), the source refuses by itself."""
    ingestor = Ingestor(Aggregator())
    source = PushSource(ingestor, 1 << 20,
                        tokens=PushTokens.of((TOKEN_A.encode(), TOKEN_B.encode())))
    for header in ("", "Bearer", f"Bearer {TOKEN_A[:-1]}", f"Token {TOKEN_A}",
                   f"Bearer {TOKEN_A} {TOKEN_B}"):
        refused = source.authorize(header)
        assert refused is not None and refused.status == 401, header
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert source.authorize(f"Bearer {TOKEN_A}") is None
    assert source.authorize(f"bearer  {TOKEN_B} ") is None
    assert ingestor.rejected == {("push", "unauthorized"): 5}
    assert PushSource(ingestor, 1 << 20).authorize("") is None  # no tokens: open


@pytest.mark.e2e
def test_unreadable_tokens_file_is_a_config_error(tmp_path: Path) -> None:
    cfg = tmp_path / "exporter.yml"
    cfg.write_text(f"sources:\n  push:\n    tokens_file: {tmp_path / 'missing'}\n")
    result = subprocess.run([EXPORTER_BIN, "check-config", f"--config.file={cfg}"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "sources.push.tokens_file" in result.stderr


@pytest.mark.e2e
def test_prometheus_reads_pushed_series_through_promql(push: Exporter, tmp_path: Path) -> None:
    prom = Prometheus(tmp_path, [static_job("exporter", f"127.0.0.1:{push.port}")],
                      interval="1s")
    try:
        model = {"kind": "llm_call", "provider": "promql", "model": "prom-model",
                 "duration_seconds": 0.3, "input_tokens": 100, "output_tokens": 10}
        slow = {**model, "duration_seconds": 3.0}
        error = {"kind": "error", "component": "promql", "category": "timeout"}
        sent = 0
        for batch in range(3):
            payload = [model] * 9 + [slow] + [error] * 5
            assert push.post(URL, json=payload).status_code == 200
            sent += 5
            prom.wait_for(f'ai_errors_total{{component="promql"}} == {sent}')
            if batch < 2:
                time.sleep(2.5)  # at least two scrapes between batches
        assert prom.wait_for('rate(ai_errors_total{component="promql"}[1m]) > 0')
        # 9 of every 10 calls in (0.16, 0.32], 1 in (2.56, 5.12]: the median interpolates
        # to the middle of the first bucket and the 95th percentile to the middle of the
        # second, whatever the rate window's extrapolation.
        select = ('gen_ai_client_operation_duration_seconds_bucket'
                  '{gen_ai_request_model="prom-model"}')
        for q, expected in ((0.5, 0.16 + 0.16 * (0.5 / 0.9)), (0.95, 2.56 + 2.56 * 0.5)):
            expr = f"histogram_quantile({q}, sum by (le) (rate({select}[1m])))"
            found = wait_until(lambda e=expr: finite(prom.query(e)), 30, 0.5, what=expr)
            assert abs(found - expected) < 1e-6, (q, found)
        tokens = prom.query('ai_llm_tokens_total{gen_ai_provider_name="promql"}')
        assert {r["metric"]["gen_ai_token_type"]: float(r["value"][1]) for r in tokens} == {
            "input": 3000.0, "output": 300.0}
    finally:
        prom.stop()


def finite(result: list[dict[str, Any]]) -> float | None:
    """The value of a one-series PromQL result, when it is a finite number."""
    if len(result) != 1:
        return None
    found = float(result[0]["value"][1])
    return found if math.isfinite(found) else None


# --- properties of the endpoint, in process ---------------------------------------------

@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    runtime = Runtime(config.build({"log_level": "error"}))
    app = create_app(runtime)
    yield app.test_client(), runtime
    runtime.stop()


valid_event = st.fixed_dictionaries(
    {"kind": st.just("error"), "component": st.text(min_size=1, max_size=8),
     "category": st.sampled_from(["auth", "tool", "internal"])})
junk = (st.none() | st.integers() | st.text(max_size=10)
        | st.dictionaries(st.text(max_size=5), st.integers(), max_size=3)
        | st.fixed_dictionaries({"kind": st.just("error"), "component": st.just("x"),
                                 "category": st.text(max_size=6)}))


def accepted_total(runtime: Runtime) -> float:
    return sum(n for (source, _), n in runtime.ingestor.accepted.items() if source == "push")


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.booleans(), valid_event, junk), max_size=12), st.booleans(),
       st.booleans())
def test_push_counts_valid_events_exactly_once(client: Any, items: list[Any],
                                               ndjson: bool, compress: bool) -> None:
    test_client, runtime = client
    elements = [event if ok else bad for ok, event, bad in items]
    valid = [i for i, (ok, _, bad) in enumerate(items)
             if ok or (isinstance(bad, dict) and bad.get("category") in (
                 "auth", "tool", "internal", "client", "server", "provider", "network",
                 "timeout", "validation", "rate_limit") and set(bad) == {
                 "kind", "component", "category"})]
    if ndjson:
        body = "\n".join(json.dumps(e) for e in elements).encode()
        headers = dict(NDJSON)
    else:
        body = json.dumps(elements).encode()
        headers = dict(JSON)
    if compress:
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    before = accepted_total(runtime)
    response = test_client.post(URL, data=body, headers=headers)
    result = response.get_json()
    if ndjson and not elements:
        assert response.status_code == 400 and result["errors"][0]["reason"] == "empty"
        return
    assert result["accepted"] == len(valid)
    assert result["rejected"] == len(elements) - len(valid)
    assert [e["index"] for e in result.get("errors", [])] == [
        i for i in range(len(elements)) if i not in valid]
    assert accepted_total(runtime) - before == len(valid)
    expected_status = 200 if len(valid) == len(elements) else (207 if valid else 400)
    assert response.status_code == expected_status


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=400), st.sampled_from(["application/json", "application/x-ndjson",
                                                  "text/plain", ""]),
       st.sampled_from(["", "gzip", "deflate"]))
def test_push_never_fails_on_arbitrary_bodies(client: Any, body: bytes, content_type: str,
                                              encoding: str) -> None:
    test_client, runtime = client
    headers = {"Content-Type": content_type, "Content-Encoding": encoding}
    rejected_before = sum(runtime.ingestor.rejected.values())
    accepted_before = accepted_total(runtime)
    response = test_client.post(URL, data=body, headers=headers)
    assert response.status_code in (200, 207, 400, 413, 415)
    result = response.get_json()
    assert set(result) >= {"accepted", "rejected"}
    assert accepted_total(runtime) - accepted_before == result["accepted"]
    assert sum(runtime.ingestor.rejected.values()) - rejected_before == result["rejected"]
    assert requests.codes.ok <= response.status_code < 500
