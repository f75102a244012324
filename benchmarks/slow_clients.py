"""Scrapes under slow clients: ai-metrics-exporter next to node_exporter.

Opens ``--connections`` slow connections of each kind against a real exporter process on
loopback, holds them while timing ``--scrapes`` scrapes of ``/metrics`` and ``/livez``
(a new connection each, as a Prometheus that just restarted would), then does the same
against ``prometheus-node-exporter`` when it is installed (``benchmarks/setup``):

- ``idle``: connects and sends nothing;
- ``headers``: sends half a request head, then one more header byte every ``--trickle``
  seconds (each read returns something, so a per-read socket timeout never fires);
- ``body``: sends a whole head announcing a 1 MB body for ``/livez``, then trickles it;
- ``push``: the same for ``POST /api/v1/events`` (a route that reads its body: the
  exporter hands it to the route, which holds a slow-request slot; past the slots it is
  answered 503 at once and closed).

The slow connections come from several loopback source addresses (127.0.0.10, ...), at
most ``--per-address`` from each, so the exporter's per-address cap
(``web.max_connections_per_address``) does not simply close them.

    .venv/bin/python benchmarks/slow_clients.py                   # 1,000 of each kind
    .venv/bin/python benchmarks/slow_clients.py --connections 200 --scrapes 10

Prints median and p99 per route, kind and target; a scrape that times out
(``--timeout``) counts as that many seconds. Every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import requests
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.procs import LOOPBACK, NodeExporter

KINDS = ("idle", "headers", "body", "push")
_HEAD = {
    "idle": b"",
    "headers": b"GET /metrics HTTP/1.1\r\nHost: bench\r\nX-Slow: ",
    "body": b"POST /livez HTTP/1.1\r\nHost: bench\r\nContent-Length: 1000000\r\n\r\n[",
    "push": (b"POST /api/v1/events HTTP/1.1\r\nHost: bench\r\n"
             b"Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n["),
}


def raise_fd_limit(wanted: int) -> None:
    """Lift the soft open-file limit to ``wanted`` (or the hard limit); children inherit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
        return port


class SlowCrowd:
    """``count`` slow connections of one kind to ``port``, trickled by one thread."""

    def __init__(self, port: int, kind: str, count: int, per_address: int,
                 trickle: float = 1.0, first_address: int = 10) -> None:
        self.kind = kind
        self.sockets: list[socket.socket] = []
        self.refused = 0
        self._trickle = trickle
        self._stop = threading.Event()
        for number in range(count):
            source = f"127.0.0.{first_address + number // max(per_address, 1)}"
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.bind((source, 0))
                sock.settimeout(5)
                sock.connect((LOOPBACK, port))
                if _HEAD[kind]:
                    sock.sendall(_HEAD[kind])
                sock.setblocking(False)
            except OSError:
                sock.close()
                self.refused += 1
                continue
            self.sockets.append(sock)
        self._thread = threading.Thread(target=self._run, name=f"trickle-{kind}",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        byte = b"a" if self.kind == "headers" else b" "  # body/push: JSON whitespace
        while not self._stop.wait(self._trickle):
            if self.kind == "idle":
                continue
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.send(byte)

    def open_count(self) -> int:
        """How many of the connections the server has not closed (a read sees EOF or a
        reset on a closed one; a 429/408 answer counts as closed)."""
        alive = 0
        for sock in self.sockets:
            try:
                data = sock.recv(4096)
            except BlockingIOError:
                alive += 1
                continue
            except OSError:
                continue
            if not data:
                continue
        return alive

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for sock in self.sockets:
            sock.close()


def time_scrapes(base: str, path: str, count: int, timeout: float) -> list[float]:
    """Seconds per GET (a new connection each); a timeout or error counts as ``timeout``."""
    times = []
    for _ in range(count):
        start = time.perf_counter()
        try:
            response = requests.get(f"{base}{path}", timeout=timeout,
                                    headers={"Connection": "close"})
            response.raise_for_status()
            times.append(time.perf_counter() - start)
        except requests.RequestException:
            times.append(timeout)
    return times


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]


def wait_up(base: str, path: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{base}{path}", timeout=1).ok:
                return
        time.sleep(0.1)
    raise SystemExit(f"{base}{path} did not come up")


@contextlib.contextmanager
def exporter(workdir: Path, per_address: int) -> Iterator[tuple[str, int]]:
    port = free_port()
    # 0: leave the cap out of the config (to run against a build without the setting)
    config = {"web": {"max_connections_per_address": per_address}} if per_address else {}
    config_path = workdir / "exporter.yml"
    config_path.write_text(yaml.safe_dump(config))
    binary = Path(sys.executable).with_name("ai-metrics-exporter")
    argv = [str(binary), f"--web.listen-address={LOOPBACK}:{port}",
            f"--config.file={config_path}", f"--storage.path={workdir / 'data'}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AI_EXPORTER_")}
    with open(workdir / "exporter.log", "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                cwd=workdir)
    try:
        wait_up(f"http://{LOOPBACK}:{port}", "/livez")
        yield f"http://{LOOPBACK}:{port}", port
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def measure(name: str, base: str, port: int, args: argparse.Namespace) -> None:
    paths = ("/metrics", "/livez") if name == "exporter" else ("/metrics",)
    for path in paths:
        idle = time_scrapes(base, path, args.scrapes, args.timeout)
        print(f"{name:14} {'none':8} {path:9} p50 {statistics.median(idle):7.3f}s "
              f"p99 {p99(idle):7.3f}s")
    for kind in KINDS:
        crowd = SlowCrowd(port, kind, args.connections, args.per_address, args.trickle)
        try:
            time.sleep(args.settle)
            for path in paths:
                times = time_scrapes(base, path, args.scrapes, args.timeout)
                print(f"{name:14} {kind:8} {path:9} p50 {statistics.median(times):7.3f}s "
                      f"p99 {p99(times):7.3f}s  (held {len(crowd.sockets)}, "
                      f"refused {crowd.refused}, open after {crowd.open_count()})",
                      flush=True)
        finally:
            crowd.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--scrapes", type=int, default=20)
    parser.add_argument("--per-address", type=int, default=100)
    parser.add_argument("--trickle", type=float, default=1.0)
    parser.add_argument("--settle", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=15.0)
    parser.add_argument("--cap", type=int, default=-1,
                        help="web.max_connections_per_address (default 2 x --per-address;"
                             " 0 leaves it out of the config)")
    parser.add_argument("--no-node-exporter", action="store_true")
    args = parser.parse_args()
    args.connections = max(1, min(args.connections, 5000))
    args.scrapes = max(1, min(args.scrapes, 200))
    raise_fd_limit(4 * args.connections + 1024)
    with tempfile.TemporaryDirectory(prefix="slow-clients-") as tmp:
        workdir = Path(tmp)
        print(f"{args.connections} slow connections per kind, {args.scrapes} scrapes each")
        cap = 2 * args.per_address if args.cap < 0 else args.cap
        with exporter(workdir, cap) as (base, port):
            measure("exporter", base, port, args)
        if not args.no_node_exporter:
            node = NodeExporter.start(workdir)
            if node is None:
                print("node_exporter not installed (benchmarks/setup installs it)")
            else:
                try:
                    measure("node_exporter", node.url, node.port, args)
                finally:
                    node.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
