"""Push ingest: events per second, in process and over HTTP against the real exporter.

1. In process, one core: decode + validate + aggregate batches of 1,000 events of the demo
   workload's mix (LLM calls, tasks, tools, guardians, gates, errors, loops, ...), encoded
   the way a client would send them, and of its common kinds only (the seven the native
   path applies itself). Before and after in the same run: the Python path (the whole-array
   fast path ``EventDecoder.decode_array`` + ``Ingestor.apply``, and element by element)
   against the native path (``Ingestor.ingest_array``, what ``POST /api/v1/events`` runs
   for a JSON array, and ``Ingestor.ingest_raw``, what NDJSON and Redis entries take).
   Rates are given per CPU second of this process (``time.process_time``), which is what
   "one core" means on a shared machine, and per wall second. Also the scrape-side cost:
   ``Aggregator.families()`` with 10,000 AI series.
2. Over HTTP: the exporter started as a real process on a loopback port; ``--clients``
   client processes POST pre-encoded JSON arrays of ``--batch`` events for at most
   ``--seconds`` seconds (and ``--max-batches`` each); events accepted per wall second, end
   to end, with the server's ``ai_exporter_events_total`` checked against what was sent.

Targets: in process ≥ 1,000,000 events/s on one core for the common kinds (native
path); HTTP ≥ 50,000 events/s.

    .venv/bin/python benchmarks/push.py [--runs 5] [--clients 4] [--seconds 6]
    PYTHONPATH=/path/to/other/checkout .venv/bin/python benchmarks/push.py   # compare
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
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

import exporter  # noqa: E402
from exporter import native  # noqa: E402
from exporter.aggregator import Aggregator  # noqa: E402
from exporter.events import Error  # noqa: E402
from exporter.ingest import Ingestor  # noqa: E402
from exporter.sources.demo import DemoWorkload, Schedule  # noqa: E402

LOOPBACK = "127.0.0.1"
TARGET_IN_PROCESS = 1_000_000  # common kinds, native path
TARGET_HTTP = 50_000


def workload(n: int, seed: int = 1) -> list[bytes]:
    """``n`` events of the demo mix, JSON-encoded as a client would: null fields left out,
    defaults sent as they are."""
    demo = DemoWorkload(1000, Schedule("none", 0, 1), seed=seed)
    raws: list[bytes] = []
    elapsed = 0.0
    encode = msgspec.json.encode
    while len(raws) < n:
        for event in demo.tick(elapsed, 0.25):
            fields = {k: v for k, v in msgspec.to_builtins(event).items() if v is not None}
            raws.append(encode(fields))
        elapsed += 0.25
    return raws[:n]


def batches(raws: list[bytes], size: int) -> list[list[bytes]]:
    return [raws[i:i + size] for i in range(0, len(raws), size)]


def rates(label: str, run: Any, events: int, rounds: int) -> float:
    """Run ``run`` ``rounds`` times; print median events/s per CPU second and wall second."""
    cpu, wall = [], []
    for _ in range(rounds):
        c0, w0 = time.process_time(), time.perf_counter()
        run()
        cpu.append(events / (time.process_time() - c0))
        wall.append(events / (time.perf_counter() - w0))
    median = statistics.median(cpu)
    print(f"  {label:<44} {median:>11,.0f} ev/s per CPU s   {statistics.median(wall):>11,.0f}"
          f" ev/s wall   (min {min(cpu):,.0f}, max {max(cpu):,.0f})")
    return median


COMMON_KINDS = frozenset({"llm_call", "task", "tool_call", "quality_gate", "resolution",
                          "guardian", "error"})


def one_mix(mix: str, raws: list[bytes], args: argparse.Namespace) -> float:
    """Before and after for one mix of events; returns the best rate."""
    chunks = batches(raws, args.batch)
    bodies = [b"[" + b",".join(chunk) + b"]" for chunk in chunks]
    print(f" {mix}: {len(raws):,} events")
    python = Ingestor(Aggregator(), native=False)
    decoder = python.decoder

    def python_array() -> None:
        for body in bodies:
            events = decoder.decode_array(body)
            assert events is not None
            python.apply("bench", events)

    before = rates("before: Python, whole array (decode_array)", python_array, len(raws),
                   args.runs)
    rates("before: Python, element by element", lambda: [
        python.ingest_raw("bench", chunk) for chunk in chunks], len(raws), args.runs)
    best = before
    ingestor = Ingestor(Aggregator())
    if hasattr(ingestor, "ingest_array") and native.available():
        after = rates("after: native, whole array (ingest_array)", lambda: [
            ingestor.ingest_array("bench", body) for body in bodies], len(raws), args.runs)
        rates("after: native, element by element (ingest_raw)", lambda: [
            ingestor.ingest_raw("bench", chunk) for chunk in chunks], len(raws), args.runs)
        print(f"  native / Python, whole array: {after / before:.2f}x")
        best = max(best, after)
    decoded = [python.decode(chunk)[0] for chunk in chunks]
    aggregator = python.aggregator
    rates("  Python aggregate only (Aggregator.ingest)", lambda: [
        aggregator.ingest(events) for events in decoded], len(raws), args.runs)
    return best


def in_process(args: argparse.Namespace) -> float:
    """Events per CPU second through the push handler's ingest step, before (the Python
    path: ``decode_array`` + ``apply``, or element by element) and after (the native
    path: ``Ingestor.ingest_array`` / ``ingest_raw``), in the same run, for the demo mix and
    for its common kinds only (the seven the C applies itself)."""
    raws = workload(args.events)
    print(f"In process: {len(raws):,} events, batches of {args.batch}, "
          f"mean {sum(map(len, raws)) / len(raws):.0f} bytes/event, {args.runs} rounds "
          f"(exporter from {Path(exporter.__file__).parent})")
    common = [raw for raw in raws if msgspec.json.decode(raw)["kind"] in COMMON_KINDS]
    one_mix("demo mix", raws, args)
    best = one_mix("common kinds", common, args)
    print(f"  target {TARGET_IN_PROCESS:,} ev/s (common kinds): best path at "
          f"{best / TARGET_IN_PROCESS:.2f}x the target")
    decoded = [Ingestor(Aggregator()).decode(chunk)[0] for chunk in batches(raws, args.batch)]

    wide = Aggregator()
    wide.ingest([Error(component=f"component-{i}", category="internal")
                 for i in range(10_000)])
    for events in decoded:
        wide.ingest(events)
    timings = []
    for _ in range(args.runs * 4):
        t0 = time.perf_counter()
        families = wide.families()
        timings.append(time.perf_counter() - t0)
    samples = sum(len(f.samples) for f in families)
    print(f"  Aggregator.families(), {samples:,} samples (10,000 error series + mix): "
          f"median {statistics.median(timings) * 1000:.1f} ms")
    return best


# --- over HTTP ----------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def start_exporter(workdir: Path, fsync: bool = True) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    config = workdir / "exporter.yml"
    config.write_text("log_level: warning\nai:\n  log_interval_seconds: 60\n"
                      f"storage:\n  path: {workdir / 'data'}\n"
                      f"  fsync: {'true' if fsync else 'false'}\n")
    env = dict(os.environ)
    cmd = [sys.executable, "-m", "exporter.cli", f"--config.file={config}",
           f"--web.listen-address={LOOPBACK}:{port}"]
    log = open(workdir / "exporter.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    url = f"http://{LOOPBACK}:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/livez", timeout=1).status_code == 200:
                return proc, url
        except requests.RequestException:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"exporter did not start:\n{(workdir / 'exporter.log').read_text()}")


def client(url: str, bodies: list[bytes], seconds: float, max_batches: int,
           start_at: float) -> tuple[int, int, int]:
    """Post bodies round robin until the deadline; (batches, events accepted, failures)."""
    session = requests.Session()
    headers = {"Content-Type": "application/json"}
    while time.time() < start_at:
        time.sleep(0.001)
    deadline = time.monotonic() + seconds
    sent = accepted = failures = 0
    while sent < max_batches and time.monotonic() < deadline:
        response = session.post(f"{url}/api/v1/events", data=bodies[sent % len(bodies)],
                                headers=headers, timeout=30)
        sent += 1
        if response.status_code == 200:
            accepted += response.json()["accepted"]
        else:
            failures += 1
    return sent, accepted, failures


def server_total(url: str) -> float:
    text = requests.get(f"{url}/metrics", timeout=30).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "ai_exporter_events_total" and s.labels.get("source") == "push")


def over_http(args: argparse.Namespace) -> float:
    """Both durability settings in one run: every batch written to the write-ahead log and
    fsynced (group commit) before its 2xx, the default, and written without fsync (kept
    across a process crash, not a power cut)."""
    raws = workload(args.batch * 20, seed=2)
    bodies = [b"[" + b",".join(chunk) + b"]" for chunk in batches(raws, args.batch)]
    print(f"\nOver HTTP: {args.clients} client processes, batches of {args.batch} "
          f"({statistics.mean(map(len, bodies)) / 1024:.0f} KiB), {args.seconds:g} s per run "
          f"(at most {args.max_batches} batches per client), {args.runs} runs")
    medians = {}
    for fsync in (True, False):
        medians[fsync] = http_runs(args, bodies, fsync)
    print(f"  durability cost: fsync on {medians[True]:,.0f} ev/s against off "
          f"{medians[False]:,.0f} ev/s = {medians[True] / medians[False]:.2f}x")
    return medians[True]


def http_runs(args: argparse.Namespace, bodies: list[bytes], fsync: bool) -> float:
    print(f" storage.fsync: {'true (default)' if fsync else 'false'}")
    with tempfile.TemporaryDirectory(prefix="bench-push-", dir=args.storage_dir) as tmp:
        proc, url = start_exporter(Path(tmp), fsync)
        results = []
        try:
            requests.post(f"{url}/api/v1/events", data=bodies[0],
                          headers={"Content-Type": "application/json"}, timeout=30)
            with ProcessPoolExecutor(args.clients) as pool:
                for run in range(args.runs):
                    before = server_total(url)
                    start_at = time.time() + 0.5
                    futures = [pool.submit(client, url, bodies, args.seconds,
                                           args.max_batches, start_at)
                               for _ in range(args.clients)]
                    outcomes = [f.result(timeout=args.seconds + 120) for f in futures]
                    wall = time.time() - start_at
                    accepted = sum(o[1] for o in outcomes)
                    failures = sum(o[2] for o in outcomes)
                    counted = server_total(url) - before
                    rate = accepted / wall
                    results.append(rate)
                    print(f"  run {run + 1}: {accepted:,} events in {wall:.2f} s = "
                          f"{rate:,.0f} ev/s; server counted {counted:,.0f}"
                          f"{'' if counted == accepted else ' (MISMATCH)'}, "
                          f"{failures} failed requests")
        finally:
            proc.terminate()
            proc.wait(15)
    median = statistics.median(results)
    print(f"  median {median:,.0f} ev/s end to end; target {TARGET_HTTP:,}: "
          f"{median / TARGET_HTTP:.2f}x the target")
    return median


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--max-batches", type=int, default=2000)
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--storage-dir", default=None,
                        help="where the exporter's storage.path goes (a real disk: the "
                             "default temporary directory may be a tmpfs)")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} on "
          f"{os.cpu_count()} CPUs; python {sys.version.split()[0]}")
    in_process(args)
    if not args.skip_http:
        over_http(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
