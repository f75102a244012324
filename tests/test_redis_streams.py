"""Redis Streams source against a real redis-server: exactly once across restarts of both."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from exporter.events import Rejection, Task
from exporter.sources.redis_streams import AppliedIds, entry_payload, event_from_fields
from tests.procs import (
    LOOPBACK,
    Exporter,
    Proc,
    free_port,
    require_binary,
    sample,
    sample_value,
    wait_until,
)

STREAM = "ai:events"
GROUP = "ai-metrics-exporter"
EVENTS = "ai_exporter_events_total"
TASK = json.dumps({"kind": "task", "component": "planner", "status": "succeeded"})


class RedisServer:
    """A real redis-server on a loopback port with an append-only file in ``dir``."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.dir = workdir / f"redis-{self.port}"
        self.dir.mkdir()
        self.url = f"redis://{LOOPBACK}:{self.port}/0"
        self.proc: Proc | None = None
        self.start()

    def start(self) -> None:
        binary = require_binary("redis-server")
        self.proc = Proc([binary, "--port", str(self.port), "--bind", LOOPBACK, "--save", "",
                          "--appendonly", "yes", "--dir", str(self.dir)],
                         self.dir / f"redis-{time.monotonic_ns()}.log")
        wait_until(lambda: self.client().ping(), 15, what="redis-server ping")

    def client(self) -> redis.Redis:
        return redis.Redis(host=LOOPBACK, port=self.port, socket_timeout=5)

    def crash(self) -> None:
        assert self.proc is not None
        self.proc.kill9()
        self.proc.stop()  # reaped already; closes its log file

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

    def publish(self, n: int, payload: str = TASK, stream: str = STREAM) -> list[str]:
        client = self.client()
        ids: list[str] = []
        for start in range(0, n, 500):
            pipe = client.pipeline(transaction=False)
            for _ in range(min(500, n - start)):
                pipe.xadd(stream, {"event": payload})
            ids.extend(i.decode() for i in pipe.execute())
        client.close()
        return ids

    def group(self, stream: str = STREAM) -> dict[str, Any]:
        # redis-py types every reply as "Awaitable or Any", for its async twin too.
        groups: list[dict[str, Any]] = self.client().xinfo_groups(stream)  # type: ignore[assignment]
        return next(g for g in groups if g["name"].decode() == GROUP)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    yield server
    server.stop()


def exporter_config(server: RedisServer, workdir: Path, **redis_cfg: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {"enabled": True, "url": server.url, "streams": [STREAM],
                           "consumer": "exporter-1", "block_ms": 200, "batch_size": 50,
                           "backoff_initial_seconds": 0.1, "backoff_max_seconds": 0.5,
                           "state_file": str(workdir / "redis-applied.jsonl")}
    cfg.update(redis_cfg)
    # One store per test directory, kept across the restarts a test makes.
    return {"sources": {"redis_streams": cfg}, "storage": {"path": str(workdir / "data")}}


def counted(exp: Exporter, kind: str = "task") -> float:
    return sample_value(exp.metrics(), EVENTS, {"source": "redis_streams", "kind": kind}) or 0.0


def wait_counted(exp: Exporter, n: int, timeout: float = 30.0) -> None:
    wait_until(lambda: counted(exp) == n, timeout, what=f"{n} events counted")
    time.sleep(0.5)  # nothing more may arrive: exactly n, not at least n
    assert counted(exp) == n


def wait_drained(server: RedisServer, timeout: float = 30.0) -> None:
    wait_until(lambda: (g := server.group())["pending"] == 0 and g["lag"] == 0, timeout,
               what="group drained")


# --- pure pieces ----------------------------------------------------------------------------
def test_entry_payload_and_whole_entry_fields() -> None:
    assert entry_payload({b"event": b"{}"}, "event") == b"{}"
    missing = entry_payload({b"other": b"{}"}, "event")
    assert isinstance(missing, Rejection) and missing.reason == "missing_field"
    fields = entry_payload({b"kind": b"task", b"component": b"c", b"status": b"failed",
                            b"duration_seconds": b"1.5"}, "")
    assert isinstance(fields, dict)
    event = event_from_fields(fields)
    assert isinstance(event, Task) and event.duration_seconds == 1.5
    partial = event_from_fields({"kind": "task", "component": "c"})
    assert isinstance(partial, Rejection) and partial.reason == "missing_field"


def test_applied_ids_are_bounded_and_an_older_journal_is_read(tmp_path: Path) -> None:
    ids = AppliedIds(10, [("s", f"{i}-0") for i in range(25)])
    assert ("s", "24-0") in ids and ("s", "15-0") in ids
    assert ("s", "14-0") not in ids and len(ids) == 10
    assert AppliedIds(10, ids.keys()).keys() == ids.keys()  # the cursor round-trips
    path = tmp_path / "ids.jsonl"
    path.write_text("".join(json.dumps(["s", f"{i}-0"]) + "\n" for i in range(12))
                    + '["s", "99-')  # an older release's journal, torn by a crash
    again = AppliedIds.from_journal(10, str(path))
    assert ("s", "11-0") in again and ("s", "1-0") not in again and len(again) == 10


# --- the real exporter against a real redis-server -----------------------------------------
@pytest.mark.e2e
def test_entries_counted_once_rejects_reported_and_acked(redis_server: RedisServer,
                                                         tmp_path: Path) -> None:
    exp = Exporter(tmp_path, exporter_config(redis_server, tmp_path))
    try:
        redis_server.publish(1000)
        client = redis_server.client()
        client.xadd(STREAM, {"event": "{not json"})
        client.xadd(STREAM, {"event": json.dumps({"kind": "nope"})})
        client.xadd(STREAM, {"payload": TASK})
        wait_counted(exp, 1000)
        wait_drained(redis_server)
        text = exp.metrics()
        rejected = "ai_exporter_events_rejected_total"
        for reason in ("malformed_json", "unknown_kind", "missing_field"):
            assert sample_value(text, rejected, {"source": "redis_streams",
                                                 "reason": reason}) == 1, reason
        assert sample_value(text, "ai_tasks_total", {"component": "planner",
                                                     "status": "succeeded"}) == 1000
        assert sample_value(text, "ai_exporter_redis_up") == 1
        assert sample_value(text, "ai_exporter_redis_stream_length",
                            {"stream": STREAM}) == 1003
        assert sample_value(text, "ai_exporter_redis_consumer_group_pending",
                            {"stream": STREAM, "group": GROUP}) == 0
        assert sample_value(text, "ai_exporter_redis_consumer_group_lag",
                            {"stream": STREAM, "group": GROUP}) == 0
        assert sample_value(text, "ai_exporter_redis_entries_total",
                            {"stream": STREAM, "outcome": "rejected"}) == 3
        assert exp.get("/readyz").status_code == 200
    finally:
        exp.stop()


@pytest.mark.e2e
def test_redis_down_at_start_then_restarted_mid_stream(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    server.stop()  # down before the exporter starts
    exp = Exporter(tmp_path, exporter_config(server, tmp_path, batch_size=20))
    try:
        ready = exp.get("/readyz")
        assert ready.status_code == 503
        assert "redis unavailable" in ready.json()["checks"]["source:redis_streams"]["detail"]
        assert sample_value(exp.metrics(), "ai_exporter_redis_up") == 0
        server.start()
        wait_until(lambda: exp.get("/readyz").status_code == 200, 15, what="ready")
        total = 0
        for _round in range(3):  # crash Redis while the exporter is consuming
            server.publish(3000)
            total += 3000
            server.crash()
            wait_until(lambda: exp.get("/readyz").status_code == 503, 15, what="not ready")
            server.start()
            # back before the next crash, so that each crash is an outage of its own
            wait_until(lambda: exp.get("/readyz").status_code == 200, 30, what="ready again")
        server.publish(500)
        total += 500
        wait_counted(exp, total)
        wait_drained(server)
        text = exp.metrics()
        assert sample(text, "ai_exporter_redis_reconnects_total") >= 3
        assert sample_value(text, "ai_exporter_redis_entries_total",
                            {"stream": STREAM, "outcome": "applied"}) == total
    finally:
        exp.stop()
        server.stop()


@pytest.mark.e2e
def test_exporter_graceful_restart_mid_stream(redis_server: RedisServer,
                                              tmp_path: Path) -> None:
    cfg = exporter_config(redis_server, tmp_path, batch_size=10)
    exp = Exporter(tmp_path, cfg)
    redis_server.publish(300)
    wait_counted(exp, 300)
    redis_server.publish(5000)
    wait_until(lambda: counted(exp) > 300, 10, what="consuming")
    exp.stop()  # SIGTERM mid-stream: what was counted is committed and acknowledged
    group = redis_server.group()
    assert group["pending"] == 0
    exp2 = Exporter(tmp_path, cfg)
    try:
        # The counts continue from the state store: every entry exactly once in total.
        wait_counted(exp2, 5300)
        wait_drained(redis_server)
    finally:
        exp2.stop()


@pytest.mark.e2e
def test_exporter_crash_mid_stream_counts_each_entry_once(redis_server: RedisServer,
                                                          tmp_path: Path) -> None:
    cfg = exporter_config(redis_server, tmp_path, batch_size=10)
    for round_ in range(3):  # killed at a different point of the stream each time
        exp = Exporter(tmp_path, cfg)
        redis_server.publish(2000)
        wait_until(lambda exp=exp, r=round_: counted(exp) > 2000 * r, 20, what="consuming")
        exp.kill9()
        exp.stop()  # reaped already; closes its log file
        pending = redis_server.group()["pending"]
        print(f"crash {round_}: pending={pending} lag={redis_server.group()['lag']}")
    exp2 = Exporter(tmp_path, cfg)
    try:
        # Counted-but-uncommitted entries were pending (not acked) and the stored state
        # did not hold them: they count once more; committed ones are skipped as
        # duplicates and acked. The total is exact.
        wait_counted(exp2, 6000)
        wait_drained(redis_server)
    finally:
        exp2.stop()


@pytest.mark.e2e
def test_counted_but_unacked_entries_are_not_counted_again(redis_server: RedisServer,
                                                           tmp_path: Path) -> None:
    """The exact state a crash between counting and acknowledging leaves behind."""
    client = redis_server.client()
    client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    ids = redis_server.publish(10)
    client.xreadgroup(GROUP, "exporter-1", {STREAM: ">"}, count=10)  # delivered, not acked
    journal = tmp_path / "redis-applied.jsonl"
    journal.write_text("".join(json.dumps([STREAM, i]) + "\n" for i in ids[:4]))
    exp = Exporter(tmp_path, exporter_config(redis_server, tmp_path))
    try:
        wait_counted(exp, 6)
        wait_drained(redis_server)
        assert sample_value(exp.metrics(), "ai_exporter_redis_entries_total",
                            {"stream": STREAM, "outcome": "duplicate"}) == 4
    finally:
        exp.stop()


@pytest.mark.e2e
def test_redelivered_entries_that_change_nothing_are_still_acknowledged(
        redis_server: RedisServer, tmp_path: Path) -> None:
    """Entries already counted and committed come again (here: the group is rewound, as
    after an operator's XGROUP SETID). They change no state, so no commit has anything new
    to write; they must be acknowledged all the same rather than stay pending."""
    exp = Exporter(tmp_path, exporter_config(redis_server, tmp_path))
    try:
        redis_server.publish(10)
        wait_counted(exp, 10)
        wait_drained(redis_server)
        redis_server.client().xgroup_setid(STREAM, GROUP, "0", entries_read=0)
        wait_until(lambda: sample_value(exp.metrics(), "ai_exporter_redis_entries_total",
                                        {"stream": STREAM, "outcome": "duplicate"}) == 10,
                   10, what="10 duplicates seen")
        wait_drained(redis_server, timeout=10)
        assert counted(exp) == 10
    finally:
        exp.stop()


@pytest.mark.e2e
def test_pending_entries_of_a_dead_consumer_are_reclaimed(redis_server: RedisServer,
                                                          tmp_path: Path) -> None:
    client = redis_server.client()
    client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    redis_server.publish(7)
    client.xreadgroup(GROUP, "dead-consumer", {STREAM: ">"}, count=100)
    assert redis_server.group()["pending"] == 7
    time.sleep(0.3)
    exp = Exporter(tmp_path, exporter_config(redis_server, tmp_path, consumer="exporter-2",
                                             reclaim_idle_ms=200))
    try:
        redis_server.publish(3)
        wait_counted(exp, 10)
        wait_drained(redis_server)
    finally:
        exp.stop()
