"""Cost of the live-component features, in-process against real loopback servers.

Prints medians and ratios for:
* probes: one round of 20 healthy HTTP targets, concurrent vs one at a time, on loopback
  and 50 ms away; a round with a hanging target under a 1 s deadline;
* processes: one collect() with three match rules over every process on this host;
* gpu: one collect() where there is no GPU (after the one-time NVML attempt);
* Redis Streams: entries per second from XREADGROUP to ack, with and without the
  applied-id journal (real redis-server on a loopback port).

Bounded: fixed round counts, fixed entry counts, a 120 s cap on each Redis run.
Run: .venv/bin/python benchmarks/bench_components.py
"""

from __future__ import annotations

import json
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import msgspec
import psutil
import redis

from exporter import config
from exporter.aggregator import Aggregator
from exporter.collectors.base import CollectorContext
from exporter.collectors.gpu import GpuCollector
from exporter.collectors.probes import ProbeService
from exporter.collectors.processes import ProcessesCollector
from exporter.config import ProbeConfig, RedisStreamsConfig
from exporter.ingest import Ingestor
from exporter.sources.redis_streams import RedisStreamsSource

ROUNDS = 30
LOOP = "127.0.0.1"


def median_ms(fn, rounds=ROUNDS):
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def free_port():
    with socket.socket() as s:
        s.bind((LOOP, 0))
        return s.getsockname()[1]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    release = threading.Event()

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path == "/hang":
            self.release.wait(30)
        elif self.path == "/slow":
            time.sleep(0.05)  # a target 50 ms away (remote model server, gateway)
        body = b'{"status":"ok"}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default backlog of 5 drops concurrent SYNs

    def handle_error(self, request, client_address):
        pass


def bench_probes():
    server = Server((LOOP, 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://{LOOP}:{server.server_address[1]}"
    specs = [msgspec.convert({"name": f"c{i}", "url": f"{url}/healthz",
                              "body_regex": "ok"}, ProbeConfig) for i in range(20)]
    concurrent = ProbeService(specs, 16)
    sequential = ProbeService(specs, 1)
    names = list(concurrent.specs)
    c = median_ms(lambda: concurrent.run(names, time.monotonic() + 5))
    s = median_ms(lambda: sequential.run(names, time.monotonic() + 5))
    hang_specs = [*specs[:19], msgspec.convert({"name": "hang", "url": f"{url}/hang",
                                                "timeout_seconds": 30}, ProbeConfig)]
    hanging = ProbeService(hang_specs, 16)
    slow_specs = [msgspec.convert({"name": f"s{i}", "url": f"{url}/slow"}, ProbeConfig)
                  for i in range(20)]
    slow_c, slow_s = ProbeService(slow_specs, 16), ProbeService(slow_specs, 1)
    slow_names = list(slow_c.specs)
    sc = median_ms(lambda: slow_c.run(slow_names, time.monotonic() + 5), rounds=10)
    ss = median_ms(lambda: slow_s.run(slow_names, time.monotonic() + 5), rounds=5)
    h = median_ms(lambda: hanging.run(list(hanging.specs), time.monotonic() + 1.0), rounds=5)
    print(f"probes, 20 healthy targets, concurrent (16):  median {c:7.2f} ms per round")
    print(f"probes, 20 healthy targets, one at a time:    median {s:7.2f} ms per round "
          f"(concurrent is {s / c:.1f}x faster)")
    print(f"probes, 19 healthy + 1 hanging, 1 s deadline: median {h:7.2f} ms per round")
    print(f"probes, 20 targets 50 ms away, concurrent:     median {sc:7.2f} ms per round")
    print(f"probes, 20 targets 50 ms away, one at a time: median {ss:7.2f} ms per round "
          f"(concurrent is {ss / sc:.1f}x faster)")
    for service in (concurrent, sequential, hanging, slow_c, slow_s):
        service.close()
    Handler.release.set()
    server.shutdown()
    server.server_close()


def bench_processes():
    cfg = config.build({"components": {"processes": [
        {"name": "python", "name_regex": "^python"},
        {"name": "redis", "name_regex": "^redis-server$"},
        {"name": "model", "cmdline_regex": r"vllm\.entrypoints"}]}})
    collector = ProcessesCollector(CollectorContext(cfg))
    list(collector.collect())
    m = median_ms(lambda: list(collector.collect()))
    print(f"processes, 3 rules over {len(psutil.pids())} host processes: median {m:7.2f} ms "
          "per collect")


def bench_gpu():
    collector = GpuCollector(CollectorContext(config.build({})))
    first = median_ms(lambda: list(collector.collect()), rounds=1)
    m = median_ms(lambda: list(collector.collect()), rounds=1000)
    print(f"gpu, no GPU: first collect {first:.2f} ms (NVML attempt), then median "
          f"{m * 1000:.1f} us per collect ({collector.unavailable})")


def bench_redis(entries=50_000):
    binary = shutil.which("redis-server")
    assert binary, "redis-server is required"
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        proc = subprocess.Popen([binary, "--port", str(port), "--bind", LOOP, "--save", "",
                                 "--appendonly", "yes", "--dir", tmp],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            client = redis.Redis(host=LOOP, port=port)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.05)
            event = json.dumps({"kind": "llm_call", "provider": "openai", "model": "gpt-4o",
                                "input_tokens": 812, "output_tokens": 95,
                                "duration_seconds": 1.9, "cost_usd": 0.004})
            for label, state in (("no journal", ""), ("journal", f"{tmp}/applied.jsonl")):
                stream = f"bench:{label.replace(' ', '-')}"
                for _batch in range(0, entries, 1000):
                    pipe = client.pipeline(transaction=False)
                    for _ in range(1000):
                        pipe.xadd(stream, {"event": event})
                    pipe.execute()
                cfg = msgspec.convert({"enabled": True, "url": f"redis://{LOOP}:{port}/0",
                                       "streams": [stream], "consumer": "bench",
                                       "state_file": state, "batch_size": 500,
                                       "block_ms": 100}, RedisStreamsConfig)
                ingestor = Ingestor(Aggregator())
                source = RedisStreamsSource(ingestor, cfg)
                t0 = time.perf_counter()
                source.start()
                limit = time.monotonic() + 120
                while time.monotonic() < limit:
                    done = sum(n for (s, _k), n in ingestor.accepted.items()
                               if s == "redis_streams")
                    if done >= entries:
                        break
                    time.sleep(0.01)
                elapsed = time.perf_counter() - t0
                source.stop()
                results[label] = entries / elapsed
                print(f"redis streams, {entries} entries, batch 500, {label:10}: "
                      f"{results[label]:9.0f} entries/s (read, decode, count, ack)")
        finally:
            proc.terminate()
            proc.wait(10)
    print(f"redis streams: journal costs {results['no journal'] / results['journal']:.2f}x")


if __name__ == "__main__":
    bench_probes()
    bench_processes()
    bench_gpu()
    bench_redis()

