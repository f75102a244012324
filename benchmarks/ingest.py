"""JSONL ingest: the exporter's tail source against mtail on the same 1M-line file.

Both tools run as real processes, one after the other, on one file of mixed AI events (the
demo workload's mix, one JSON object per line). mtail (Debian, ``--one_shot``) runs an
equivalent program: count LLM calls and sum input tokens by provider and model. The
exporter does more: it validates every event against the typed model and feeds every
metric of the aggregator. Each run is timed from process start until the whole file is
counted (end to end, startup included for both), and the totals of the two are checked
against each other. Medians over ``--runs`` runs, and the ratio, are printed.

Then the start-up time of each tool (included above; the rates without it are printed
too), the CPU cost per line in this process of the native line path (``exporter._lines``:
validate and aggregate in one pass, what the exporter runs when it is built) and of each
stage of the Python path it falls back to (array build, typed decode, duplicate-key
proof, aggregation), and the
steady-state cost of tailing: a file growing at ``--rate`` lines/s for
``--seconds`` seconds, and the exporter's CPU time over that window (from /proc).

    .venv/bin/python benchmarks/ingest.py [--lines 1000000] [--runs 3] [--rate 5000]
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from exporter import native  # noqa: E402
from exporter.aggregator import Aggregator  # noqa: E402
from exporter.events import AnyEvent, EventDecoder  # noqa: E402
from exporter.ingest import PYTHON_SLICE_BYTES, Ingestor  # noqa: E402
from exporter.sources.demo import DemoWorkload, Schedule  # noqa: E402
from exporter.sources.tail import CHECKPOINT_FILE  # noqa: E402
from tests.procs import EXPORTER_BIN, free_port, sample_value, wait_until  # noqa: E402

MTAIL = "/usr/bin/mtail"
NATIVE_STAGE = "native line path (validate + aggregate)"
STATE = "state/ai-metrics-exporter"  # the tail's state directory under base_dir (older)
STORAGE = "data"  # the state store (--storage.path) under base_dir
MTAIL_PROGRAM = r"""
# LLM calls and input tokens by provider and model, from JSONL events (any key order).
counter llm_calls_total by provider, model
counter llm_input_tokens_total by provider, model

/"kind":\s*"llm_call"/ {
  /"provider":\s*"(?P<provider>[^"]*)"/ {
    /"model":\s*"(?P<model>[^"]*)"/ {
      llm_calls_total[$provider][$model]++
      /"input_tokens":\s*(?P<input_tokens>\d+)/ {
        llm_input_tokens_total[$provider][$model] += $input_tokens
      }
    }
  }
}
"""
TICKS = os.sysconf("SC_CLK_TCK")


def generate(path: Path, lines: int, seed: int = 1) -> dict[str, int]:
    """Mixed events as platforms write them: defaults and nulls left out, a timestamp set."""
    workload = DemoWorkload(1000.0, Schedule("none", 0, 1), seed=seed)
    encode = msgspec.json.Encoder().encode
    kinds: dict[str, int] = {}
    written, tick = 0, 0.0
    with open(path, "wb") as out:
        while written < lines:
            batch = []
            for event in workload.tick(tick, 1.0):
                if written >= lines:
                    break
                data = {k: v for k, v in msgspec.to_builtins(event).items()
                        if v is not None and v != ""}
                data["ts"] = round(1.76e9 + tick, 3)
                batch.append(encode(data))
                kinds[data["kind"]] = kinds.get(data["kind"], 0) + 1
                written += 1
            out.write(b"\n".join(batch) + b"\n")
            tick += 1.0
    return kinds


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def run_mtail(progs: Path, log: Path, out: Path) -> tuple[float, float, float, float]:
    """(seconds, CPU seconds, LLM calls, input tokens) of one ``mtail --one_shot`` run."""
    start = time.perf_counter()
    with open(out, "wb") as stdout:
        proc = subprocess.Popen([MTAIL, "--one_shot", "--progs", str(progs), "--logs",
                                 str(log), "--logtostderr"], stdout=stdout,
                                stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"mtail exited with {proc.returncode}")
    metrics = json.loads(out.read_text())
    totals = {}
    for name in ("llm_calls_total", "llm_input_tokens_total"):
        totals[name] = sum(point["Value"]["Value"] for metric in metrics[name]
                           for point in metric.get("LabelValues", []))
    return (elapsed, usage.ru_utime + usage.ru_stime, totals["llm_calls_total"],
            totals["llm_input_tokens_total"])


class Tailer:
    """The exporter as a process, tailing ``base``'s older-layout telemetry directory."""

    def __init__(self, base: Path, **tail: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cfg: dict[str, Any] = {
            "sources": {"tail": {"enabled": True, "base_dir": str(base), **tail}},
            "log_level": "warning"}
        if "checkpoint_interval_seconds" in tail:  # the state store commits as often
            cfg["storage"] = {"checkpoint_interval_seconds": tail["checkpoint_interval_seconds"]}
        cfg.setdefault("storage", {})["path"] = str(base / STORAGE)
        config = base / f"exporter-{self.port}.yml"
        config.write_text(yaml.safe_dump(cfg))
        env = {k: v for k, v in os.environ.items() if not k.startswith("AI_EXPORTER_")}
        self.log = open(base / f"exporter-{self.port}.log", "wb")  # noqa: SIM115
        self.started = time.time()
        self.proc = subprocess.Popen(
            [EXPORTER_BIN, f"--web.listen-address=127.0.0.1:{self.port}",
             f"--config.file={config}"], stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        try:
            text = requests.get(f"{self.url}/metrics", timeout=10).text
        except requests.RequestException:
            return 0.0
        return sample_value(text, name, labels) or 0.0

    def total(self, name: str, labels: dict[str, str] | None = None) -> float:
        text = requests.get(f"{self.url}/metrics", timeout=10).text
        return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
                   if s.name == name
                   and all(s.labels.get(k) == v for k, v in (labels or {}).items()))

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.log.close()


def checkpointed(base: Path, name: str) -> int:
    """The offset of ``name`` committed by the tail (0 before the first commit): in the
    state store's ``state.json`` (a cursor holding ``files``), or in the tail's own
    checkpoint of the older layout."""
    for path in (base / STORAGE / "state.json", base / STATE / CHECKPOINT_FILE):
        try:
            saved = json.loads(path.read_bytes())
        except (OSError, ValueError):
            continue
        cursors = [saved, *saved.get("cursors", {}).values()]
        return sum(f["offset"] for c in cursors if isinstance(c, dict)
                   for f in c.get("files", []) if f["path"].endswith(name))
    return 0


def run_exporter(base: Path, lines: int, log: Path) -> tuple[float, float, float, float]:
    """(seconds end to end, CPU seconds, LLM calls, input tokens).

    The exporter is not scraped while it reads (a scrape runs every collector and
    competes for the GIL; mtail is not observed during its run either): the end is seen
    in its checkpoint (written every 0.5 s here), then one scrape reads the totals and
    the exporter's own ``ai_exporter_tail_last_read_timestamp_seconds``, so neither the
    checkpoint interval nor the polling inflates the time."""
    shutil.rmtree(base / STATE, ignore_errors=True)
    shutil.rmtree(base / STORAGE, ignore_errors=True)
    size = log.stat().st_size
    tailer = Tailer(base, checkpoint_interval_seconds=0.5)
    try:
        wait_until(lambda: checkpointed(base, log.name) >= size, 600, interval=0.05,
                   what="all lines checkpointed")
        cpu = cpu_seconds(tailer.proc.pid)
        done = tailer.value("ai_exporter_tail_last_read_timestamp_seconds")
        calls = tailer.total("ai_llm_requests_total")
        tokens = tailer.total("ai_llm_tokens_total", {"gen_ai_token_type": "input"})
        lines_seen = tailer.value("ai_exporter_tail_lines_total")
        assert lines_seen == lines, f"exporter counted {lines_seen} lines, wrote {lines}"
    finally:
        tailer.stop()
    return done - tailer.started, cpu, calls, tokens


def steady_state(base: Path, rate: int, seconds: float) -> tuple[float, float, float]:
    """(CPU share of one core, lines written, lines counted) while tailing a growing file."""
    path = base / "state/telemetry/steady.jsonl"
    source = base / "state/telemetry/bench.jsonl"
    with open(source, "rb") as handle:
        sample = [next(handle) for _ in range(rate)]
    path.write_bytes(b"")
    shutil.rmtree(base / STATE, ignore_errors=True)
    shutil.rmtree(base / STORAGE, ignore_errors=True)
    tailer = Tailer(base, paths=["state/telemetry/steady.jsonl"])
    try:
        wait_until(lambda: tailer.value("ai_exporter_tail_files") == 1, 30, what="following")
        step = 0.05
        per_step = int(rate * step)
        cpu0, t0 = cpu_seconds(tailer.proc.pid), time.perf_counter()
        written, index = 0, 0
        with open(path, "ab", buffering=0) as out:
            while (now := time.perf_counter()) - t0 < seconds:
                due = int((now - t0) * rate) - written
                if due > 0:
                    chunk = [sample[(index + i) % rate] for i in range(min(due, per_step * 4))]
                    index += len(chunk)
                    out.write(b"".join(chunk))
                    written += len(chunk)
                time.sleep(step)
        label = {"path": "state/telemetry/steady.jsonl"}
        wait_until(lambda: tailer.value("ai_exporter_tail_lines_total", label) >= written, 60,
                   what="caught up")
        cpu1, t1 = cpu_seconds(tailer.proc.pid), time.perf_counter()
        counted = tailer.value("ai_exporter_tail_lines_total", label)
    finally:
        tailer.stop()
    return (cpu1 - cpu0) / (t1 - t0), written, counted


def breakdown(log: Path, lines: int, rounds: int = 5) -> dict[str, float]:
    """Microseconds per line of each stage of the tail path, in this process, on the file's
    first lines cut into the Python path's 64 KiB slices; the best of ``rounds`` (the machine is
    shared, so the minimum is the cost and the rest is interference)."""
    with open(log, "rb") as handle:
        data = b"".join(next(handle) for _ in range(lines))
    slices, start = [], 0
    while start < len(data):
        stop = data.rfind(b"\n", start, start + PYTHON_SLICE_BYTES)
        slices.append(data[start:stop])
        start = stop + 1
    typed = msgspec.json.Decoder(list[AnyEvent]).decode
    keys = msgspec.json.Decoder(list[dict[str, msgspec.Raw]]).decode
    arrays = [b"".join((b"[", body.replace(b"\n", b"\n,"), b"]")) for body in slices]
    decoded = [typed(array) for array in arrays]
    decoder = EventDecoder()

    def aggregate() -> None:  # a fresh aggregator each time: the same work every round
        ingestor = Ingestor(Aggregator())
        for events in decoded:
            ingestor.apply("bench", events)

    whole = b"\n".join(slices)

    def native_path() -> None:  # as the tail runs it: whole reads, fresh state each round
        Ingestor(Aggregator()).ingest_lines("bench", whole, 1 << 20)

    stages: dict[str, Callable[[], object]] = {}
    if native.available():
        stages[NATIVE_STAGE] = native_path
    stages.update({
        "array of each slice (newline -> comma)":
            lambda: [b"".join((b"[", body.replace(b"\n", b"\n,"), b"]")) for body in slices],
        "typed decode (msgspec, list of events)": lambda: [typed(array) for array in arrays],
        "duplicate-key proof (keys pass + colons)":
            lambda: [sum(map(len, keys(array))) == array.count(b":") for array in arrays],
        "= decode_lines (all of the above)": lambda: [decoder.decode_lines(body)
                                                      for body in slices],
        "aggregate (Ingestor.apply)": aggregate,
        "(line by line instead: split + decode_many)":
            lambda: [decoder.decode_many(body.split(b"\n")) for body in slices],
    })
    best: dict[str, float] = {}
    for _ in range(rounds):
        for name, run in stages.items():
            t0 = time.process_time()
            run()
            spent = (time.process_time() - t0) * 1e6 / lines
            best[name] = min(best.get(name, spent), spent)
    return best


def startup(base: Path, progs: Path) -> tuple[float, float]:
    """Seconds from process start to work: mtail ``--one_shot`` over an empty file, and the
    exporter until it answers /metrics (tailing an empty file)."""
    empty = base / "state/empty/empty.jsonl"
    empty.parent.mkdir(parents=True, exist_ok=True)
    empty.write_bytes(b"")
    shutil.rmtree(base / STATE, ignore_errors=True)
    shutil.rmtree(base / STORAGE, ignore_errors=True)
    m_s = run_mtail(progs, empty, base / "mtail-empty.json")[0]
    start = time.perf_counter()
    tailer = Tailer(base, paths=["state/empty/*.jsonl"])
    try:
        wait_until(lambda: tailer.value("ai_exporter_tail_files") == 1, 30, interval=0.01,
                   what="started")
        e_s = time.perf_counter() - start
    finally:
        tailer.stop()
    return m_s, e_s


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    if not os.access(MTAIL, os.X_OK):
        print(f"{MTAIL} not found: apt-get install -y mtail", file=sys.stderr)
        return 1
    # As installed (pip writes the bytecode): a process must not compile modules edited
    # since their .pyc was written, as it would here with PYTHONDONTWRITEBYTECODE set.
    compileall.compile_dir(ROOT / "exporter", quiet=1)
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        base = Path(tmp)
        log = base / "state/telemetry/bench.jsonl"
        log.parent.mkdir(parents=True)
        progs = base / "progs"
        progs.mkdir()
        (progs / "llm.mtail").write_text(MTAIL_PROGRAM)
        t = time.perf_counter()
        kinds = generate(log, args.lines)
        size = log.stat().st_size
        print(f"file: {args.lines} lines, {size / 1e6:.1f} MB, generated in "
              f"{time.perf_counter() - t:.1f}s; kinds: "
              + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items(), key=lambda kv: -kv[1])))
        runs: dict[str, list[float]] = {"m_s": [], "m_cpu": [], "e_s": [], "e_cpu": []}
        for run in range(1, args.runs + 1):
            m_s, m_cpu, m_calls, m_tokens = run_mtail(progs, log, base / "mtail.json")
            e_s, e_cpu, e_calls, e_tokens = run_exporter(base, args.lines, log)
            assert (m_calls, m_tokens) == (e_calls, e_tokens), (
                f"totals differ: mtail {m_calls} calls / {m_tokens} tokens, exporter "
                f"{e_calls} / {e_tokens}")
            for key, number in (("m_s", m_s), ("m_cpu", m_cpu), ("e_s", e_s),
                                ("e_cpu", e_cpu)):
                runs[key].append(number)
            print(f"run {run}: mtail {m_s:.2f}s ({m_cpu:.2f} CPU s) | exporter {e_s:.2f}s "
                  f"({e_cpu:.2f} CPU s) | both counted {m_calls:.0f} LLM calls, "
                  f"{m_tokens:.0f} input tokens")
        med = {key: statistics.median(values) for key, values in runs.items()}
        n = args.lines
        print(f"median mtail:    {n / med['m_s']:10,.0f} lines/s wall ({med['m_s']:.2f}s), "
              f"{n / med['m_cpu']:10,.0f} lines per CPU second")
        print(f"median exporter: {n / med['e_s']:10,.0f} lines/s wall ({med['e_s']:.2f}s), "
              f"{n / med['e_cpu']:10,.0f} lines per CPU second")
        print(f"ratio exporter/mtail: {med['m_s'] / med['e_s']:.2f}x wall, "
              f"{med['m_cpu'] / med['e_cpu']:.2f}x CPU (target >= 4x)")
        m_start, e_start = startup(base, progs)
        print(f"start-up (included above): mtail {m_start:.2f}s, exporter {e_start:.2f}s; "
              f"without it: mtail {n / (med['m_s'] - m_start):,.0f} lines/s, exporter "
              f"{n / (med['e_s'] - e_start):,.0f} lines/s, "
              f"{(med['m_s'] - m_start) / (med['e_s'] - e_start):.2f}x")
        sample = min(args.lines, 200_000)
        stages = breakdown(log, sample)
        print(f"per line, in process (best of 5 over {sample:,} lines), CPU:")
        for name, cost in stages.items():
            if name == NATIVE_STAGE:
                print(f"  {name:<45} {cost:5.2f} us = at most {1e6 / cost:,.0f} lines per "
                      "CPU second before reading and start-up")
                print("  the Python path (without the native extension, and for the lines "
                      "it leaves):")
            else:
                print(f"  {name:<45} {cost:5.2f} us")
        floor = stages["= decode_lines (all of the above)"] + stages["aggregate (Ingestor.apply)"]
        print(f"  {'decode_lines + aggregate':<45} {floor:5.2f} us = at most "
              f"{1e6 / floor:,.0f} lines per CPU second before reading and start-up")
        share, written, counted = steady_state(base, args.rate, args.seconds)
        print(f"steady state: file growing at {args.rate} lines/s for {args.seconds:.0f}s: "
              f"exporter CPU {share * 100:.1f}% of one core; {written:.0f} lines written, "
              f"{counted:.0f} counted")
    return 0


if __name__ == "__main__":
    sys.exit(main())
