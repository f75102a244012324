"""Replicas in one Redis Streams consumer group: the sum over replicas stays exact.

Three real exporters (each its own storage directory and consumer name) share one stream
while a producer adds a known number of ``llm_call`` events. One replica is killed with
``kill -9`` mid-stream: restarted with the same consumer name and storage, or never again
(its pending entries are claimed by the others). Every event and every token is counted
exactly once over the replicas in both cases.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter import config
from tests.procs import Exporter, require_binary, wait_until
from tests.test_redis_streams import GROUP, STREAM, RedisServer

REPLICAS = 3
TOTAL = 9000  # events produced in each test
CHUNK = 300  # events per producer pipeline
EVENTS = "ai_exporter_events_total"
TOKENS = "ai_llm_tokens"  # family name as the parser gives it (no _total)


def llm_event(i: int) -> str:
    """Event number ``i``: the tokens vary with ``i``, so a lost or doubled event shows."""
    return json.dumps({"kind": "llm_call", "provider": "openai", "model": f"m{i % 3}",
                       "input_tokens": 1 + i % 97, "output_tokens": 1 + i % 13,
                       "duration_seconds": 0.5})


def tokens_of(indices: Iterator[int] | list[int]) -> tuple[int, int]:
    ins = outs = 0
    for i in indices:
        ins += 1 + i % 97
        outs += 1 + i % 13
    return ins, outs


class Producer(threading.Thread):
    """XADDs ``TOTAL`` events in pipelines of ``CHUNK``, a short pause between them (the
    stream is consumed while it is written); remembers each entry id's event number."""

    def __init__(self, server: RedisServer, pause: float = 0.05) -> None:
        super().__init__(name="producer", daemon=True)
        self.server, self.pause = server, pause
        self.index: dict[str, int] = {}
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            client = self.server.client()
            for start in range(0, TOTAL, CHUNK):
                pipe = client.pipeline(transaction=False)
                for i in range(start, min(start + CHUNK, TOTAL)):
                    pipe.xadd(STREAM, {"event": llm_event(i)})
                for i, raw in enumerate(pipe.execute(), start):
                    self.index[raw.decode()] = i
                time.sleep(self.pause)
            client.close()
        except BaseException as exc:  # reported by finish()
            self.error = exc

    def finish(self) -> None:
        self.join(60)
        assert not self.is_alive(), "producer did not finish"
        assert self.error is None, self.error
        assert len(self.index) == TOTAL


def replica_config(server: RedisServer, k: int, reclaim_idle_ms: int) -> dict[str, Any]:
    """Replica ``k``'s configuration; its storage directory is passed on its own."""
    return {"sources": {"redis_streams": {
                "enabled": True, "url": server.url, "streams": [STREAM], "group": GROUP,
                "consumer": f"replica-{k}", "block_ms": 200, "batch_size": 100,
                "reclaim_idle_ms": reclaim_idle_ms, "backoff_initial_seconds": 0.1,
                "backoff_max_seconds": 0.5}}}


def totals(text: str) -> tuple[float, float, float]:
    """(events, input tokens, output tokens) one replica counted from the stream."""
    events = ins = outs = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if family.name == "ai_exporter_events" and s.name == EVENTS \
                    and s.labels.get("source") == "redis_streams":
                events += s.value
            elif family.name == TOKENS and s.name.endswith("_total"):
                kind = s.labels.get("gen_ai_token_type")
                if kind == "input":
                    ins += s.value
                elif kind == "output":
                    outs += s.value
    return events, ins, outs


def scrape(exp: Exporter) -> tuple[float, float, float]:
    return totals(exp.metrics())


def summed(replicas: list[Exporter]) -> tuple[float, float, float]:
    parts = [scrape(r) for r in replicas]
    return (sum(p[0] for p in parts), sum(p[1] for p in parts), sum(p[2] for p in parts))


def expected() -> tuple[float, float, float]:
    ins, outs = tokens_of(list(range(TOTAL)))
    return float(TOTAL), float(ins), float(outs)


def drained(server: RedisServer) -> bool:
    group = server.group()
    pending: Any = server.client().xpending(STREAM, GROUP)
    return bool(group["lag"] == 0 and group["pending"] == 0 and pending["pending"] == 0)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.client().xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    yield server
    server.stop()


@pytest.fixture
def replicas() -> Iterator[list[Exporter]]:
    started: list[Exporter] = []
    yield started
    for exp in started:
        exp.stop()


def start_replicas(server: RedisServer, workdir: Path, reclaim_idle_ms: int,
                   replicas: list[Exporter]) -> None:
    for k in range(REPLICAS):
        replicas.append(Exporter(workdir, replica_config(server, k, reclaim_idle_ms),
                                 storage=workdir / f"replica-{k}"))


def kill_mid_stream(victim: Exporter, producer: Producer) -> tuple[float, float, float]:
    """Wait until ``victim`` has counted a share of the stream while the producer is still
    writing, then ``kill -9`` it; its last scrape before the kill is returned."""
    wait_until(lambda: scrape(victim)[0] >= TOTAL // (3 * REPLICAS), 30,
               what="the victim counting")
    last = scrape(victim)
    victim.kill9()
    victim.stop()  # reaped already; closes its log file
    assert producer.is_alive(), "the producer finished before the kill: not mid-stream"
    return last


def test_config_consumer_name_from_the_environment() -> None:
    """A stable consumer name without a file: AI_EXPORTER_SOURCES__REDIS_STREAMS__CONSUMER,
    as a StatefulSet sets it from the pod name (downward API, metadata.name)."""
    cfg = config.load(None, environ={"AI_EXPORTER_SOURCES__REDIS_STREAMS__CONSUMER":
                                     "ai-metrics-exporter-2"})
    assert cfg.sources.redis_streams.consumer == "ai-metrics-exporter-2"


@pytest.mark.e2e
def test_replica_killed_and_restarted_counts_each_event_once(
        redis_server: RedisServer, replicas: list[Exporter], tmp_path: Path) -> None:
    """kill -9 mid-stream, then the same consumer name and storage again. reclaim_idle_ms is
    well above the restart's duration, so the restarted replica finds its own pending
    entries: those its committed state holds are acknowledged as duplicates, the others
    (counted only in memory before the kill) are counted once."""
    start_replicas(redis_server, tmp_path, 60_000, replicas)
    producer = Producer(redis_server)
    producer.start()
    victim = replicas[1]
    before = kill_mid_stream(victim, producer)
    restarted = Exporter(tmp_path, replica_config(redis_server, 1, 60_000),
                         storage=victim.storage)
    replicas[1] = restarted
    first = scrape(restarted)
    producer.finish()
    wait_until(lambda: drained(redis_server), 60, what="group drained")
    wait_until(lambda: summed(replicas) == expected(), 20, interval=0.3,
               what=f"sum over replicas == {expected()}")
    time.sleep(1.0)  # nothing more arrives: exactly, not at least
    assert summed(replicas) == expected()
    shares = [scrape(r)[0] for r in replicas]
    assert all(share > 0 for share in shares), shares
    duplicates = sum(
        s.value for f in text_string_to_metric_families(restarted.metrics())
        for s in f.samples if s.name == "ai_exporter_redis_entries_total"
        and s.labels.get("outcome") == "duplicate")
    print(f"last scrape before kill {before[0]:.0f} events, first after restart "
          f"{first[0]:.0f}; shares {shares}; duplicates acknowledged {duplicates:.0f}")


@pytest.mark.e2e
def test_replica_killed_for_good_its_pending_entries_are_claimed(
        redis_server: RedisServer, replicas: list[Exporter], tmp_path: Path) -> None:
    """kill -9 mid-stream and never restarted: after reclaim_idle_ms the live replicas claim
    its pending entries (XAUTOCLAIM) and count them.

    What the dead replica contributes is what it committed *and* acknowledged: its storage
    (read by an exporter started on it without Redis) holds what it committed; the entries
    it committed but had not acknowledged yet were still pending under its name at its
    death (XPENDING, read right after the kill, before any claim), so the live replicas
    count them again: they are subtracted. Live sum + that == produced, exactly.

    reclaim_idle_ms (3 s) stays well above the time a live replica takes from delivery to
    acknowledgement (block_ms + the store's commit gap), or live replicas would claim each
    other's in-flight entries and count them twice."""
    reclaim_ms = 3000
    start_replicas(redis_server, tmp_path, reclaim_ms, replicas)
    producer = Producer(redis_server)
    producer.start()
    victim = replicas.pop(2)
    last_scrape = kill_mid_stream(victim, producer)
    client = redis_server.client()
    pel: Any = client.xpending_range(STREAM, GROUP, min="-", max="+", count=TOTAL,
                                     consumername="replica-2")
    pending_at_death = {e["message_id"].decode() for e in pel}
    assert len(pending_at_death) <= TOTAL
    producer.finish()
    wait_until(lambda: drained(redis_server), 60, what="group drained (claims included)")
    live = summed(replicas)

    state = msgspec.json.decode((victim.storage / "state.json").read_bytes())
    applied = {entry_id for _stream, entry_id in state["cursors"]["redis_streams"]["applied"]}
    committed_unacked = sorted(producer.index[i] for i in applied & pending_at_death)
    offline_cfg = {"sources": {"redis_streams": {"enabled": False}}}
    offline = Exporter(tmp_path, offline_cfg, storage=victim.storage)
    try:
        committed = scrape(offline)
    finally:
        offline.stop()
    assert committed[0] == len(applied)  # every committed event has its id in the cursor
    ins, outs = tokens_of(committed_unacked)
    dead = (committed[0] - len(committed_unacked), committed[1] - ins, committed[2] - outs)
    total = tuple(a + b for a, b in zip(live, dead, strict=True))
    print(f"dead replica: last scrape {last_scrape[0]:.0f}, committed {committed[0]:.0f}, "
          f"pending at death {len(pending_at_death)}, of them committed "
          f"{len(committed_unacked)}; live replicas {live[0]:.0f}")
    assert total == expected()
    time.sleep(1.0)
    assert summed(replicas) == live  # nothing more arrives
    assert drained(redis_server)
    claimed: Any = client.xinfo_consumers(STREAM, GROUP)
    dead_entry = [c for c in claimed if c["name"].decode() == "replica-2"]
    assert not dead_entry or dead_entry[0]["pending"] == 0


INCREASE_TEST = """
rule_files: []
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'ai_exporter_events_total{pod="live"}'
        values: '0+100x10'
      - series: 'ai_exporter_events_total{pod="dead"}'
        values: '0 100 200 300 stale'
    promql_expr_test:
      # The dead replica's series stops at its last scrape (3m). increase() over a window
      # covering the death: its last - first sample, extrapolated past the last sample by
      # half the mean scrape interval (the gap to the window's end is longer than 1.1
      # intervals): 300 * 3.5 / 3.
      - expr: increase(ai_exporter_events_total{pod="dead"}[10m])
        eval_time: 10m
        exp_samples: [{labels: '{pod="dead"}', value: 350}]
      - expr: sum(increase(ai_exporter_events_total[10m]))
        eval_time: 10m
        exp_samples: [{labels: '{}', value: 1350}]
      # What it counted up to its last scrape, exactly, for as long as the window reaches.
      - expr: sum(last_over_time(ai_exporter_events_total[10m]))
        eval_time: 10m
        exp_samples: [{labels: '{}', value: 1300}]
      - expr: ai_exporter_events_total{pod="dead"}
        eval_time: 4m
        exp_samples: []
"""


@pytest.mark.e2e
def test_increase_over_a_replica_that_stopped(tmp_path: Path) -> None:
    """What increase() and sum() show for a dead replica's series (docs/deployment.md)."""
    path = tmp_path / "increase_test.yml"
    path.write_text(INCREASE_TEST)
    result = subprocess.run([require_binary("promtool"), "test", "rules", str(path)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
