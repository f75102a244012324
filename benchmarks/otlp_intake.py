"""OTLP intake: GenAI spans per second, in process and end to end, beside JSON push of the
same calls in the same run.

1. In process, one core: decode + map + aggregate batches of ``--batch`` GenAI chat spans
   (OTLP protobuf, as the official OpenAI instrumentation emits them: nine attributes) through
   ``OtlpSource.handle``, against the same calls as ``llm_call`` JSON arrays through
   ``PushSource.handle``. Rates per CPU second of this process (``time.process_time``).
2. Over HTTP: the exporter as a real process on a loopback port; ``--clients`` client
   processes POST pre-encoded protobuf bodies to ``/v1/traces`` (fresh span ids in every
   body, so none is a duplicate) for at most ``--seconds`` seconds, then the same with JSON
   arrays to ``/api/v1/events``; spans (events) counted by the server per wall second, with
   the server's own count checked against what was sent.
3. Scrape latency: ``/metrics`` medians while idle and while the OTLP clients run.

Targets: ≥ 150,000 spans per CPU second in process, ≥ 50,000 spans/s end to end, scrape
latency under ingest within 10 % of idle.

    .venv/bin/python benchmarks/otlp_intake.py [--runs 3] [--clients 4] [--seconds 6]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import msgspec
import requests
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
if not os.environ.get("PYTHONPATH"):
    sys.path.insert(0, str(ROOT))

from benchmarks.push import free_port, start_exporter  # noqa: E402
from exporter import config  # noqa: E402
from exporter.aggregator import Aggregator  # noqa: E402
from exporter.ingest import Ingestor  # noqa: E402
from exporter.sources.otlp import OtlpSource  # noqa: E402
from exporter.sources.push import PushSource  # noqa: E402
from tests.otlpcases import chat_attrs, traces  # noqa: E402

TARGET_IN_PROCESS = 150_000
TARGET_HTTP = 50_000
MODELS = ("gpt-4o-mini", "gpt-4o", "o3-mini", "claude-sonnet", "gemini-2.5-flash")


def span_bodies(batches: int, size: int, first_trace: int = 1) -> list[bytes]:
    """``batches`` OTLP protobuf bodies of ``size`` chat spans, every span id distinct."""
    bodies = []
    for b in range(batches):
        spans = [{"attrs": chat_attrs(model=MODELS[i % len(MODELS)], input_tokens=100 + i,
                                      output_tokens=20 + i % 7), "span": i + 1,
                  "seconds": 0.2 + (i % 10) / 10}
                 for i in range(size)]
        bodies.append(traces(spans, trace=first_trace + b).SerializeToString())
    return bodies


def push_bodies(batches: int, size: int) -> list[bytes]:
    """The same calls as ``llm_call`` JSON arrays."""
    bodies = []
    for _ in range(batches):
        events = [{"kind": "llm_call", "provider": "openai", "model": MODELS[i % len(MODELS)],
                   "operation": "chat", "input_tokens": 100 + i,
                   "output_tokens": 20 + i % 7, "duration_seconds": 0.2 + (i % 10) / 10,
                   "component": "agent-svc"} for i in range(size)]
        bodies.append(msgspec.json.encode(events))
    return bodies


def per_cpu(label: str, run: Any, items: int, rounds: int) -> float:
    cpu = []
    for _ in range(rounds):
        c0 = time.process_time()
        run()
        cpu.append(items / (time.process_time() - c0))
    median = statistics.median(cpu)
    print(f"  {label:<46} {median:>10,.0f} /CPU s  (min {min(cpu):,.0f}, max {max(cpu):,.0f})")
    return median


def in_process(args: argparse.Namespace) -> tuple[float, float]:
    n = args.in_process_batches
    print(f"In process: {n} batches of {args.batch} GenAI chat spans, {args.runs} rounds")
    cfg = config.build({})
    rounds = []
    for r in range(args.runs):
        rounds.append(span_bodies(n, args.batch, first_trace=1 + r * n))
    otlp = OtlpSource(Ingestor(Aggregator()), cfg.sources.otlp, None, 1 << 26)
    it = iter(rounds)

    def run_otlp() -> None:
        for body in next(it):
            result = otlp.handle("traces", body, "application/x-protobuf")
            assert result.status == 200 and not result.message
    spans = per_cpu("OTLP /v1/traces (decode + map + aggregate)", run_otlp, n * args.batch,
                    args.runs)
    pushes = push_bodies(n, args.batch)
    push = PushSource(Ingestor(Aggregator()), 1 << 26)

    def run_push() -> None:
        for body in pushes:
            assert push.handle(body, "application/json", "").status == 200
    events = per_cpu("JSON push of the same calls (native path)", run_push, n * args.batch,
                     args.runs)
    print(f"  OTLP / push: {spans / events:.2f}x; target {TARGET_IN_PROCESS:,} spans per CPU "
          f"second: {spans / TARGET_IN_PROCESS:.2f}x the target")
    return spans, events


def post_all(url: str, path: str, content_type: str, bodies: list[bytes], seconds: float,
             start_at: float) -> tuple[int, int]:
    """Post each body once until the deadline; (bodies sent, failures)."""
    session = requests.Session()
    headers = {"Content-Type": content_type}
    while time.time() < start_at:
        time.sleep(0.001)
    deadline = time.monotonic() + seconds
    sent = failures = 0
    for body in bodies:
        if time.monotonic() > deadline:
            break
        response = session.post(f"{url}{path}", data=body, headers=headers, timeout=60)
        sent += 1
        failures += response.status_code != 200
    return sent, failures


def counted(url: str, source: str) -> float:
    text = requests.get(f"{url}/metrics", timeout=30).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "ai_exporter_events_total" and s.labels.get("source") == source)


def scrape_ms(url: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        requests.get(f"{url}/metrics", timeout=30).raise_for_status()
        out.append((time.perf_counter() - t0) * 1000)
        time.sleep(0.05)
    return out


def over_http(args: argparse.Namespace) -> None:
    per_client = args.http_batches
    print(f"\nOver HTTP: {args.clients} client processes, batches of {args.batch}, at most "
          f"{args.seconds:g} s and {per_client} bodies per client, {args.runs} runs")
    with tempfile.TemporaryDirectory(prefix="bench-otlp-", dir=args.storage_dir) as tmp:
        proc, url = start_exporter(Path(tmp))
        try:
            idle = scrape_ms(url, 20)
            otlp_rates, push_rates, busy = [], [], []
            for run in range(args.runs):
                for kind in ("otlp", "push"):
                    jobs = []
                    for c in range(args.clients):
                        first = 1 + (run * args.clients + c) * per_client
                        bodies = (span_bodies(per_client, args.batch, first) if kind == "otlp"
                                  else push_bodies(per_client, args.batch))
                        jobs.append(bodies)
                    path, ctype = (("/v1/traces", "application/x-protobuf") if kind == "otlp"
                                   else ("/api/v1/events", "application/json"))
                    before = counted(url, kind)
                    start_at = time.time() + 0.5
                    scrapes: list[float] = []
                    with ProcessPoolExecutor(args.clients) as pool:
                        futures = [pool.submit(post_all, url, path, ctype, bodies,
                                               args.seconds, start_at) for bodies in jobs]
                        if kind == "otlp":
                            time.sleep(1.0)
                            scrapes.extend(scrape_ms(url, 10))
                        outcomes = [f.result(timeout=args.seconds + 300) for f in futures]
                    wall = time.time() - start_at
                    sent = sum(o[0] for o in outcomes) * args.batch
                    failures = sum(o[1] for o in outcomes)
                    got = counted(url, kind) - before
                    rate = got / wall
                    (otlp_rates if kind == "otlp" else push_rates).append(rate)
                    busy.extend(scrapes)
                    print(f"  run {run + 1} {kind:<4}: {got:,.0f} counted of {sent:,} sent "
                          f"in {wall:.2f} s = {rate:,.0f}/s, {failures} failed requests"
                          f"{'' if got == sent else ' (MISMATCH)'}")
        finally:
            proc.terminate()
            proc.wait(15)
    o, p = statistics.median(otlp_rates), statistics.median(push_rates)
    print(f"  median OTLP {o:,.0f} spans/s, push {p:,.0f} events/s ({o / p:.2f}x); target "
          f"{TARGET_HTTP:,} spans/s: {o / TARGET_HTTP:.2f}x")
    i, b = statistics.median(idle), statistics.median(busy)
    print(f"  /metrics median: idle {i:.1f} ms, during OTLP ingest {b:.1f} ms "
          f"({b / i:.2f}x; target within 1.10x)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--in-process-batches", type=int, default=40)
    parser.add_argument("--http-batches", type=int, default=200)
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--storage-dir", default=None)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; "
          f"python {sys.version.split()[0]}; free port check {free_port() > 0}")
    in_process(args)
    if not args.skip_http:
        over_http(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
