"""Soak: scrapes, pushes and OTLP intake at once for ten minutes, against node_exporter.

Starts ``ai-metrics-exporter`` (default configuration, its own storage directory) and
``prometheus-node-exporter`` on loopback ports, times ``--idle-scrapes`` scrapes of each
one after another with nothing else running (the idle figure; the exporter first gets
every push body and a few OTLP bodies once, so that it serves the series the load creates
already), then runs for
``--seconds``, all at once (``tests/soakload.py``, one process per kind of client, one
thread and one kept-alive connection per client):

- ``--scrapers`` scrapers of the exporter's ``/metrics`` and as many of node_exporter's,
  each once per ``--scrape-interval`` (phases spread over the interval), with Prometheus's
  ``Accept`` and ``Accept-Encoding: gzip``;
- ``--pushers`` pushers of JSON arrays of ``--batch`` demo-mix events to
  ``POST /api/v1/events``, ``--push-rate`` batches per second all together;
- ``--otlp-clients`` OTLP clients posting protobuf bodies of ``--otlp-spans`` GenAI chat
  spans to ``POST /v1/traces``, ``--otlp-rate`` bodies per second together (a fresh trace
  id per body, so no span is a duplicate).

The exporter's VmRSS is sampled every ``--rss-interval`` seconds. At the end it prints
every response status by client kind (target: 0 answers 5xx, 0 client errors), the events
and spans the 2xx answers accepted against the exporter's own counters
(``ai_exporter_events_total{source="push"}``, ``ai_exporter_otlp_intake_items_total``
and ``ai_exporter_events_total{source="otlp"}``: exact), scrape p50/p99 idle and under
load for both servers with the ratio exporter/node_exporter (target: p99 no worse), and
the RSS drift from the end of the warm-up (the first 20 % of the run) to the end (target
≤ 5 %). The pacing is printed first: the rates are meant to load the exporter without
saturating the machine's cores, so the figures are not only CPU starvation (the CPU
share each process used is printed too).

    .venv/bin/python benchmarks/soak.py                    # 600 s, 100/50/2 clients
    .venv/bin/python benchmarks/soak.py --seconds 60       # a shorter run

Exit status 1 when a correctness target fails (a 5xx, a client error, a total that
differs); the timing figures are printed, not asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if not os.environ.get("PYTHONPATH"):
    sys.path.insert(0, str(ROOT))

from tests.procs import Exporter, NodeExporter  # noqa: E402
from tests.soakload import (  # noqa: E402
    ClientResult,
    Plan,
    percentile,
    prime,
    rss_bytes,
    rss_drift,
    run_load,
    sequential_scrapes,
    server_counts,
)

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def ms(value: float) -> str:
    return f"{value * 1000:8.1f} ms"


def statuses(result: ClientResult) -> str:
    codes = ", ".join(f"{code}: {n:,}" for code, n in sorted(result.statuses.items()))
    errors = ", ".join(f"{name}: {n:,}" for name, n in sorted(result.errors.items()))
    return f"{codes or 'none'}" + (f"; client errors {errors}" if errors else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--scrapers", type=int, default=100)
    parser.add_argument("--scrape-interval", type=float, default=10.0,
                        help="seconds between two scrapes of one scraper (0: back to back)")
    parser.add_argument("--pushers", type=int, default=50)
    parser.add_argument("--push-rate", type=float, default=5.0,
                        help="batches per second, all pushers together")
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--otlp-clients", type=int, default=2)
    parser.add_argument("--otlp-rate", type=float, default=4.0,
                        help="OTLP bodies per second, all clients together")
    parser.add_argument("--otlp-spans", type=int, default=256)
    parser.add_argument("--idle-scrapes", type=int, default=60)
    parser.add_argument("--rss-interval", type=float, default=2.0)
    parser.add_argument("--web-threads", type=int, default=0,
                        help="web.threads for the exporter (0: its default)")
    parser.add_argument("--storage-dir", default=None,
                        help="where the exporter's storage goes (a real disk: the default "
                             "temporary directory may be a tmpfs)")
    parser.add_argument("--no-node-exporter", action="store_true")
    args = parser.parse_args()
    args.seconds = max(5.0, min(args.seconds, 7200.0))
    load0 = os.getloadavg()
    print(f"load average {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f} on {os.cpu_count()} "
          f"CPUs; python {sys.version.split()[0]}")
    scrape_rate = args.scrapers / args.scrape_interval if args.scrape_interval else 0
    print(f"pacing: {args.scrapers} scrapers per server, each every {args.scrape_interval:g} s"
          f" ({scrape_rate:g} scrapes/s per server); {args.pushers} pushers, "
          f"{args.push_rate:g} batches/s of {args.batch} together "
          f"({args.push_rate * args.batch:,.0f} events/s); {args.otlp_clients} OTLP clients, "
          f"{args.otlp_rate:g} bodies/s of {args.otlp_spans} spans "
          f"({args.otlp_rate * args.otlp_spans:,.0f} spans/s); {args.seconds:g} s")
    config: dict[str, object] = {"log_level": "warning"}
    if args.web_threads:
        config["web"] = {"threads": args.web_threads}
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="soak-", dir=args.storage_dir) as tmp:
        workdir = Path(tmp)
        exporter = Exporter(workdir, config)
        try:
            with contextlib.ExitStack() as stack:
                node = None if args.no_node_exporter else NodeExporter.start(
                    workdir, max(40, 2 * args.scrapers))
                if node is not None:
                    stack.callback(node.stop)
                if node is None and not args.no_node_exporter:
                    print("node_exporter not installed (benchmarks/setup installs it)")
                prime(exporter.url, args.batch, args.otlp_spans)
                idle: dict[str, list[float]] = {"exporter": [], "node_exporter": []}
                for _ in range(max(1, args.idle_scrapes // 10)):
                    idle["exporter"] += sequential_scrapes(exporter.url, 10)
                    if node is not None:
                        idle["node_exporter"] += sequential_scrapes(node.url, 10)
                before = server_counts(exporter.url)
                cpu0 = {"exporter": cpu_seconds(exporter.pid),
                        "node_exporter": cpu_seconds(node.pid) if node else 0.0}
                busy0 = machine_busy()
                rss0 = rss_bytes(exporter.pid)
                print(f"idle: exporter RSS {(rss0 or 0) / 2**20:.1f} MiB; starting load",
                      flush=True)

                def progress(elapsed: float, rss: int | None) -> None:
                    print(f"  {elapsed:6.0f} s: exporter RSS {(rss or 0) / 2**20:.1f} MiB, "
                          f"load average {os.getloadavg()[0]:.2f}", flush=True)

                plan = Plan(exporter_url=exporter.url, seconds=args.seconds,
                            scrapers=args.scrapers, scrape_interval=args.scrape_interval,
                            node_url=node.url if node else None, pushers=args.pushers,
                            push_rate=args.push_rate, batch=args.batch,
                            otlp_clients=args.otlp_clients, otlp_rate=args.otlp_rate,
                            otlp_spans=args.otlp_spans, rss_pid=exporter.pid,
                            rss_interval=args.rss_interval, progress=progress)
                result = run_load(plan)
                busy1 = machine_busy()
                cpu1 = {"exporter": cpu_seconds(exporter.pid),
                        "node_exporter": cpu_seconds(node.pid) if node else 0.0}
                time.sleep(0.5)
                after = server_counts(exporter.url)
                load1 = os.getloadavg()
        finally:
            code = exporter.stop()
            if code not in (0, None):
                failures.append(f"exporter exited {code}")

    wall = result.seconds
    print(f"\nran {wall:.1f} s; load average at the end {load1[0]:.2f} {load1[1]:.2f} "
          f"{load1[2]:.2f}; machine CPU busy "
          f"{(busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]) * 100:.0f} % of "
          f"{os.cpu_count()} CPUs; CPU used: exporter "
          f"{(cpu1['exporter'] - cpu0['exporter']) / wall:.2f} cores, node_exporter "
          f"{(cpu1['node_exporter'] - cpu0['node_exporter']) / wall:.2f} cores")
    print("\nresponses by status (client errors: refused, reset, timed out):")
    for name, client in result.clients.items():
        print(f"  {name:<12} {client.sent:>9,} requests, {client.behind:,} sent late: "
              f"{statuses(client)}")
        if client.fivexx():
            failures.append(f"{name}: {client.fivexx()} answers 5xx")
        if client.errors:
            failures.append(f"{name}: {sum(client.errors.values())} client errors")
        if client.others():
            failures.append(f"{name}: {client.others()} answers neither 2xx nor 5xx")
    fivexx = sum(c.fivexx() for c in result.clients.values())
    print(f"  5xx answers in all: {fivexx}")

    print("\ntotals (accepted by 2xx answers against the exporter's counters):")
    push = result.clients.get("push")
    if push is not None:
        counted = after["push_events"] - before["push_events"]
        ok = counted == push.items
        print(f"  push events: {push.items:,} accepted, ai_exporter_events_total{{source=push}}"
              f" +{counted:,.0f} {'(exact)' if ok else '(MISMATCH)'}")
        if not ok:
            failures.append("push totals differ")
    otlp = result.clients.get("otlp")
    if otlp is not None:
        mapped = after["otlp_mapped"] - before["otlp_mapped"]
        events = after["otlp_events"] - before["otlp_events"]
        dup = after["otlp_duplicate"] - before["otlp_duplicate"]
        ok = mapped == otlp.items == events and dup == 0
        print(f"  OTLP spans: {otlp.items:,} accepted, ai_exporter_otlp_intake_items_total"
              f"{{mapped}} +{mapped:,.0f}, ai_exporter_events_total{{source=otlp}} "
              f"+{events:,.0f}, duplicates +{dup:,.0f} {'(exact)' if ok else '(MISMATCH)'}; "
              f"span ids remembered {after['otlp_dedup_ids']:,.0f}")
        if not ok:
            failures.append("OTLP totals differ")

    print("\nscrape time, request sent -> body received (gzip):")
    ours, theirs = result.clients.get("scrape"), result.clients.get("node_scrape")
    rows = [("exporter", idle["exporter"], ours),
            ("node_exporter", idle["node_exporter"], theirs)]
    figures: dict[str, tuple[float, float, float, float]] = {}
    for name, idle_times, client in rows:
        if client is None or not client.latencies:
            continue
        loaded = client.latencies
        figures[name] = (statistics.median(idle_times), percentile(idle_times, 0.99),
                         statistics.median(loaded), percentile(loaded, 0.99))
        i50, i99, l50, l99 = figures[name]
        print(f"  {name:<14} idle p50 {ms(i50)} p99 {ms(i99)}   under load p50 {ms(l50)} "
              f"p99 {ms(l99)}  ({len(loaded):,} scrapes, max {ms(max(loaded))}; "
              f"p99 under load / idle {l99 / i99:.2f}x)")
    if "exporter" in figures and "node_exporter" in figures:
        a, b = figures["exporter"], figures["node_exporter"]
        print(f"  exporter / node_exporter: idle p50 {a[0] / b[0]:.2f}x p99 {a[1] / b[1]:.2f}x;"
              f" under load p50 {a[2] / b[2]:.2f}x p99 {a[3] / b[3]:.2f}x "
              f"(target: p99 under load <= 1.00x)")

    if len(result.rss) >= 4:
        base, end, drift = rss_drift(result.rss, wall)
        peak = max(v for _, v in result.rss)
        print(f"\nexporter RSS: {(rss0 or 0) / 2**20:.1f} MiB idle, {base / 2**20:.1f} MiB "
              f"after the warm-up ({0.2 * wall:.0f} s), {end / 2**20:.1f} MiB at the end, "
              f"peak {peak / 2**20:.1f} MiB ({len(result.rss)} samples); drift "
              f"{drift * 100:+.2f} % (target within 5 %)")
        marks = []
        for share in (0.1, 0.2, 0.4, 0.6, 0.8, 1.0):
            at = [v for t, v in result.rss if t <= share * wall] or [result.rss[0][1]]
            marks.append(f"{share * 100:.0f} % {at[-1] / 2**20:.1f}")
        print(f"  RSS (MiB) by share of the run: {', '.join(marks)}")
    if failures:
        print("\nFAILED: " + "; ".join(failures))
        return 1
    print("\ncorrectness targets met (0 x 5xx, 0 client errors, totals exact)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
