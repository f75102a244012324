"""OTLP push benchmark: time per export of 10k AI series, and scrape latency during exports.

The series are real AI series, created the way ``benchmarks/scrape.py --ai-series`` creates
them (events pushed through ``POST /api/v1/events``: half ``ai_errors_total``, half
``ai_tasks_total``), so the "no push" figure is the one that benchmark measures.

1. **Time per export** (in a child process per source tree, against an OTLP/HTTP sink in
   its own process): the stages of the SDK path (translate, SDK ``MetricsData``, SDK
   encoder + serialization), the direct encoder when the tree has one, and whole export
   rounds (``OtlpPusher.export_once`` re-using a fresh scrape, HTTP included).
2. **Scrape latency**: the real exporter as a process (no push; pushes every 1 s, every
   0.1 s and every 1 ms; every 1 s collecting itself), scraped back to back over HTTP as
   Prometheus does (gzip). Configurations — and source trees, with ``--tree`` — are
   interleaved in cycles so that background load on this shared machine hits all alike.

    .venv/bin/python benchmarks/otlp.py [--exports 15] [--scrapes 80] [--cycles 3]
    .venv/bin/python benchmarks/otlp.py --tree before=/path/to/old/checkout --tree after=.

Prints medians and ratios; asserts nothing. Target: scrapes during exports at most 10%
slower (median) than without. Every loop is bounded in count and time; only loopback is
contacted.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from scrape import HEADERS, LOOPBACK, free_port, push_ai_series  # noqa: E402

AI_SERIES = 10_000
# (label, otlp section or None); the sink URL is filled in.
# With scrapes ~50 ms apart, every 0.1 s re-uses a fresh scrape each round (export work
# back to back); every 1 ms finds no scrape that fresh, so nearly every round collects
# itself (like a second scraper) before exporting.
CONFIGS: tuple[tuple[str, dict[str, Any] | None], ...] = (
    ("no push", None),
    ("push every 1 s", {"interval_seconds": 1.0}),
    ("push every 0.1 s (re-uses scrapes)", {"interval_seconds": 0.1}),
    ("push every 1 ms (own collections)", {"interval_seconds": 0.001}),
    ("push every 1 s, reuse_scrape off", {"interval_seconds": 1.0, "reuse_scrape": False}),
)
_SUCCESS = re.compile(rb'^ai_exporter_otlp_exports_total\{outcome="success"\} (\S+)$', re.M)


# --- OTLP sink ------------------------------------------------------------------------
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

    server = ThreadingHTTPServer((LOOPBACK, port), Handler)
    server.daemon_threads = True
    server.serve_forever()


def wait_for(url: str, seconds: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"process for {url} exited early")
        try:
            if requests.get(url, timeout=1).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} did not answer within {seconds} s")


def ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[-1] * 1000 if len(values) > 1 else ms(values)


# --- part 1: time per export (child process, one per tree) ------------------------------
def ai_events(count: int) -> list[bytes]:
    """The events ``scrape.push_ai_series`` posts, as raw JSON objects."""
    out = []
    for i in range(count):
        component = f"bench-component-{i // 2:06d}"
        event = ({"kind": "error", "component": component, "category": "tool"} if i % 2 == 0
                 else {"kind": "task", "component": component, "status": "succeeded"})
        out.append(json.dumps(event).encode())
    return out


def export_part(root: Path, sink_port: int, exports: int) -> dict[str, Any]:
    """Stage and round timings of one tree's push, in this (child) process."""
    sys.path.insert(0, str(root))
    from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics

    from exporter import config
    from exporter.otlp import translate
    from exporter.runtime import Runtime

    cfg = config.build({"web": {"listen_address": f"{LOOPBACK}:{free_port()}"},
                        "ai": {"max_series_per_metric": AI_SERIES + 100},
                        "otlp": {"endpoint": f"http://{LOOPBACK}:{sink_port}",
                                 "interval_seconds": 60.0}})
    runtime = Runtime(cfg)
    runtime.ingestor.ingest_raw("bench", ai_events(AI_SERIES))
    pusher = runtime.otlp
    stages: dict[str, list[float]] = {}

    def timed(name: str, fn: Any, *args: Any) -> Any:
        start = time.perf_counter()
        result = fn(*args)
        stages.setdefault(name, []).append(time.perf_counter() - start)
        return result

    resource = getattr(pusher, "_resource", None)
    scope = getattr(pusher, "_scope", None)
    temporality = translate.AggregationTemporality.CUMULATIVE
    try:
        from exporter.otlp.encode import DirectEncoder
    except ImportError:  # a tree without the direct encoder
        encoder = None
    else:
        encoder = DirectEncoder(pusher.settings.resource, scope)
    points = 0
    try:
        for _ in range(exports):
            families = timed("scrape collection (families)", runtime.families)
            metrics = timed("translate", translate.Translator().translate, families, 0)
            points = sum(len(m.series) for m in metrics)
            data = timed("SDK MetricsData", translate.to_metrics_data, metrics, resource,
                         scope, time.time_ns(), temporality)
            timed("SDK encode + serialize",
                  lambda d: encode_metrics(d).SerializeToString(), data)
            if encoder is not None:
                timed("direct encode (incl. parse into the message)", encoder.request,
                      metrics, time.time_ns(), temporality)
            runtime.last_collection = (time.time(), families)  # a fresh scrape to re-use
            ok = timed("export round (re-used scrape, HTTP included)", pusher.export_once)
            assert ok, "export to the sink failed"
    finally:
        runtime.stop()
    return {"points": points, "stages": {k: ms(v) for k, v in stages.items()},
            "has_direct": encoder is not None}


# --- part 2: scrape latency against real exporter processes -------------------------------
class ExporterProc:
    """One exporter process of one tree with one configuration, with 10k AI series."""

    def __init__(self, root: Path, workdir: Path, otlp: dict[str, Any] | None) -> None:
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        cfg: dict[str, Any] = {"ai": {"max_series_per_metric": AI_SERIES + 100}}
        if otlp is not None:
            cfg["otlp"] = otlp
        path = workdir / f"exporter-{self.port}.yml"
        path.write_text(yaml.safe_dump(cfg))
        code = (f"import sys; sys.path.insert(0, {str(root)!r}); "
                "from exporter.cli import main; sys.exit(main())")
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("AI_EXPORTER_", "OTEL_"))}
        self.log = workdir / f"exporter-{self.port}.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", code, f"--config.file={path}",
                 f"--web.listen-address={LOOPBACK}:{self.port}"],
                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=workdir,
                start_new_session=True)
        try:
            wait_for(f"{self.url}/livez", 30, self.proc)
            push_ai_series(self.url, AI_SERIES)
        except BaseException:
            self.stop()
            raise
        self.session = requests.Session()

    def scrape(self) -> tuple[float, bytes]:
        start = time.perf_counter()
        response = self.session.get(f"{self.url}/metrics", headers=HEADERS, timeout=30)
        body = response.content
        elapsed = time.perf_counter() - start
        response.raise_for_status()
        return elapsed, body

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
        return 0.0

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def successes(body: bytes) -> float:
    found = _SUCCESS.search(body)
    return float(found.group(1)) if found else 0.0


def block(root: Path, workdir: Path, otlp: dict[str, Any] | None, scrapes: int,
          seconds: float) -> tuple[list[float], float, float, int]:
    """One measured block: (scrape times, exports during it, RSS MB, series served)."""
    exp = ExporterProc(root, workdir, otlp)
    try:
        for _ in range(5):  # warm up (and let the first pushes start)
            exp.scrape()
        _, body = exp.scrape()
        before = successes(body)
        times: list[float] = []
        end = time.monotonic() + seconds
        while len(times) < scrapes and time.monotonic() < end:
            elapsed, body = exp.scrape()
            times.append(elapsed)
        series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
        return times, successes(body) - before, exp.rss_mb(), series
    finally:
        exp.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exports", type=int, default=15, help="export rounds timed")
    parser.add_argument("--scrapes", type=int, default=80, help="scrapes per block")
    parser.add_argument("--cycles", type=int, default=3,
                        help="rounds over every (tree, configuration) pair")
    parser.add_argument("--block-seconds", type=float, default=60.0,
                        help="time limit of one block of scrapes")
    parser.add_argument("--tree", action="append", default=[],
                        help="NAME=PATH of a source tree to measure (default: this one)")
    parser.add_argument("--skip-export-part", action="store_true")
    parser.add_argument("--sink", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--export-part", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sink:
        sink(args.sink)
        return
    if args.export_part:
        root, port = args.export_part.rsplit(",", 1)
        print(json.dumps(export_part(Path(root), int(port), args.exports)))
        return
    if not 1 <= args.scrapes <= 10_000 or not 1 <= args.cycles <= 50:
        parser.error("--scrapes must be in 1..10000 and --cycles in 1..50")
    trees = [(t.split("=", 1)[0], Path(t.split("=", 1)[1]).resolve()) for t in args.tree]
    trees = trees or [("this tree", ROOT)]

    sink_port = free_port()
    sink_proc = subprocess.Popen([sys.executable, __file__, "--sink", str(sink_port)])
    workdir = Path(tempfile.mkdtemp(prefix="otlp-bench-"))
    try:
        wait_for(f"http://{LOOPBACK}:{sink_port}/", 10, sink_proc)
        print(f"CPUs: {os.cpu_count()}, load average at start: "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        if not args.skip_export_part:
            for name, root in trees:
                done = subprocess.run(
                    [sys.executable, __file__, "--export-part", f"{root},{sink_port}",
                     "--exports", str(args.exports)],
                    check=True, capture_output=True, text=True, timeout=600)
                result = json.loads(done.stdout.strip().splitlines()[-1])
                print(f"[{name}] time per export of {result['points']} data points "
                      f"(median of {args.exports}):")
                for stage, value in result["stages"].items():
                    print(f"  {stage:<46} {value:8.1f} ms")
        scrape_part(args, trees, sink_port, workdir)
    finally:
        sink_proc.terminate()
        sink_proc.wait(10)
        for path in workdir.iterdir():
            path.unlink()
        workdir.rmdir()


def scrape_part(args: argparse.Namespace, trees: list[tuple[str, Path]], sink_port: int,
                workdir: Path) -> None:
    results: dict[tuple[str, str], list[list[float]]] = {}
    exports: dict[tuple[str, str], float] = {}
    rss: dict[tuple[str, str], list[float]] = {}
    series = 0
    for cycle in range(args.cycles):
        for label, otlp in CONFIGS:
            for name, root in trees if cycle % 2 == 0 else list(reversed(trees)):
                section = None if otlp is None else {
                    "endpoint": f"http://{LOOPBACK}:{sink_port}", **otlp}
                times, done, mb, series = block(root, workdir, section, args.scrapes,
                                                args.block_seconds)
                key = (name, label)
                results.setdefault(key, []).append(times)
                exports[key] = exports.get(key, 0.0) + done
                rss.setdefault(key, []).append(mb)
        print(f"cycle {cycle + 1}/{args.cycles} done, load average "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"scrape latency: {args.scrapes} back-to-back scrapes per block (gzip, ~{series} "
          f"series), {args.cycles} interleaved cycles; median over all scrapes, ratio to "
          f"'no push' of the same tree; per-cycle medians in brackets")
    for name, _ in trees:
        base = statistics.median([t for ts in results[(name, "no push")] for t in ts])
        for label, _ in CONFIGS:
            blocks = results[(name, label)]
            flat = [t for ts in blocks for t in ts]
            cycles = " ".join(f"{ms(ts):.0f}" for ts in blocks)
            print(f"  [{name}] {label:<36} median {ms(flat):7.1f} ms  p90 {p90(flat):7.1f} ms"
                  f"  ratio {statistics.median(flat) / base:5.2f}  [{cycles}]  exports "
                  f"{exports[(name, label)]:.0f}  RSS {statistics.median(rss[(name, label)]):.1f}"
                  f" MB")


if __name__ == "__main__":
    main()
