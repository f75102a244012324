"""Starting real processes for tests: free loopback ports, bounded waits, sure cleanup."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
EXPORTER_BIN = str(VENV_BIN / "ai-metrics-exporter")
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def require_binary(name: str) -> str:
    """Path of a binary the suite needs; a missing one fails the test (never skips)."""
    path = shutil.which(name)
    if path is None:
        raise AssertionError(f"{name} is not installed; run the README's test command")
    return path


def wait_until(check: Callable[..., Any], timeout: float = 15.0, interval: float = 0.1,
               what: str = "condition") -> Any:
    """Poll ``check()`` until it returns a truthy value; fail after ``timeout`` seconds.
    (``check`` is typed loosely so that a lambda may bind loop values as defaults, which
    mypy cannot infer against ``Callable[[], Any]``.)"""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # keep polling until the deadline
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}"
                         + (f" (last error: {last_exc})" if last_exc else ""))


class Proc:
    """A started subprocess with its log file; ``stop()`` terminates it and its group."""

    def __init__(self, args: Sequence[str], log_path: Path, env: dict[str, str] | None = None,
                 cwd: str | os.PathLike[str] | None = None) -> None:
        self.args = list(args)
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        try:
            self.popen = subprocess.Popen(self.args, stdout=self._log, stderr=subprocess.STDOUT,
                                          env=env, cwd=cwd, start_new_session=True)
        except BaseException:
            self._log.close()  # a process that never started leaks no log file
            raise

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        self.popen.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        self._log.close()
        return self.popen.returncode

    def kill9(self) -> None:
        os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(5)


class Exporter(Proc):
    """The real exporter as a process, on a free loopback port."""

    def __init__(self, workdir: Path, config: dict[str, Any] | None = None,
                 args: Sequence[str] = (), command: str | None = None,
                 env: dict[str, str] | None = None, port: int | None = None,
                 prefix: Sequence[str] = (), storage: str | os.PathLike[str] | None = None,
                 tls_ca: Path | None = None) -> None:
        """``storage``: the state store directory. Unless given (a test of restarts passes
        the same one again) or set by ``config``, ``args`` or ``env``, each exporter gets
        its own under ``workdir``: several run side by side in one session workdir, and a
        store admits one exporter. ``tls_ca``: the exporter serves HTTPS with a
        certificate this CA signed (its web config says so); ``url`` is https then."""
        self.port = port or free_port()
        self.verify: str | bool = str(tls_ca) if tls_ca is not None else True
        self.url = f"{'https' if tls_ca else 'http'}://{LOOPBACK}:{self.port}"
        self.workdir = workdir
        argv = [*prefix, EXPORTER_BIN]
        if command:
            argv.append(command)
        argv.append(f"--web.listen-address={LOOPBACK}:{self.port}")
        if config is not None:
            self.config_path = workdir / f"exporter-{self.port}.yml"
            self.config_path.write_text(yaml.safe_dump(config))
            argv.append(f"--config.file={self.config_path}")
        argv.extend(args)
        chosen = (storage is not None or "storage" in (config or {})
                  or any(a.startswith("--storage.path") for a in args)
                  or any(k.startswith("AI_EXPORTER_STORAGE") for k in (env or {})))
        self.storage = Path(storage) if storage is not None else workdir / f"data-{self.port}"
        if storage is not None or not chosen:
            argv.append(f"--storage.path={self.storage}")
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("AI_EXPORTER_")}
        full_env.update(env or {})
        super().__init__(argv, workdir / f"exporter-{self.port}.log", env=full_env,
                         cwd=workdir)
        try:
            self.wait_ready()
        except BaseException:
            self.stop()  # never leak a process (or its log file) that did not come up
            raise

    def wait_ready(self, timeout: float = 20.0) -> None:
        def ready() -> bool:
            if not self.alive():
                raise AssertionError(f"exporter exited early:\n{self.log()}")
            return requests.get(f"{self.url}/livez", timeout=1,
                                verify=self.verify).status_code == 200

        wait_until(ready, timeout, what="exporter /livez")

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 10)
        kwargs.setdefault("verify", self.verify)
        return requests.get(f"{self.url}{path}", **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 10)
        kwargs.setdefault("verify", self.verify)
        return requests.post(f"{self.url}{path}", **kwargs)

    def metrics(self) -> str:
        response = self.get("/metrics")
        response.raise_for_status()
        return response.text


def rss_bytes(pid: int) -> int:
    """VmRSS of a running process, from ``/proc``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def sample_value(text: str, name: str, labels: dict[str, str] | None = None) -> float | None:
    """Value of one sample in Prometheus text output (labels must match exactly those given,
    extra labels on the sample are allowed)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name != name:
                continue
            if labels and any(sample.labels.get(k) != v for k, v in labels.items()):
                continue
            return float(sample.value)
    return None


def sample(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    """Like ``sample_value``, for a sample that must be there: a missing one fails."""
    value = sample_value(text, name, labels)
    assert value is not None, f"no sample {name}{labels or ''} in the output"
    return value


class Prometheus(Proc):
    """A real Prometheus server scraping the given targets every ``interval``."""

    def __init__(self, workdir: Path, scrape_configs: list[dict[str, Any]],
                 interval: str = "1s", rule_files: Sequence[str] = (),
                 alertmanager_url: str | None = None, extra: dict[str, Any] | None = None,
                 evaluation_interval: str | None = None, flags: Sequence[str] = ()) -> None:
        """``flags``: extra command-line flags (``--enable-feature=exemplar-storage``)."""
        binary = require_binary("prometheus")
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        data = Path(tempfile.mkdtemp(prefix="prom-", dir=workdir))
        cfg: dict[str, Any] = {
            "global": {"scrape_interval": interval,
                       "evaluation_interval": evaluation_interval or interval},
            "scrape_configs": scrape_configs,
        }
        if rule_files:
            cfg["rule_files"] = list(rule_files)
        if alertmanager_url:
            cfg["alerting"] = {"alertmanagers": [{"static_configs": [
                {"targets": [alertmanager_url.removeprefix("http://")]}]}]}
        cfg.update(extra or {})
        config_path = data / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(cfg))
        super().__init__([binary, f"--config.file={config_path}",
                          f"--storage.tsdb.path={data / 'tsdb'}",
                          f"--web.listen-address={LOOPBACK}:{self.port}",
                          "--web.enable-lifecycle", *flags], data / "prometheus.log")
        wait_until(lambda: requests.get(f"{self.url}/-/ready", timeout=1).status_code == 200,
                   30, what="prometheus ready")

    def query(self, expr: str) -> list[dict[str, Any]]:
        response = requests.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()["data"]["result"]
        return result

    def wait_for(self, expr: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Poll an instant query until it returns at least one series."""
        result: list[dict[str, Any]] = wait_until(lambda: self.query(expr), timeout,
                                                  interval=0.5, what=f"PromQL {expr!r}")
        return result


# Runs a command as root without the capabilities that let root read any file, so that
# file permissions apply to it as they would to an unprivileged exporter.
WITHOUT_DAC_OVERRIDE = ("setpriv", "--bounding-set=-dac_override,-dac_read_search", "--")


def static_job(job: str, target: str, **extra: Any) -> dict[str, Any]:
    """One scrape config for a single loopback target."""
    return {"job_name": job, "static_configs": [{"targets": [target]}], **extra}


NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"


class NodeExporter:
    """A real node_exporter (Debian's prometheus-node-exporter) on a loopback port, the
    peer the benchmarks measure beside; ``start`` returns None when it is not installed
    (``benchmarks/setup`` installs it)."""

    def __init__(self, binary: str, workdir: Path, max_requests: int) -> None:
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        # --web.max-requests: its default (40) answers 503 past 40 scrapes in flight
        self.proc = Proc([binary, f"--web.listen-address={LOOPBACK}:{self.port}",
                          f"--web.max-requests={max_requests}"], workdir / "node.log")
        self.pid = self.proc.pid
        try:
            wait_until(lambda: requests.get(self.url + "/metrics", timeout=2).ok, 30,
                       what="node_exporter /metrics")
        except BaseException:
            self.proc.stop()
            raise

    @classmethod
    def start(cls, workdir: Path, max_requests: int = 40) -> NodeExporter | None:
        binary = shutil.which("prometheus-node-exporter") or (
            NODE_EXPORTER if Path(NODE_EXPORTER).exists() else None)
        return None if binary is None else cls(binary, workdir, max_requests)

    def stop(self) -> None:
        self.proc.stop()
