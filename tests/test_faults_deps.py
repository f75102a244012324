"""Faults of what the exporter depends on, and of the clock, each ending with exact counts.

* The OTLP push target down for an outage of hundreds of push intervals (0.2 s each):
  the push keeps no queue, so the exporter's memory stays flat through it, and once the
  receiver is back the cumulative values it gets equal ``/metrics``, and with delta
  temporality the deltas it got add up to the totals.
* Redis killed (``kill -9``) and restarted three times while a producer adds entries
  without pause (Redis with ``appendfsync always``, so that every entry it acknowledged
  survives): the exporter reports the outage, reconnects, and counts every entry Redis
  kept exactly once.
* The wall clock stepped back and forward (in process through the runtime's clock, end
  to end through ``tests/clockshift.c``, an ``LD_PRELOAD`` library that shifts the real
  process's wall clock and leaves its monotonic clock alone, as a step of the system
  clock does): no counter goes backwards, today's spend resets at the new UTC day and
  neither resets nor doubles when the clock steps back, and the push rate limit and the
  read timeouts (monotonic) neither lock clients out nor let them through.
"""

from __future__ import annotations

import email.utils
import json
import math
import random
import socket
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from exporter import catalog, config
from exporter.aggregation import checkpoint
from exporter.aggregation.state import MAX_STEP_BACK, AiState, DailySpend, utc_day
from exporter.runtime import Runtime
from exporter.web import create_app
from tests.otlp_receiver import (
    MAX_KEPT,
    OtlpReceiver,
    point_time,
    scraped,
    to_prometheus,
)
from tests.procs import (
    LOOPBACK,
    Exporter,
    Proc,
    require_binary,
    rss_bytes,
    sample,
    sample_value,
    wait_until,
)
from tests.test_otlp import assert_same_series, scrape_and_match, sum_deltas
from tests.test_redis_streams import (
    STREAM,
    TASK,
    RedisServer,
    counted,
    exporter_config,
    wait_counted,
    wait_drained,
)

DAY = 86_400.0
SPEND = catalog.AI_BUDGET_SPEND.name
LLM_CALL = {"kind": "llm_call", "provider": "openai", "model": "gpt-4o",
            "duration_seconds": 0.3, "cost_usd": 0.5}
TASK_EVENT = {"kind": "task", "component": "planner", "status": "succeeded"}


def monotonic_samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample that may only grow: counters, and histogram and summary buckets,
    counts and sums (``_created`` left out)."""
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        if family.type not in ("counter", "histogram", "summary"):
            continue
        for s in family.samples:
            if s.name.endswith("_created") or (family.type == "summary"
                                               and "quantile" in s.labels):
                continue
            out[(s.name, frozenset(s.labels.items()))] = float(s.value)
    return out


def assert_none_decreased(before: str, after: str, what: str) -> int:
    """No sample of ``before`` went down in ``after``; returns how many were compared."""
    old, new = monotonic_samples(before), monotonic_samples(after)
    down = {k: (old[k], new[k]) for k in old.keys() & new.keys() if new[k] < old[k]}
    assert down == {}, f"counters went backwards across {what}"
    return len(old.keys() & new.keys())


# --- the clock, in process -----------------------------------------------------------------
def test_the_spend_day_never_moves_backwards() -> None:
    now = 1_796_256_000.0 + 12 * 3600  # noon UTC
    spend = DailySpend()
    spend.today(now)["total"] = 2.0
    assert spend.today(now - 3600) == {"total": 2.0}  # back within the day
    # Past midnight: a new day, nothing spent yet.
    tomorrow = spend.today(now + 13 * 3600)
    assert tomorrow == {}
    tomorrow["total"] = 0.5
    # Stepped back across midnight: the new day stays held, once, neither 0 nor 2.5.
    assert spend.today(now) == {"total": 0.5} and spend.current(now)
    assert spend.today(now + 13 * 3600) == {"total": 0.5}  # forward again: no reset
    # Further back than MAX_STEP_BACK: a different day, started afresh.
    assert spend.today(now - MAX_STEP_BACK - 3600) == {}


def test_a_restart_with_the_clock_stepped_back_keeps_the_spend_held() -> None:
    now = 1_796_256_000.0 + 60  # 00:01 UTC
    state = AiState(max_series=100, max_tracked=100, max_samples=10_000, budgets={})
    state.spend.today(now)["total"] = 1.25
    saved = checkpoint.snapshot(state)
    for at, kept in ((now, 1.25), (now - 600, 1.25), (now + DAY, None),
                     (now - MAX_STEP_BACK - 600, None)):
        fresh = AiState(max_series=100, max_tracked=100, max_samples=10_000, budgets={})
        checkpoint.restore(fresh, saved, at)
        assert fresh.spend.by_scope.get("total") == kept, at
        if kept is not None:
            assert fresh.spend.day == utc_day(now)[0]


class Clock:
    """The real time plus a settable offset."""

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture
def stepped() -> Iterator[tuple[Runtime, FlaskClient, Clock]]:
    now = time.time()
    clock = Clock((now // DAY + 1) * DAY - now - 300)  # five minutes before midnight UTC
    # A limit that these few pushes never reach however fast they come (the limiter's own
    # behaviour across steps is the end-to-end test's): the bucket is in force, not in play.
    rt = Runtime(config.build({"ai": {"budgets": [{"scope": "openai", "usd_per_day": 5}]},
                               "web": {"security": {"limits": {"push_rate_per_second": 4,
                                                               "push_burst": 50}}}}),
                 clock=clock)
    rt.start()
    yield rt, create_app(rt).test_client(), clock
    rt.stop()


def test_counters_and_spend_across_steps_in_process(
        stepped: tuple[Runtime, FlaskClient, Clock]) -> None:
    _rt, client, clock = stepped
    base = clock.offset

    def push(n: int) -> None:
        response = client.post("/api/v1/events", data=json.dumps([LLM_CALL] * n),
                               headers={"Content-Type": "application/json"})
        assert response.status_code == 200, response.text

    def spend() -> float | None:
        return sample_value(client.get("/metrics").text, SPEND, {"scope": "openai"})

    push(3)
    assert spend() == pytest.approx(1.5)
    # (offset, spend right after the step, spend after one more call)
    steps = [(base - 3600, 1.5, 2.0), (base + 600, 0.0, 0.5), (base, 0.5, 1.0),
             (base + 600, 1.0, 1.5)]
    for offset, after_step, after_push in steps:
        before = client.get("/metrics").text
        clock.offset = offset
        after = client.get("/metrics").text
        assert assert_none_decreased(before, after, f"a step to {offset:+.0f}s") > 100
        assert spend() == pytest.approx(after_step), offset
        push(1)
        assert spend() == pytest.approx(after_push), offset
    text = client.get("/metrics").text
    assert sample(text, "ai_llm_requests_total", {"gen_ai_provider_name": "openai"}) == 7


# --- the clock, end to end ------------------------------------------------------------------
@pytest.fixture(scope="module")
def clockshift(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/clockshift.c built as a shared library."""
    out = tmp_path_factory.mktemp("clockshift") / "clockshift.so"
    subprocess.run([require_binary("gcc"), "-shared", "-fPIC", "-O2", "-o", str(out),
                    str(Path(__file__).with_name("clockshift.c")), "-ldl"],
                   check=True, timeout=60)
    return out


def server_time(exp: Exporter) -> float:
    """The exporter's wall clock, from the ``Date`` header of a response."""
    response = exp.get("/livez")
    return email.utils.parsedate_to_datetime(response.headers["Date"]).timestamp()


def half_head_answer(port: int, timeout: float) -> tuple[bytes, float]:
    """Send half a request head; what comes back and after how long."""
    started = time.monotonic()
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        try:
            data = sock.recv(4096)
        except TimeoutError:
            data = b""
    return data, time.monotonic() - started


@pytest.mark.e2e
def test_wall_clock_steps_in_the_real_process(tmp_path: Path, clockshift: Path) -> None:
    rate, burst = 4.0, 4
    offset_file = tmp_path / "clock-offset"
    now = time.time()
    base = (now // DAY + 1) * DAY - now - 300  # five minutes before midnight UTC
    offset_file.write_text(f"{base}\n")
    cfg = {"ai": {"budgets": [{"scope": "openai", "usd_per_day": 5}]},
           "web": {"header_read_timeout_seconds": 1.0,
                   "security": {"limits": {"push_rate_per_second": rate,
                                           "push_burst": burst}}}}
    exp = Exporter(tmp_path, cfg, env={"LD_PRELOAD": str(clockshift),
                                       "CLOCKSHIFT_FILE": str(offset_file)})
    pushed_tasks = 0
    try:
        assert abs(server_time(exp) - (time.time() + base)) < 3  # the shim is in effect

        def spend() -> float | None:
            return sample_value(exp.metrics(), SPEND, {"scope": "openai"})

        def push(events: list[dict[str, Any]]) -> requests.Response:
            return exp.post("/api/v1/events", json=events)

        def burst_of(n: int) -> int:
            """n pushes as fast as they go: how many the rate limit let through."""
            nonlocal pushed_tasks
            started = time.monotonic()
            codes = [push([TASK_EVENT]).status_code for _ in range(n)]
            elapsed = time.monotonic() - started
            assert set(codes) <= {200, 429}, codes
            allowed = codes.count(200)
            pushed_tasks += allowed
            # Not locked out: the bucket was full (less the call pushed before); not
            # unlimited: past the burst only what the rate refilled meanwhile.
            assert burst - 1 <= allowed <= burst - 1 + math.ceil(elapsed * rate) + 1, \
                (allowed, elapsed)
            return allowed

        assert push([LLM_CALL] * 3).status_code == 200
        assert spend() == pytest.approx(1.5)
        steps = [("back 1 h", base - 3600, 1.5, 2.0),
                 ("forward past midnight", base + 600, 0.0, 0.5),
                 ("back before midnight", base, 0.5, 1.0),
                 ("forward again", base + 600, 1.0, 1.5)]
        for what, offset, after_step, after_push in steps:
            before = exp.metrics()
            offset_file.write_text(f"{offset}\n")
            wait_until(lambda o=offset: abs(server_time(exp) - (time.time() + o)) < 3, 5,
                       what=f"the exporter's clock {what}")
            after = exp.metrics()
            assert assert_none_decreased(before, after, what) > 100
            assert spend() == pytest.approx(after_step), what
            time.sleep(burst / rate + 0.2)  # the bucket fills up again
            assert push([LLM_CALL]).status_code == 200
            assert spend() == pytest.approx(after_push), what
            burst_of(12)
            if what == "back 1 h":
                # Read timeouts run on the monotonic clock: still 408 after about 1 s.
                data, took = half_head_answer(exp.port, 5.0)
                assert data.startswith(b"HTTP/1.1 408") and took < 4, (data, took)
        text = exp.metrics()
        assert sample(text, "ai_tasks_total", {"component": "planner",
                                               "status": "succeeded"}) == pushed_tasks
        assert sample(text, "ai_llm_requests_total", {"gen_ai_provider_name": "openai"}) == 7
        assert exp.alive()
    finally:
        exp.stop()


# --- the OTLP push target down for a long outage ---------------------------------------------
INTERVAL = 0.2
OUTAGE = 50.0  # seconds: 250 push intervals


# One batch of the events pushed during the outage: the same series each time.
WORKLOAD: list[dict[str, Any]] = [
    *({**LLM_CALL, "model": model, "input_tokens": 100 + i, "output_tokens": 20 + i,
       "duration_seconds": 0.1 * (i + 1)} for i, model in enumerate(("gpt-4o", "gpt-4o-mini"))),
    *({**TASK_EVENT, "status": status} for status in ("queued", "started", "succeeded")),
    {"kind": "tool_call", "tool": "search", "duration_seconds": 0.05},
] * 20


def exports(text: str, outcome: str) -> float:
    return sample_value(text, "ai_exporter_otlp_exports_total", {"outcome": outcome}) or 0.0


@pytest.mark.e2e
def test_a_long_push_outage_keeps_memory_flat_and_values_exact(tmp_path: Path) -> None:
    receivers = {t: OtlpReceiver().start() for t in ("cumulative", "delta")}
    exporters: dict[str, Exporter] = {}
    try:
        for temporality, receiver in receivers.items():
            exporters[temporality] = Exporter(
                tmp_path, {"otlp": {"endpoint": receiver.base_url, "interval_seconds": INTERVAL,
                                    "max_backoff_seconds": 2 * INTERVAL,
                                    # Longer than a loaded receiver takes to answer: an
                                    # export answered late is sent again (at least once).
                                    "timeout_seconds": 1.0, "temporality": temporality}},
)
        for exp in exporters.values():  # every series there before the outage
            assert exp.post("/api/v1/events", json=WORKLOAD).status_code == 200
        for receiver in receivers.values():
            receiver.wait_for(lambda rs: len(rs) >= 10, 30, what="exports before the outage")
        failed_before = {t: exports(e.metrics(), "failure") for t, e in exporters.items()}
        for receiver in receivers.values():
            receiver.stop()
        rss: dict[str, list[tuple[float, int]]] = {t: [] for t in exporters}
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < OUTAGE:
            for temporality, exp in exporters.items():
                # Counters keep moving (on a fixed set of series); a Prometheus scrapes.
                assert exp.post("/api/v1/events", json=WORKLOAD).status_code == 200
                exp.metrics()
                rss[temporality].append((elapsed, rss_bytes(exp.pid)))
            time.sleep(1.0)
        for temporality, exp in exporters.items():
            text = exp.metrics()
            rounds = exports(text, "failure") - failed_before[temporality]
            assert exports(text, "success") > 0 and rounds >= 20, (temporality, rounds)
            early = statistics.median(v for t, v in rss[temporality] if t < OUTAGE / 3)
            late = max(v for t, v in rss[temporality] if t >= 2 * OUTAGE / 3)
            growth = (late - early) / 2**20
            print(f"{temporality}: {rounds:.0f} failed rounds in {OUTAGE:.0f}s "
                  f"({OUTAGE / INTERVAL:.0f} intervals); RSS {early / 2**20:.1f} MiB -> "
                  f"{late / 2**20:.1f} MiB ({growth:+.1f} MiB)")
            assert growth < 8.0, (temporality, growth)
        for receiver in receivers.values():
            receiver.start()
        # Cumulative: the first exports after the outage carry every increment.
        exp = exporters["cumulative"]
        received = receivers["cumulative"]
        for _ in range(5):  # as for delta below: a live series may move between two reads
            text, request = scrape_and_match(exp, lambda: [r.request for r in received.requests()])
            if scraped(text) == to_prometheus(request):
                break
        assert assert_same_series(text, request) > 100
        # Delta: everything received, up to the export of one scrape, adds up to it.
        exp, received = exporters["delta"], receivers["delta"]
        # A few attempts: a scrape can be matched with the push's own collection just
        # before it (then series read live, such as process CPU, moved in between), which
        # the next attempt does not repeat; a lost increment stays lost in every attempt.
        for _ in range(5):
            text, request = scrape_and_match(exp, lambda: [r.request for r in received.requests()])
            kept = received.requests()
            assert len(kept) < MAX_KEPT  # the receiver dropped none
            upto = [r for r in kept if point_time(r.request) <= point_time(request)]
            totals, served = sum_deltas(upto), scraped(text)
            compared = [k for k in totals if k in served]
            wrong = {k: (totals[k], served[k]) for k in compared
                     if not math.isclose(totals[k], served[k], rel_tol=1e-9, abs_tol=1e-9)}
            if not wrong:
                break
        assert wrong == {} and len(compared) > 100
        assert any(k[0] == "ai_exporter_events_total" for k in compared)
    finally:
        for exp in exporters.values():
            exp.stop()
        for receiver in receivers.values():
            receiver.stop()


# --- Redis killed and restarted under load ---------------------------------------------------
class DurableRedis(RedisServer):
    """redis-server that writes every change to its append-only file before answering."""

    def start(self) -> None:
        binary = require_binary("redis-server")
        self.proc = Proc([binary, "--port", str(self.port), "--bind", LOOPBACK, "--save", "",
                          "--appendonly", "yes", "--appendfsync", "always",
                          "--dir", str(self.dir)],
                         self.dir / f"redis-{time.monotonic_ns()}.log")
        wait_until(lambda: self.client().ping(), 15, what="redis-server ping")


class Producer(threading.Thread):
    """XADDs without pause, in pipelines of 20, through outages; remembers each id Redis
    acknowledged. Bounded in entries and time."""

    def __init__(self, port: int, limit: int = 20_000, seconds: float = 60.0) -> None:
        super().__init__(name="producer", daemon=True)
        self.port, self.limit, self.seconds = port, limit, seconds
        self.acked: list[str] = []
        self.failures = 0
        self.stop_event = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + self.seconds
        client = redis.Redis(host=LOOPBACK, port=self.port, socket_timeout=2)
        while (not self.stop_event.is_set() and time.monotonic() < deadline
               and len(self.acked) < self.limit):
            try:
                pipe = client.pipeline(transaction=False)
                for _ in range(20):
                    pipe.xadd(STREAM, {"event": TASK})
                self.acked.extend(i.decode() for i in pipe.execute())
                time.sleep(0.005)
            except (redis.RedisError, OSError):
                self.failures += 1  # some of the batch may have been added: XLEN tells
                client.close()
                time.sleep(0.05)
                client = redis.Redis(host=LOOPBACK, port=self.port, socket_timeout=2)
        client.close()


@pytest.mark.e2e
def test_redis_killed_under_load_counts_every_kept_entry_once(tmp_path: Path) -> None:
    server = DurableRedis(tmp_path)
    exp = Exporter(tmp_path, exporter_config(server, tmp_path, batch_size=50))
    producer = Producer(server.port)
    rnd = random.Random(17)
    try:
        producer.start()
        wait_until(lambda: counted(exp) > 0, 15, what="consuming")
        for round_ in range(3):
            time.sleep(rnd.uniform(1.0, 2.5))  # a different point of the stream each time
            server.crash()
            wait_until(lambda: exp.get("/readyz").status_code == 503, 15, what="not ready")
            ready = exp.get("/readyz").json()["checks"]["source:redis_streams"]
            assert "redis unavailable" in ready["detail"]
            assert sample_value(exp.metrics(), "ai_exporter_redis_up") == 0
            assert exp.get("/livez").status_code == 200 and exp.alive()
            time.sleep(0.5)  # the producer fails meanwhile
            server.start()
            wait_until(lambda: exp.get("/readyz").status_code == 200, 20,
                       what=f"ready again after kill {round_ + 1}")
        time.sleep(1.0)
        producer.stop_event.set()
        producer.join(10)
        assert not producer.is_alive()
        client = server.client()
        kept = int(client.xlen(STREAM))  # type: ignore[arg-type]
        ids = {i.decode() for i, _ in client.xrange(STREAM)}  # type: ignore[union-attr]
        assert set(producer.acked) <= ids  # appendfsync always: nothing acknowledged lost
        wait_counted(exp, kept, timeout=60)
        wait_drained(server)
        text = exp.metrics()
        assert sample_value(text, "ai_exporter_redis_entries_total",
                            {"stream": STREAM, "outcome": "applied"}) == kept
        assert sample(text, "ai_exporter_redis_reconnects_total") >= 3
        duplicates = sample_value(text, "ai_exporter_redis_entries_total",
                                  {"stream": STREAM, "outcome": "duplicate"}) or 0
        print(f"redis: {kept} entries kept ({len(producer.acked)} acknowledged, "
              f"{producer.failures} failed batches), counted once each; "
              f"{duplicates:.0f} redelivered entries skipped")
        assert exp.alive()
    finally:
        producer.stop_event.set()
        exp.stop()
        server.stop()
