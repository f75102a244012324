"""Replicas in one Redis Streams consumer group: events/s, series and memory per replica.

For each replica count (``--replicas``, default ``1,2,3``) and each round: a fresh
``redis-server`` on a loopback port, a stream pre-filled with ``--events`` ``llm_call``
events (``--models`` x 3 providers x 2 components label sets), the consumer group created
at the end of the stream, N ``ai-metrics-exporter`` processes in that group (default
configuration otherwise: ``batch_size`` 500, fsync'd commits, each its own storage
directory and consumer name). Once every replica is connected the group is rewound to
the start of the stream (``XGROUP SETID 0``, then one more ``XADD`` wakes the blocked
readers), so all replicas start together, and the
clock runs until the group has no lag and nothing pending. Prints, per replica count, the
median events/s of the group and per replica, the ratio to one replica, each replica's
share, the series and AI series each one serves, and its VmRSS / VmHWM at the end.

    .venv/bin/python benchmarks/replicas.py                   # 200,000 events, 3 rounds
    .venv/bin/python benchmarks/replicas.py --events 50000 --rounds 1

Exporters, Redis and this script share the machine's cores: the figures say how far
replicas scale on it, not on a machine with a core per replica (the script prints the
core count and the load average).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if not os.environ.get("PYTHONPATH"):
    sys.path.insert(0, str(ROOT))

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from tests.procs import Exporter, wait_until  # noqa: E402
from tests.test_redis_streams import GROUP, STREAM, RedisServer  # noqa: E402

PROVIDERS = ("openai", "anthropic", "gcp.gemini")
COMPONENTS = ("planner", "writer")


def event(i: int, models: int) -> bytes:
    return json.dumps({
        "kind": "llm_call", "provider": PROVIDERS[i % 3], "model": f"model-{i % models}",
        "component": COMPONENTS[(i // 3) % 2], "input_tokens": 100 + i % 900,
        "output_tokens": 10 + i % 90, "duration_seconds": 0.2 + (i % 50) / 10}).encode()


def fill(server: RedisServer, n: int, models: int) -> None:
    client = server.client()
    for start in range(0, n, 5000):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(start + 5000, n)):
            pipe.xadd(STREAM, {"event": event(i, models)})
        pipe.execute()
    client.xgroup_create(STREAM, GROUP, id="$")
    client.close()


def status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    return 0


def replica_figures(exp: Exporter) -> tuple[float, int, int]:
    """(events counted, series served, AI series served) of one replica."""
    counted = 0.0
    series = ai = 0
    for family in text_string_to_metric_families(exp.metrics()):
        for s in family.samples:
            series += 1
            if family.name.startswith(("ai_", "gen_ai_")) \
                    and not family.name.startswith("ai_exporter_"):
                ai += 1
            if s.name == "ai_exporter_events_total" \
                    and s.labels.get("source") == "redis_streams":
                counted += s.value
    return counted, series, ai


def drained(server: RedisServer) -> bool:
    group = server.group()
    return bool(group["lag"] == 0 and group["pending"] == 0)


def start_replica(workdir: Path, cfg: dict[str, Any], storage: Path) -> Exporter:
    """An exporter on a fresh port; tried again when another process took the port first."""
    for attempt in range(3):
        try:
            return Exporter(workdir, cfg, storage=storage)
        except AssertionError as exc:
            if attempt == 2 or "Address already in use" not in str(exc):
                raise
    raise AssertionError("unreachable")


def one_round(n_replicas: int, events: int, models: int, workdir: Path,
              max_seconds: float, extra: dict[str, Any]) -> dict[str, Any]:
    server = RedisServer(workdir)
    replicas: list[Exporter] = []
    try:
        fill(server, events - 1, models)
        for k in range(n_replicas):
            cfg = {"sources": {"redis_streams": {
                "enabled": True, "url": server.url, "streams": [STREAM], "group": GROUP,
                "consumer": f"replica-{k}", **extra}}}
            replicas.append(start_replica(workdir, cfg, workdir / f"r{n_replicas}-{k}"))
        for exp in replicas:
            wait_until(lambda exp=exp: exp.get("/readyz").status_code == 200, 30,
                       what="replica ready")
        client = server.client()
        started = time.perf_counter()
        client.xgroup_setid(STREAM, GROUP, "0")
        client.xadd(STREAM, {"event": event(events - 1, models)})  # wakes blocked readers
        wait_until(lambda: drained(server), max_seconds, interval=0.05, what="group drained")
        elapsed = time.perf_counter() - started
        client.close()
        wait_until(lambda: sum(replica_figures(e)[0] for e in replicas) == events, 30,
                   what="every event counted")
        figures = [replica_figures(e) for e in replicas]
        return {"elapsed": elapsed, "rate": events / elapsed,
                "shares": [f[0] / events for f in figures],
                "series": [f[1] for f in figures], "ai_series": [f[2] for f in figures],
                "rss": [status_kib(e.pid, "VmRSS") for e in replicas],
                "hwm": [status_kib(e.pid, "VmHWM") for e in replicas]}
    finally:
        for exp in replicas:
            exp.stop()
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--replicas", default="1,2,3")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", type=int, default=20,
                        help="models per provider (label sets: models x 3 x 2)")
    parser.add_argument("--state-max-ids", type=int, default=0,
                        help="sources.redis_streams.state_max_ids (default: the exporter's)")
    parser.add_argument("--max-seconds", type=float, default=300.0,
                        help="longest wait for one round to drain")
    args = parser.parse_args()
    counts = [int(c) for c in args.replicas.split(",")]
    extra = {"state_max_ids": args.state_max_ids} if args.state_max_ids else {}
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; "
          f"{args.events} events, {args.models * 6} label sets, {args.rounds} rounds"
          + (f", state_max_ids {args.state_max_ids}" if extra else ""),
          flush=True)
    results: dict[int, list[dict[str, Any]]] = {n: [] for n in counts}
    with tempfile.TemporaryDirectory(prefix="bench-replicas-") as tmp:
        for round_ in range(args.rounds):
            for n in counts:  # interleaved: load from other work shifts every count
                workdir = Path(tmp) / f"round{round_}-n{n}"
                workdir.mkdir()
                result = one_round(n, args.events, args.models, workdir, args.max_seconds,
                                   extra)
                results[n].append(result)
                print(f"round {round_} replicas {n}: {result['rate']:,.0f} events/s "
                      f"({result['elapsed']:.1f} s), shares "
                      f"{[round(s, 2) for s in result['shares']]}, load average "
                      f"{os.getloadavg()[0]:.2f}", flush=True)
    base = statistics.median(r["rate"] for r in results[counts[0]]) if counts else 0.0
    print()
    print("| replicas | events/s (group) | events/s per replica | vs first | series per "
          "replica | AI series per replica | VmRSS per replica | VmHWM per replica |")
    print("|---|---|---|---|---|---|---|---|")
    for n in counts:
        rate = statistics.median(r["rate"] for r in results[n])
        series = statistics.median(s for r in results[n] for s in r["series"])
        ai = statistics.median(s for r in results[n] for s in r["ai_series"])
        rss = statistics.median(s for r in results[n] for s in r["rss"]) / 1024
        hwm = statistics.median(s for r in results[n] for s in r["hwm"]) / 1024
        with contextlib.suppress(ZeroDivisionError):
            print(f"| {n} | {rate:,.0f} | {rate / n:,.0f} | {rate / base:.2f} | "
                  f"{series:.0f} | {ai:.0f} | {rss:.1f} MiB | {hwm:.1f} MiB |")
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
