"""The soak load, shared by ``benchmarks/soak.py`` and ``tests/test_soak.py``: concurrent
scrapers of ``/metrics``, pushers of JSON arrays to ``POST /api/v1/events`` and OTLP clients
posting protobuf spans to ``POST /v1/traces``, all at once against real processes on
loopback, while the exporter's RSS is sampled.

Each kind of client runs in one child process (``spawn``) with one thread per client and
one persistent HTTP/1.1 connection per thread (``http.client``), so a few processes carry
the whole load. Every client is paced: a scraper scrapes once per ``scrape_interval`` (its
phase spread over the interval), the pushers together send ``push_rate`` batches per
second and the OTLP clients ``otlp_rate`` bodies per second; a client that falls behind
sends at once and does not catch up in a burst. Bodies are encoded before the start: push
bodies are a few arrays of the demo mix sent round robin (push counts every copy); each
OTLP body is one encoded request whose 16-byte trace id is replaced per send, so every
span is distinct and none is dropped as a retried export.

Every response status is counted, and every client-side failure (refused, reset, timeout)
too. ``run_load`` returns the counts, the latencies of every scrape, the events and spans
the server accepted by its 2xx answers and the RSS samples. Every loop is bounded in
count and in wall-clock time.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import multiprocessing
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.synchronize import Event
from typing import Any
from urllib.parse import urlsplit

import msgspec
import requests
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceResponse,
)
from prometheus_client.parser import text_string_to_metric_families

from exporter.sources.demo import DemoWorkload, Schedule
from tests.otlpcases import chat_attrs, traces

# Prometheus's scrape headers (protobuf is not offered: text is what both servers serve)
SCRAPE_HEADERS = {
    "Accept": "text/plain;version=0.0.4;q=0.9,*/*;q=0.1",
    "Accept-Encoding": "gzip",
    "User-Agent": "soak-scraper",
}
MODELS = ("gpt-4o-mini", "gpt-4o", "o3-mini", "claude-sonnet", "gemini-2.5-flash")
# The trace id every OTLP template carries, replaced per send (16 bytes, no other field
# of the encoded request holds them)
_MARKER = bytes.fromhex("9e3779b97f4a7c15f39cc0605cedc834")
_MAX_SAMPLES = 2_000_000  # latencies kept per client process
# A client drops a kept-alive connection idle for longer than this and opens a new one, as
# Go's HTTP client (Prometheus) does: the servers' keep-alive timeouts are 10 s (cheroot)
# and longer, and a request sent on a connection the server is closing fails on the wire.
IDLE_CLOSE = 5.0
PUSH_BODIES = 8  # distinct push bodies, sent round robin


@dataclass
class Plan:
    """What to run. A rate of 0 (or a count of 0) leaves that kind of client out;
    ``scrape_interval`` 0 scrapes back to back."""

    exporter_url: str
    seconds: float
    scrapers: int = 100
    scrape_interval: float = 2.0
    node_url: str | None = None  # scraped by the same number of scrapers, same pacing
    pushers: int = 50
    push_rate: float = 10.0  # batches per second, all pushers together
    batch: int = 1000
    otlp_clients: int = 2
    otlp_rate: float = 4.0  # bodies per second, all OTLP clients together
    otlp_spans: int = 256  # spans per body
    rss_pid: int | None = None
    rss_interval: float = 2.0
    timeout: float = 30.0  # per request
    progress: Callable[[float, int | None], None] | None = None  # (elapsed, RSS bytes)


@dataclass
class ClientResult:
    """What one client process saw."""

    kind: str
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)  # client side, by exception
    latencies: list[float] = field(default_factory=list)  # seconds, scrapers only
    sent: int = 0  # requests sent
    items: int = 0  # events (spans) in the 2xx answers' accepted counts
    behind: int = 0  # sends that started late by more than one interval

    def fivexx(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)

    def others(self) -> int:
        """Answers that are neither 2xx nor 5xx."""
        return sum(n for status, n in self.statuses.items() if not 200 <= status < 300
                   and status < 500)


@dataclass
class LoadResult:
    clients: dict[str, ClientResult]
    seconds: float  # wall time from the start signal until the last client stopped
    rss: list[tuple[float, int]]  # (seconds since the start, VmRSS bytes)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..1); nan for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def rss_bytes(pid: int) -> int | None:
    """VmRSS of ``pid`` from ``/proc``; None once it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def rss_drift(samples: Sequence[tuple[float, int]], seconds: float,
              warmup: float = 0.2) -> tuple[int, int, float]:
    """(RSS after the first ``warmup`` share of the run, RSS at the end, relative
    change). The first figure is the first sample at or past the mark, the second the
    median of the last three samples (one sample catches a collection mid-way)."""
    after = [rss for t, rss in samples if t >= warmup * seconds]
    if len(after) < 2:
        raise ValueError("too few RSS samples after the warm-up")
    base = after[0]
    end = sorted(after[-3:])[len(after[-3:]) // 2]
    return base, end, (end - base) / base


def counter_total(url: str, name: str, labels: dict[str, str], timeout: float = 30) -> float:
    """Sum of every sample of ``name`` whose labels include ``labels``."""
    text = requests.get(f"{url}/metrics", timeout=timeout).text
    return sum(float(s.value) for f in text_string_to_metric_families(text)
               for s in f.samples if s.name == name
               and all(s.labels.get(k) == v for k, v in labels.items()))


def server_counts(url: str) -> dict[str, float]:
    """The exporter's own counts the load is checked against."""
    text = requests.get(f"{url}/metrics", timeout=30).text
    out = {"push_events": 0.0, "otlp_events": 0.0, "otlp_mapped": 0.0, "otlp_duplicate": 0.0,
           "otlp_rejected": 0.0, "otlp_dedup_ids": 0.0}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "ai_exporter_events_total":
                if s.labels.get("source") == "push":
                    out["push_events"] += float(s.value)
                elif s.labels.get("source") == "otlp":
                    out["otlp_events"] += float(s.value)
            elif s.name == "ai_exporter_otlp_intake_dedup_ids":
                out["otlp_dedup_ids"] = float(s.value)
            elif (s.name == "ai_exporter_otlp_intake_items_total"
                  and s.labels.get("signal") == "traces"):
                key = f"otlp_{s.labels.get('outcome')}"
                if key in out:
                    out[key] += float(s.value)
    return out


def sequential_scrapes(url: str, count: int, pause: float = 0.05,
                       timeout: float = 30.0) -> list[float]:
    """Seconds per scrape for ``count`` scrapes one after another on one kept-alive
    connection (the idle figure); a failed scrape raises."""
    conn = _Conn(url, timeout)
    times = []
    try:
        for _ in range(count):
            t0 = time.perf_counter()
            status, body = conn.request("GET", "/metrics", None, SCRAPE_HEADERS)
            times.append(time.perf_counter() - t0)
            if status != 200 or not body:
                raise AssertionError(f"{url}/metrics answered {status}")
            time.sleep(pause)
    finally:
        conn.close()
    return times


# --- bodies ---------------------------------------------------------------------------------

def push_bodies(count: int, size: int, seed: int = 7) -> list[bytes]:
    """``count`` JSON arrays of ``size`` events of the demo workload's mix, encoded as a
    client would (null fields left out)."""
    demo = DemoWorkload(1000, Schedule("none", 0, 1), seed=seed)
    raws: list[bytes] = []
    elapsed = 0.0
    for _ in range(1_000_000):  # bounded: each tick yields events
        if len(raws) >= count * size:
            break
        for event in demo.tick(elapsed, 0.25):
            fields = {k: v for k, v in msgspec.to_builtins(event).items() if v is not None}
            raws.append(msgspec.json.encode(fields))
        elapsed += 0.25
    return [b"[" + b",".join(raws[i * size:(i + 1) * size]) + b"]" for i in range(count)]


def otlp_template(size: int) -> bytes:
    """One encoded ``ExportTraceServiceRequest`` of ``size`` GenAI chat spans (as the
    OpenAI instrumentation emits them), every span under the trace id ``_MARKER``."""
    spans = [{"attrs": chat_attrs(model=MODELS[i % len(MODELS)], input_tokens=100 + i,
                                  output_tokens=20 + i % 7), "span": i + 1,
              "seconds": 0.2 + (i % 10) / 10} for i in range(size)]
    body: bytes = traces(spans, trace=int.from_bytes(_MARKER, "big")).SerializeToString()
    if body.count(_MARKER) != size:
        raise AssertionError("the trace id marker is not unique in the encoded body")
    return body


def prime(url: str, batch: int, spans: int, bodies: int = PUSH_BODIES) -> None:
    """Send every push body once and a few OTLP bodies, so that the label sets the load
    creates exist before the idle scrapes are timed (a scrape's cost follows the series
    served)."""
    conn = _Conn(url, 60.0)
    try:
        for body in push_bodies(bodies, batch):
            status, _ = conn.request("POST", "/api/v1/events", body,
                                     {"Content-Type": "application/json"})
            if status != 200:
                raise AssertionError(f"priming push answered {status}")
        template = otlp_template(spans)
        for n in range(4):
            trace_id = ((0xFFFF << 64) + n).to_bytes(16, "big")
            status, _ = conn.request("POST", "/v1/traces", template.replace(_MARKER, trace_id),
                                     {"Content-Type": "application/x-protobuf"})
            if status != 200:
                raise AssertionError(f"priming OTLP answered {status}")
    finally:
        conn.close()


# --- client processes -----------------------------------------------------------------------

class _Conn:
    """One persistent connection; reopened after any failure."""

    def __init__(self, url: str, timeout: float, idle_close: float = IDLE_CLOSE) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.timeout = timeout
        self.idle_close = idle_close
        self.last = 0.0
        self.conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: bytes | None,
                headers: dict[str, str]) -> tuple[int, bytes]:
        now = time.monotonic()
        if self.conn is not None and now - self.last > self.idle_close:
            self.close()  # the server may be closing it right now (its keep-alive timeout)
        self.last = now
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            self.conn.request(method, path, body=body, headers=headers)
            response = self.conn.getresponse()
            data = response.read()
        except BaseException:
            self.close()
            raise
        if response.will_close:
            self.close()
        return response.status, data

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(OSError):
                self.conn.close()
            self.conn = None


def _paced(threads: int, rate: float, seconds: float, start: float, index: int,
           send: Callable[[int], None], result: ClientResult, lock: threading.Lock) -> None:
    """Call ``send(n)`` on thread ``index`` of ``threads`` sharing ``rate`` calls per
    second (0: back to back), phases spread over the interval, until ``seconds`` after
    ``start`` (perf_counter)."""
    interval = threads / rate if rate > 0 else 0.0
    due = start + interval * index / max(threads, 1)
    end = start + seconds
    for n in range(10_000_000):
        now = time.perf_counter()
        if due > now:
            if due >= end:
                return
            time.sleep(due - now)
        elif interval and now - due > interval:
            with lock:
                result.behind += 1
            due = now
        if time.perf_counter() >= end:
            return
        send(n)
        due += interval


def _client_main(kind: str, name: str, url: str, threads: int, rate: float, seconds: float,
                 options: dict[str, Any], ready: Any, go: Event, out: Any) -> None:
    """One client process: ``threads`` clients of ``kind`` (scrape, push, otlp)."""
    result = ClientResult(name)
    lock = threading.Lock()
    timeout = float(options.get("timeout", 30.0))
    worker: Callable[[_Conn, int, int], None]
    if kind == "scrape":
        def worker(conn: _Conn, index: int, n: int) -> None:
            t0 = time.perf_counter()
            status, body = conn.request("GET", "/metrics", None, SCRAPE_HEADERS)
            elapsed = time.perf_counter() - t0
            with lock:
                result.sent += 1
                result.statuses[status] += 1
                if status == 200 and body and len(result.latencies) < _MAX_SAMPLES:
                    result.latencies.append(elapsed)
                elif status == 200:
                    result.errors["empty body"] += 1
    elif kind == "push":
        bodies = push_bodies(PUSH_BODIES, int(options["batch"]))
        push_headers = {"Content-Type": "application/json"}

        def worker(conn: _Conn, index: int, n: int) -> None:
            status, body = conn.request("POST", "/api/v1/events", bodies[(index + n) %
                                        len(bodies)], push_headers)
            accepted = int(json.loads(body).get("accepted", 0)) if 200 <= status < 300 else 0
            with lock:
                result.sent += 1
                result.statuses[status] += 1
                result.items += accepted
    elif kind == "otlp":
        size = int(options["spans"])
        template = otlp_template(size)
        otlp_headers = {"Content-Type": "application/x-protobuf"}
        base = int(options.get("trace_base", 1)) << 64

        def worker(conn: _Conn, index: int, n: int) -> None:
            trace_id = (base + (index << 40) + n + 1).to_bytes(16, "big")
            status, data = conn.request("POST", "/v1/traces",
                                        template.replace(_MARKER, trace_id), otlp_headers)
            accepted = 0
            if 200 <= status < 300:
                response = ExportTraceServiceResponse.FromString(data)
                accepted = size - int(response.partial_success.rejected_spans)
            with lock:
                result.sent += 1
                result.statuses[status] += 1
                result.items += accepted
    else:
        raise ValueError(kind)

    def run(index: int, start: float) -> None:
        conn = _Conn(url, timeout)

        def send(n: int) -> None:
            try:
                worker(conn, index, n)
            except (OSError, http.client.HTTPException, ValueError) as exc:
                with lock:
                    result.sent += 1
                    result.errors[type(exc).__name__] += 1

        try:
            _paced(threads, rate, seconds, start, index, send, result, lock)
        finally:
            conn.close()

    ready.put(kind)
    if not go.wait(120):
        out.put(result)
        return
    start = time.perf_counter()
    pool = [threading.Thread(target=run, args=(i, start), name=f"{kind}-{i}", daemon=True)
            for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(seconds + timeout + 30)
    with lock:
        out.put(result)


def run_load(plan: Plan) -> LoadResult:
    """Start every client process, release them together, sample RSS until they stop,
    and collect what each saw."""
    ctx = multiprocessing.get_context("spawn")
    ready: Any = ctx.Queue()
    out: Any = ctx.Queue()
    go = ctx.Event()
    jobs: list[tuple[str, str, str, int, float, dict[str, Any]]] = []
    scrape_rate = plan.scrapers / plan.scrape_interval if plan.scrape_interval > 0 else 0.0
    common: dict[str, Any] = {"timeout": plan.timeout}
    if plan.scrapers:
        jobs.append(("scrape", "scrape", plan.exporter_url, plan.scrapers, scrape_rate, common))
        if plan.node_url:
            jobs.append(("scrape", "node_scrape", plan.node_url, plan.scrapers, scrape_rate,
                         common))
    if plan.pushers and plan.push_rate > 0:
        jobs.append(("push", "push", plan.exporter_url, plan.pushers, plan.push_rate,
                     {**common, "batch": plan.batch}))
    if plan.otlp_clients and plan.otlp_rate > 0:
        jobs.append(("otlp", "otlp", plan.exporter_url, plan.otlp_clients, plan.otlp_rate,
                     {**common, "spans": plan.otlp_spans,
                      "trace_base": int(time.time() * 1000) & 0xFFFFFFFF}))
    procs = [ctx.Process(target=_client_main, name=f"soak-{name}",
                         args=(kind, name, url, threads, rate, plan.seconds, options, ready,
                               go, out),
                         daemon=True)
             for kind, name, url, threads, rate, options in jobs]
    for proc in procs:
        proc.start()
    results: dict[str, ClientResult] = {}
    rss: list[tuple[float, int]] = []
    try:
        for _ in procs:
            ready.get(timeout=120)  # bodies encoded, threads about to start
        go.set()
        start = time.monotonic()
        names = [name for _, name, *_ in jobs]
        pending = dict(zip(names, procs, strict=True))
        deadline = start + plan.seconds + plan.timeout + 90
        next_rss = start
        next_progress = start + 60
        while len(results) < len(procs) and time.monotonic() < deadline:
            now = time.monotonic()
            if plan.rss_pid is not None and now >= next_rss:
                value = rss_bytes(plan.rss_pid)
                if value is not None:
                    rss.append((now - start, value))
                next_rss += plan.rss_interval
            if plan.progress is not None and now >= next_progress:
                plan.progress(now - start, rss[-1][1] if rss else None)
                next_progress += 60
            try:
                got: ClientResult = out.get(timeout=max(0.05, min(next_rss, next_progress)
                                                          - time.monotonic()))
            except queue.Empty:
                continue
            results[got.kind] = got
        wall = time.monotonic() - start
        if len(results) < len(procs):
            raise AssertionError(f"client processes did not report: "
                                 f"{sorted(set(pending) - set(results))}")
    finally:
        go.set()
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
    return LoadResult(results, wall, rss)


__all__ = ["SCRAPE_HEADERS", "ClientResult", "LoadResult", "Plan", "counter_total",
           "otlp_template", "percentile", "prime", "push_bodies", "rss_bytes", "rss_drift",
           "run_load", "sequential_scrapes", "server_counts"]
