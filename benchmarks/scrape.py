"""Scrape latency and memory: ai-metrics-exporter next to node_exporter on this machine.

Both exporters are started as real processes on free loopback ports and scraped over HTTP
by the same client (one ``requests.Session`` each, identical headers, interleaved rounds so
that background load hits both alike). Prints series count, median and p99 scrape time,
the exporter/node_exporter ratio, and resident memory (VmRSS and peak VmHWM from /proc).

    .venv/bin/python benchmarks/scrape.py                      # host metrics, default config
    .venv/bin/python benchmarks/scrape.py --ai-series 10000    # plus 10k AI series pushed

Targets: exporter median ≤ node_exporter median, exporter RSS ≤ 60 MB; with
``--ai-series 10000`` the exporter median ≤ 60 ms. Every loop is bounded in rounds and in
wall-clock time (``--max-seconds``). Only loopback is contacted.

Exemplars, side by side instead of the run above:

    .venv/bin/python benchmarks/scrape.py --exemplars 300

starts two exporters fed the same ``llm_call`` events for that many label sets, every
bucket of every histogram they feed (duration, time to first chunk, time per output chunk,
token usage) hit once: one with a trace id on every event (so every bucket carries an
exemplar), scraped as OpenMetrics, the other without trace ids, scraped as text. Prints
both medians and their ratio; target: within 10 % (ratio ≤ 1.10). The first exporter is
also scraped as text, to show what exemplars cost a scraper that does not ask for them.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import yaml

from exporter import catalog

LOOPBACK = "127.0.0.1"
NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"
# What Prometheus 2.42 sends for the text format (it also asks for gzip).
HEADERS = {"Accept": "text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
           "Accept-Encoding": "gzip"}
# What Prometheus 2.x sends by default: OpenMetrics preferred (exemplars served).
OM_HEADERS = {"Accept": "application/openmetrics-text;version=1.0.0,application/"
              "openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
              "Accept-Encoding": "gzip"}
TARGET_EXEMPLAR_RATIO = 1.10
TARGET_RSS_MB = 60.0
TARGET_AI_MEDIAN_MS = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def exporter_binary() -> str:
    candidate = Path(sys.executable).parent / "ai-metrics-exporter"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("ai-metrics-exporter")
    if not found:
        raise SystemExit("ai-metrics-exporter is not installed (pip install -e .)")
    return found


@dataclass
class Target:
    name: str
    proc: subprocess.Popen[bytes]
    url: str
    session: requests.Session

    def scrape(self, headers: dict[str, str] | None = None) -> tuple[float, bytes]:
        """One scrape: seconds from request to the last body byte, and the decoded body."""
        start = time.perf_counter()
        response = self.session.get(self.url, headers=headers or HEADERS, timeout=30)
        body = response.content  # decoded (gunzipped) by requests, inside the timing
        elapsed = time.perf_counter() - start
        response.raise_for_status()
        return elapsed, body

    def memory_mb(self) -> tuple[float, float]:
        """(VmRSS, VmHWM) of the process in MiB, from /proc."""
        values: dict[str, float] = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024.0
        return values["VmRSS"], values["VmHWM"]


def start(name: str, argv: list[str], port: int, log: Path) -> Target:
    # In the run's own directory: the exporter's state store (storage.path, default
    # ``data``) starts empty there instead of restoring whatever the checkout holds.
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=log.parent)
    url = f"http://{LOOPBACK}:{port}/metrics"
    session = requests.Session()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited early:\n{log.read_text(errors='replace')}")
        try:
            if session.get(url, headers=HEADERS, timeout=2).ok:
                return Target(name, proc, url, session)
        except requests.RequestException:
            pass
        time.sleep(0.1)
    stop(proc)
    raise SystemExit(f"{name} did not answer on {url} within 30 s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def push_ai_series(base_url: str, count: int, batch: int = 1000) -> float:
    """Create ``count`` distinct AI label sets: half ``ai_errors_total``, half
    ``ai_tasks_total``, one component per pair. Returns the push time in seconds."""
    session = requests.Session()
    started = time.perf_counter()
    events: list[dict[str, Any]] = []
    for i in range(count):
        component = f"bench-component-{i // 2:06d}"
        if i % 2 == 0:
            events.append({"kind": "error", "component": component, "category": "tool"})
        else:
            events.append({"kind": "task", "component": component, "status": "succeeded"})
        if len(events) == batch or i == count - 1:
            response = session.post(f"{base_url}/api/v1/events", json=events, timeout=60)
            if response.status_code != 200:
                raise SystemExit(f"push failed: {response.status_code} {response.text[:500]}")
            events = []
    return time.perf_counter() - started


def _exemplar_events(label_sets: int, traced: bool) -> list[dict[str, Any]]:
    """``llm_call`` events hitting every bucket of the duration, time-to-first-chunk,
    time-per-output-chunk and token-usage histograms once per label set."""
    def values(bounds: tuple[float, ...]) -> list[float]:
        return [*bounds, bounds[-1] * 2]

    duration = values(catalog.DURATION_BUCKETS)
    ttft = values(catalog.TTFT_BUCKETS)
    tpoc = values(catalog.TPOC_BUCKETS)
    tokens = [int(v) for v in values(catalog.TOKEN_BUCKETS)]
    width = max(len(duration), len(ttft), len(tpoc), len(tokens))
    events: list[dict[str, Any]] = []
    for n in range(label_sets):
        for i in range(width):
            event: dict[str, Any] = {
                "kind": "llm_call", "provider": "openai", "model": f"bench-model-{n:05d}",
                "duration_seconds": duration[min(i, len(duration) - 1)],
                "time_to_first_token_seconds": ttft[min(i, len(ttft) - 1)],
                "time_per_output_chunk_seconds": tpoc[min(i, len(tpoc) - 1)],
                "input_tokens": tokens[min(i, len(tokens) - 1)],
                "output_tokens": tokens[min(i, len(tokens) - 1)], "cost_usd": 0.0}
            if traced:
                event["trace_id"] = f"{n:016x}{i:016x}"
                event["span_id"] = f"{n * 64 + i:016x}"
            events.append(event)
    return events


def _push(base_url: str, events: list[dict[str, Any]], batch: int = 1000) -> None:
    session = requests.Session()
    for lo in range(0, len(events), batch):
        response = session.post(f"{base_url}/api/v1/events", json=events[lo:lo + batch],
                                timeout=60)
        if response.status_code != 200:
            raise SystemExit(f"push failed: {response.status_code} {response.text[:500]}")


def exemplar_run(args: argparse.Namespace, workdir: Path) -> int:
    """The side-by-side run of ``--exemplars`` (see the module docstring)."""
    label_sets = args.exemplars
    config = {"ai": {"max_series_per_metric": max(10_000, 2 * label_sets + 100),
                     "max_total_samples": max(50_000, 200 * label_sets)}}
    config_path = workdir / "exporter.yml"
    config_path.write_text(yaml.safe_dump(config))
    targets: dict[str, Target] = {}
    try:
        for name in ("traced", "plain"):
            port = free_port()
            (workdir / name).mkdir()
            targets[name] = start(name, [exporter_binary(), f"--config.file={config_path}",
                                         f"--web.listen-address={LOOPBACK}:{port}"],
                                  port, workdir / name / "exporter.log")
            _push(f"http://{LOOPBACK}:{port}", _exemplar_events(label_sets, name == "traced"))
        runs = {"OpenMetrics, exemplars": (targets["traced"], OM_HEADERS),
                "text, no exemplars": (targets["plain"], HEADERS),
                "text, exemplars held": (targets["traced"], HEADERS)}
        for _ in range(args.warmup):
            for target, headers in runs.values():
                target.scrape(headers)
        times: dict[str, list[float]] = {name: [] for name in runs}
        bodies: dict[str, bytes] = {}
        deadline = time.monotonic() + args.max_seconds
        names = list(runs)
        for round_number in range(args.rounds):
            if time.monotonic() > deadline:
                print(f"time limit reached after {round_number} rounds")
                break
            shift = round_number % len(names)  # rotate who goes first
            for name in names[shift:] + names[:shift]:
                target, headers = runs[name]
                elapsed, bodies[name] = target.scrape(headers)
                times[name].append(elapsed)
        om_body = bodies["OpenMetrics, exemplars"]
        print(f"label sets: {label_sets}, rounds: {len(times[names[0]])} (+{args.warmup} "
              f"warm-up), CPUs: {os.cpu_count()}, load average: "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print(f"exemplars served: {om_body.count(b' # {')}, bucket lines: "
              f"{sum(1 for line in om_body.splitlines() if b'_bucket{' in line)}")
        print(f"{'run':<24}{'samples':>9}{'median ms':>11}{'p99 ms':>9}{'KiB':>9}")
        medians: dict[str, float] = {}
        for name in names:
            medians[name] = statistics.median(times[name]) * 1000
            print(f"{name:<24}{series_count(bodies[name]):>9}{medians[name]:>11.2f}"
                  f"{percentile(times[name], 0.99) * 1000:>9.2f}"
                  f"{len(bodies[name]) / 1024:>9.0f}")
        ratio = medians["OpenMetrics, exemplars"] / medians["text, no exemplars"]
        held = medians["text, exemplars held"] / medians["text, no exemplars"]
        print(f"ratio OpenMetrics with exemplars / text without: {ratio:.3f} "
              f"(target ≤ {TARGET_EXEMPLAR_RATIO:.2f}: "
              f"{'yes' if ratio <= TARGET_EXEMPLAR_RATIO else 'NO'}); "
              f"text with exemplars held / without: {held:.3f}")
        return 0
    finally:
        for target in targets.values():
            stop(target.proc)
            target.session.close()


def series_count(body: bytes, prefix: str = "") -> int:
    return sum(1 for line in body.splitlines()
               if line and not line.startswith(b"#") and line.startswith(prefix.encode()))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(math.ceil(q * len(ordered)) - 1, 0)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=200, help="measured rounds per target")
    parser.add_argument("--warmup", type=int, default=10, help="unmeasured rounds first")
    parser.add_argument("--ai-series", type=int, default=0,
                        help="push events creating this many distinct AI series first")
    parser.add_argument("--max-seconds", type=float, default=300.0,
                        help="stop measuring after this long even if rounds remain")
    parser.add_argument("--no-node-exporter", action="store_true",
                        help="measure the exporter alone")
    parser.add_argument("--exemplars", type=int, default=0, metavar="LABEL_SETS",
                        help="instead: scrape latency with exemplars (OpenMetrics) against "
                             "without (text), over this many LLM label sets")
    args = parser.parse_args(argv)
    if not 1 <= args.rounds <= 100_000:
        parser.error("--rounds must be between 1 and 100000")
    if not 0 <= args.exemplars <= 5000:
        parser.error("--exemplars must be between 0 and 5000")

    workdir = Path(tempfile.mkdtemp(prefix="scrape-bench-"))
    if args.exemplars:
        try:
            return exemplar_run(args, workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    targets: list[Target] = []
    try:
        port = free_port()
        config: dict[str, Any] = {}
        if args.ai_series:
            config["ai"] = {"max_series_per_metric": max(10_000, args.ai_series + 100),
                            "max_total_samples": max(50_000, args.ai_series + 100)}
        config_path = workdir / "exporter.yml"
        config_path.write_text(yaml.safe_dump(config))
        exporter = start("exporter", [exporter_binary(), f"--config.file={config_path}",
                                      f"--web.listen-address={LOOPBACK}:{port}"],
                         port, workdir / "exporter.log")
        targets.append(exporter)
        if not args.no_node_exporter:
            if not Path(NODE_EXPORTER).exists():
                raise SystemExit(f"{NODE_EXPORTER} missing: apt-get install "
                                 "prometheus-node-exporter")
            node_port = free_port()
            targets.append(start("node_exporter",
                                 [NODE_EXPORTER, f"--web.listen-address={LOOPBACK}:{node_port}"],
                                 node_port, workdir / "node_exporter.log"))
        if args.ai_series:
            pushed = push_ai_series(f"http://{LOOPBACK}:{port}", args.ai_series)
            print(f"pushed {args.ai_series} events creating AI series in {pushed:.2f} s")

        for _ in range(args.warmup):
            for target in targets:
                target.scrape()
        times: dict[str, list[float]] = {t.name: [] for t in targets}
        bodies: dict[str, bytes] = {}
        deadline = time.monotonic() + args.max_seconds
        for round_number in range(args.rounds):
            if time.monotonic() > deadline:
                print(f"time limit reached after {round_number} rounds")
                break
            # Alternate who goes first so neither always scrapes right after the other.
            order = targets if round_number % 2 == 0 else list(reversed(targets))
            for target in order:
                elapsed, body = target.scrape()
                times[target.name].append(elapsed)
                bodies[target.name] = body

        print(f"rounds: {len(times['exporter'])} per target (+{args.warmup} warm-up), "
              f"client: requests.Session, Accept-Encoding: gzip, CPUs: {os.cpu_count()}, "
              f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print(f"{'target':<15}{'series':>8}{'median ms':>11}{'p99 ms':>9}{'RSS MB':>9}"
              f"{'peak MB':>9}")
        summary: dict[str, dict[str, float]] = {}
        for target in targets:
            samples = times[target.name]
            rss, hwm = target.memory_mb()
            summary[target.name] = {"median": statistics.median(samples) * 1000,
                                    "p99": percentile(samples, 0.99) * 1000,
                                    "rss": rss, "hwm": hwm,
                                    "series": series_count(bodies[target.name])}
            s = summary[target.name]
            print(f"{target.name:<15}{int(s['series']):>8}{s['median']:>11.2f}{s['p99']:>9.2f}"
                  f"{s['rss']:>9.1f}{s['hwm']:>9.1f}")
        ex = summary["exporter"]
        if args.ai_series:
            ai = series_count(bodies["exporter"], "ai_") - series_count(bodies["exporter"],
                                                                        "ai_exporter_")
            print(f"AI series served: {ai}")
        verdicts = [f"exporter RSS {ex['rss']:.1f} MB ≤ {TARGET_RSS_MB:.0f} MB: "
                    f"{'yes' if ex['rss'] <= TARGET_RSS_MB else 'NO'}"]
        if "node_exporter" in summary:
            node = summary["node_exporter"]
            ratio = ex["median"] / node["median"]
            print(f"ratio exporter/node_exporter: median {ratio:.2f}, "
                  f"p99 {ex['p99'] / node['p99']:.2f}, RSS {ex['rss'] / node['rss']:.2f}")
            if not args.ai_series:
                verdicts.append(f"median ≤ node_exporter's: {'yes' if ratio <= 1 else 'NO'}")
        if args.ai_series:
            verdicts.append(f"median {ex['median']:.1f} ms ≤ {TARGET_AI_MEDIAN_MS:.0f} ms: "
                            f"{'yes' if ex['median'] <= TARGET_AI_MEDIAN_MS else 'NO'}")
        print("targets: " + "; ".join(verdicts))
        return 0
    finally:
        for target in targets:
            stop(target.proc)
            target.session.close()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
