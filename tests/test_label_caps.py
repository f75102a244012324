"""The per-metric series cap (``ai.max_series_per_metric``) holds over every source.

Far more distinct label values than the cap arrive through each source in turn -- push,
the JSONL tail, Redis Streams, OTLP/HTTP traces and OTLP/HTTP metrics -- into the real
exporter process: the metric holds ``cap`` label sets plus ``other`` and no more, and
``ai_exporter_series_overflow_total`` counts every observation folded, exactly.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from exporter.aggregator import OTHER
from tests.otlpcases import chat_attrs, genai_metrics, traces
from tests.procs import Exporter, sample_value, wait_until
from tests.test_redis_streams import RedisServer

pytestmark = pytest.mark.e2e

CAP = 30
DISTINCT = 400  # distinct models per source
METRIC = "gen_ai_client_operation_duration_seconds"
HEALTH = {"max_memory_utilization": 1.0, "max_disk_utilization": 1.0}
STREAM = "ai:caps"
PROTO = {"Content-Type": "application/x-protobuf"}


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    yield server
    server.stop()


def llm_calls(prefix: str) -> list[str]:
    return [json.dumps({"kind": "llm_call", "provider": "openai", "model": f"{prefix}-{i}",
                        "operation": "chat", "input_tokens": 3, "output_tokens": 2,
                        "duration_seconds": 0.25}) for i in range(DISTINCT)]


def label_sets(text: str) -> list[dict[str, str]]:
    return [s.labels for f in text_string_to_metric_families(text) for s in f.samples
            if s.name == f"{METRIC}_count"]


def overflow(text: str) -> float:
    return sample_value(text, "ai_exporter_series_overflow_total", {"metric": METRIC}) or 0.0


def events(text: str, source: str) -> float:
    return sample_value(text, "ai_exporter_events_total",
                        {"source": source, "kind": "llm_call"}) or 0.0


def assert_capped(proc: Exporter, folded: int) -> str:
    """The metric at its cap plus ``other``, and exactly ``folded`` observations folded;
    waits for the overflow count to reach ``folded`` (sources deliver asynchronously),
    then checks that it stays there."""
    wait_until(lambda: overflow(proc.metrics()) >= folded, 30,
               what=f"{folded} observations folded")
    time.sleep(0.5)
    text = proc.metrics()
    sets = label_sets(text)
    assert len(sets) == CAP + 1, len(sets)
    assert sum(1 for labels in sets if OTHER in labels.values()) == 1
    assert sample_value(text, "ai_exporter_series", {"metric": METRIC}) == CAP + 1
    assert overflow(text) == folded
    return text


def test_the_series_cap_holds_over_push_tail_redis_and_otlp_traces(
        tmp_path: Path, redis_server: RedisServer) -> None:
    log = tmp_path / "events.jsonl"
    log.touch()
    cfg: dict[str, Any] = {
        "health": HEALTH,
        "ai": {"max_series_per_metric": CAP, "log_interval_seconds": 60},
        "sources": {
            "tail": {"enabled": True, "base_dir": str(tmp_path), "paths": ["events.jsonl"],
                     "poll_interval_seconds": 0.05, "checkpoint_interval_seconds": 0.3},
            "redis_streams": {"enabled": True, "url": redis_server.url, "streams": [STREAM],
                              "consumer": "caps", "block_ms": 100, "batch_size": 500,
                              "state_file": str(tmp_path / "redis-applied.jsonl")},
            "otlp": {"enabled": True}}}
    proc = Exporter(tmp_path, config=cfg)
    try:
        # push: the first CAP models take the label sets, the rest fold into "other"
        body = "\n".join(llm_calls("push")).encode()
        answer = requests.post(f"{proc.url}/api/v1/events", data=body, timeout=30,
                               headers={"Content-Type": "application/x-ndjson"})
        assert answer.status_code == 200, answer.text[:300]
        folded = DISTINCT - CAP
        assert events(assert_capped(proc, folded), "push") == DISTINCT

        # the JSONL tail
        with open(log, "a") as handle:
            handle.write("".join(f"{line}\n" for line in llm_calls("tail")))
        folded += DISTINCT
        assert events(assert_capped(proc, folded), "tail") == DISTINCT

        # Redis Streams
        client = redis_server.client()
        pipe = client.pipeline(transaction=False)
        for line in llm_calls("redis"):
            pipe.xadd(STREAM, {"event": line})
        pipe.execute()
        client.close()
        folded += DISTINCT
        assert events(assert_capped(proc, folded), "redis_streams") == DISTINCT

        # OTLP/HTTP traces: one GenAI client span per model
        spans = [{"attrs": chat_attrs(model=f"span-{i}"), "span": i + 1}
                 for i in range(DISTINCT)]
        answer = requests.post(f"{proc.url}/v1/traces", headers=PROTO, timeout=30,
                               data=traces(spans, trace=77).SerializeToString())
        assert answer.status_code == 200, answer.content[:300]
        folded += DISTINCT
        assert events(assert_capped(proc, folded), "otlp") == DISTINCT
        assert proc.alive()
    finally:
        proc.stop()


def test_the_series_cap_holds_over_otlp_metrics(tmp_path: Path) -> None:
    cfg = {"health": HEALTH,
           "ai": {"max_series_per_metric": CAP, "log_interval_seconds": 60},
           "sources": {"otlp": {"enabled": True, "genai_signal": "metrics"}}}
    proc = Exporter(tmp_path, config=cfg)
    try:
        session = requests.Session()
        for i in range(DISTINCT):
            request = genai_metrics([0.25], [3], model=f"metric-{i}")
            answer = session.post(f"{proc.url}/v1/metrics", headers=PROTO, timeout=30,
                                  data=request.SerializeToString())
            assert answer.status_code == 200, answer.content[:300]
        assert_capped(proc, DISTINCT - CAP)
        assert proc.alive()
    finally:
        proc.stop()
