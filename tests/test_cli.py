"""Command line and start-up: every command takes the common flags, ``--version`` names
the package version, the build identity is resolved once however many threads ask for it,
and a server that cannot start (port taken, application failing) leaves nothing running."""

from __future__ import annotations

import socket
import subprocess
import threading
from typing import Any

import pytest

from exporter import cli, config, server, version, web
from exporter.collectors import COLLECTORS
from exporter.runtime import Runtime
from tests.procs import EXPORTER_BIN, LOOPBACK, free_port


@pytest.mark.parametrize("command", ["serve", "check-config", "demo"])
def test_every_command_parses_the_common_flags(command: str) -> None:
    args = cli.build_parser().parse_args(
        [command, "--config.file=x.yml", "--web.listen-address=:9", "--no-collector.gpu",
         "--collector.timeout=2"])
    assert args.command == command and args.config_file == "x.yml"
    assert cli.flags_layer(args)["web"] == {"listen_address": ":9"}
    assert cli.flags_layer(args)["collectors"] == {"enabled": {"gpu": False},
                                                   "timeout_seconds": 2.0}


def test_the_redis_consumer_name_is_a_flag_for_a_replicas_stable_identity() -> None:
    args = cli.build_parser().parse_args(["serve", "--redis-streams.consumer=exporter-1"])
    assert cli.flags_layer(args)["sources"] == {"redis_streams": {"consumer": "exporter-1"}}


@pytest.mark.parametrize("command", ["serve", "check-config", "demo"])
def test_every_command_lists_its_flags_in_help(command: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli.build_parser().parse_args([command, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert "--config.file" in text and "--web.listen-address" in text
    assert all(f"--collector.{name}" in text for name in COLLECTORS)
    assert ("--demo.rate" in text) == (command == "demo")


def test_demo_flags_belong_to_demo_only() -> None:
    assert cli.flags_layer(cli.build_parser().parse_args(["demo", "--demo.rate=3"]))["demo"] \
        == {"rate_per_second": 3.0, "enabled": True}
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["serve", "--demo.rate=3"])


def test_version_flag_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out == f"ai-metrics-exporter {version.build_info().version}\n"


def test_build_identity_is_resolved_once_across_threads() -> None:
    version.prefetch()
    seen: list[version.BuildInfo] = []
    threads = [threading.Thread(target=lambda: seen.append(version.build_info()))
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(seen) == 4 and all(info is version.build_info() for info in seen)
    assert version.build_info().version and version.build_info().python_version


@pytest.mark.e2e
def test_port_in_use_exits_1_naming_the_address() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen(1)
        address = f"{LOOPBACK}:{taken.getsockname()[1]}"
        result = subprocess.run([EXPORTER_BIN, f"--web.listen-address={address}"],
                                capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert f"cannot listen on {address}" in result.stderr


def test_failing_application_leaves_no_listener_or_worker(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The listener starts while the application is built: if building fails, the
    listener and its worker threads are stopped and the error is the caller's."""
    port = free_port()
    runtime = Runtime(config.build({"web": {"listen_address": f"{LOOPBACK}:{port}"}}))

    def broken(_runtime: Runtime) -> Any:
        raise RuntimeError("application cannot be built")

    monkeypatch.setattr(web, "create_app", broken)
    before = set(threading.enumerate())
    try:
        with pytest.raises(RuntimeError, match="cannot be built"):
            server.serve(runtime)
    finally:
        runtime.stop()
    assert [t for t in threading.enumerate() if t not in before and not t.daemon] == []
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as again:
        again.bind((LOOPBACK, port))  # the port is free again
