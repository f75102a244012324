"""OTLP push benchmark: time per export of 10k series, and scrape latency during exports.

Runs the real Runtime and HTTP server (cheroot) in this process with a synthetic
collector adding 10,000 series (6,000 counter, 3,000 gauge, 1,000 histogram series of 14
buckets) to the host collectors, and an OTLP/HTTP sink in a separate process on a
loopback port (so that receiving does not compete for this process's GIL).

    .venv/bin/python benchmarks/otlp.py [--exports 20] [--scrapes 60]

Prints medians and ratios; asserts nothing. Target: scrapes during exports at most 10%
slower than without.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from opentelemetry.exporter.otlp.proto.common.metrics_encoder import (  # noqa: E402
    encode_metrics,
)
from prometheus_client.metrics_core import Metric  # noqa: E402

from exporter import catalog, config  # noqa: E402
from exporter.collectors.base import Collector  # noqa: E402
from exporter.otlp.pusher import OtlpPusher  # noqa: E402
from exporter.otlp.settings import resolve  # noqa: E402
from exporter.otlp.translate import Translator, to_metrics_data  # noqa: E402
from exporter.runtime import Runtime  # noqa: E402
from exporter.server import build_server  # noqa: E402
from tests.procs import LOOPBACK, free_port, wait_until  # noqa: E402

COUNTERS, GAUGES, HISTOGRAMS = 6000, 3000, 1000


class SyntheticCollector(Collector):
    """10k series built fresh on every collect, as real collectors do."""

    name = "synthetic"

    def collect(self) -> Iterable[Metric]:
        tasks = catalog.AI_TASKS.family()
        for i in range(COUNTERS):
            tasks.add_metric([f"component-{i % 60}", f"queue-{i // 60 % 20}", f"s{i // 1200}"],
                             float(i * 3))
        depth = catalog.AI_TASK_QUEUE_DEPTH.family()
        for i in range(GAUGES):
            depth.add_metric([f"component-{i % 60}", f"queue-{i // 60}"], float(i % 17))
        duration = catalog.AI_TASK_DURATION.family()
        bounds = catalog.TASK_BUCKETS
        for i in range(HISTOGRAMS):
            buckets = [(str(b), float(n * (i % 5))) for n, b in enumerate(bounds, 1)]
            buckets.append(("+Inf", float((len(bounds) + 1) * (i % 5))))
            duration.add_metric([f"component-{i % 50}", f"queue-{i // 50}", "succeeded"],
                                buckets, float(i))
        yield from (tasks, depth, duration)


def sink(port: int) -> None:
    """OTLP/HTTP sink: reads the body, answers 200 (run in its own process)."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            return

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    ThreadingHTTPServer((LOOPBACK, port), Handler).serve_forever()


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


def p90_ms(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[-1] * 1000


def scrape_series(url: str, count: int, seconds: float) -> list[float]:
    """Back-to-back scrapes, bounded in count and time."""
    out: list[float] = []
    session = requests.Session()
    end = time.monotonic() + seconds
    while len(out) < count and time.monotonic() < end:
        start = time.perf_counter()
        response = session.get(url, timeout=30)
        response.raise_for_status()
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--exports", type=int, default=20)
    parser.add_argument("--scrapes", type=int, default=60)
    parser.add_argument("--sink", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sink:
        sink(args.sink)
        return

    sink_port = free_port()
    sink_proc = subprocess.Popen([sys.executable, __file__, "--sink", str(sink_port)])
    try:
        wait_until(lambda: requests.get(f"http://{LOOPBACK}:{sink_port}/", timeout=1).ok, 10,
                   what="sink")
        run(args, sink_port)
    finally:
        sink_proc.terminate()
        sink_proc.wait(10)


def run(args: argparse.Namespace, sink_port: int) -> None:
    port = free_port()
    cfg = config.build({"web": {"listen_address": f"{LOOPBACK}:{port}"},
                        "otlp": {"endpoint": f"http://{LOOPBACK}:{sink_port}",
                                 "interval_seconds": 1.0}})
    runtime = Runtime(cfg)
    runtime.runner.collectors.append(SyntheticCollector(runtime.runner.collectors[0].ctx))
    server = build_server(runtime)
    server.prepare()
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    url = f"http://{LOOPBACK}:{port}/metrics"
    try:
        # --- time per export ----------------------------------------------------------
        families = runtime.families()
        translator = Translator()
        settings = resolve(cfg)
        assert settings is not None
        pusher: OtlpPusher = runtime.services["otlp"]
        stages: dict[str, list[float]] = {"translate": [], "to MetricsData": [],
                                          "encode+serialize": [], "send (HTTP)": [],
                                          "export round": []}
        series = 0
        for _ in range(args.exports):
            t0 = time.perf_counter()
            metrics = translator.translate(families, 0)
            t1 = time.perf_counter()
            data = to_metrics_data(metrics, pusher._resource, pusher._scope, time.time_ns(),
                                   pusher._temporality)
            t2 = time.perf_counter()
            body = encode_metrics(data).SerializeToString()
            t3 = time.perf_counter()
            requests.post(f"http://{LOOPBACK}:{sink_port}/v1/metrics", data=body, timeout=30)
            t4 = time.perf_counter()
            runtime.last_collection = (time.time(), families)  # a "fresh scrape" to re-use
            assert pusher.export_once()
            t5 = time.perf_counter()
            for key, value in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4),
                                  strict=True):
                stages[key].append(value)
            series = pusher.last_series
        print(f"series per export: {series} data points; payload {len(body) / 1e6:.2f} MB")
        print(f"time per export of 10k series (median of {args.exports}):")
        for key, values in stages.items():
            print(f"  {key:<18} {median_ms(values):8.1f} ms")

        # --- scrape latency with and without exports ------------------------------------
        scrape_series(url, 5, 10)  # warm up
        results: dict[str, list[float]] = {}
        results["no push"] = scrape_series(url, args.scrapes, 60)
        for label, interval, reuse in (("push every 1 s (re-uses scrapes)", 1.0, True),
                                       ("push back to back (re-uses scrapes)", 0.001, True),
                                       ("push every 1 s (own collection)", 1.0, False)):
            p = OtlpPusher(resolve(config.build({
                "web": {"listen_address": f"{LOOPBACK}:{port}"},
                "otlp": {"endpoint": f"http://{LOOPBACK}:{sink_port}",
                         "interval_seconds": interval, "reuse_scrape": reuse}})), runtime)
            before = dict(p.exports)
            p.start()
            try:
                results[label] = scrape_series(url, args.scrapes, 60)
            finally:
                p.stop()
            done = {k: p.exports[k] - before[k] for k in p.exports}
            results[label + f" [{done['success']} exports]"] = results.pop(label)
        base = statistics.median(results["no push"])
        print(f"scrape latency, {args.scrapes} back-to-back scrapes of ~{series} series each:")
        for label, values in results.items():
            print(f"  {label:<52} median {median_ms(values):7.1f} ms  p90 "
                  f"{p90_ms(values):7.1f} ms  ratio {statistics.median(values) / base:5.2f}")
    finally:
        server.stop()
        runtime.stop()


if __name__ == "__main__":
    main()
