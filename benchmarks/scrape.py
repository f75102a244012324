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

LOOPBACK = "127.0.0.1"
NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"
# What Prometheus 2.42 sends for the text format (it also asks for gzip).
HEADERS = {"Accept": "text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
           "Accept-Encoding": "gzip"}
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

    def scrape(self) -> tuple[float, bytes]:
        """One scrape: seconds from request to the last body byte, and the decoded body."""
        start = time.perf_counter()
        response = self.session.get(self.url, headers=HEADERS, timeout=30)
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
    args = parser.parse_args(argv)
    if not 1 <= args.rounds <= 100_000:
        parser.error("--rounds must be between 1 and 100000")

    workdir = Path(tempfile.mkdtemp(prefix="scrape-bench-"))
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
