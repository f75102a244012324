"""The JSONL tail source against the real exporter process: exact counts on /metrics across
appends, rotation by rename and by copy-truncate, kill -9 and restart, partial lines and
bad input. Every check waits for the expected value, then holds still and checks it again:
no fewer events, and no more."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.procs import WITHOUT_DAC_OVERRIDE, Exporter, sample_value, wait_until

pytestmark = pytest.mark.e2e

LOG = Path("state/telemetry/app.jsonl")
LABEL = str(LOG)
SETTLE = 0.6  # several poll intervals: long enough for a wrong extra count to show


def config(base: Path, **tail: Any) -> dict[str, Any]:
    """Default older-layout globs under ``base``; fast polling so the tests stay short."""
    settings = {"enabled": True, "base_dir": str(base), "poll_interval_seconds": 0.05,
                "checkpoint_interval_seconds": 0.3, "rotate_wait_seconds": 1.0, **tail}
    return {"sources": {"tail": settings}, "ai": {"log_interval_seconds": 0.01}}


def line(component: str = "writer") -> bytes:
    return b'{"kind":"error","component":"%s","category":"tool"}\n' % component.encode()


def append(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as handle:
        handle.write(data)


def value(exporter: Exporter, name: str, labels: dict[str, str]) -> float:
    return sample_value(exporter.metrics(), name, labels) or 0.0


def errors(exporter: Exporter, component: str = "writer") -> float:
    return value(exporter, "ai_errors_total", {"component": component, "category": "tool"})


def expect(exporter: Exporter, expected: float, component: str = "writer",
           timeout: float = 20.0) -> None:
    """Exactly ``expected`` events counted: reached, and still so a while later."""
    try:
        wait_until(lambda: errors(exporter, component) == expected, timeout,
                   what=f"{expected} events of {component}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; counted {errors(exporter, component)}") from None
    time.sleep(SETTLE)
    assert errors(exporter, component) == expected


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[Exporter]]:
    """Exporters a test starts; all stopped at the end, whatever happened."""
    procs: list[Exporter] = []
    yield procs
    for proc in procs:
        proc.stop()


def start(procs: list[Exporter], base: Path, storage: str = "", **tail: Any) -> Exporter:
    settings = config(base, **tail)
    # One store per test directory, kept across the restarts a test makes.
    settings["storage"] = {"path": storage or str(base / "data")}
    proc = Exporter(base, config=settings)
    procs.append(proc)
    return proc


def test_writer_appends_while_running(tmp_path: Path, started: list[Exporter]) -> None:
    exporter = start(started, tmp_path)
    path = tmp_path / LOG
    for _ in range(40):
        append(path, line() * 50)
        time.sleep(0.01)
    expect(exporter, 2000)
    text = exporter.metrics()
    assert sample_value(text, "ai_exporter_tail_lines_total", {"path": LABEL}) == 2000
    assert sample_value(text, "ai_exporter_tail_events_total", {"path": LABEL}) == 2000
    assert sample_value(text, "ai_exporter_tail_read_bytes_total",
                        {"path": LABEL}) == path.stat().st_size
    assert sample_value(text, "ai_exporter_tail_lag_bytes", {"path": LABEL}) == 0
    assert sample_value(text, "ai_exporter_events_total",
                        {"source": "tail", "kind": "error"}) == 2000
    assert sample_value(text, "ai_exporter_tail_files") == 1
    assert exporter.get("/readyz").json()["checks"]["source:tail"]["ok"] is True


def test_rotation_by_rename_mid_stream(tmp_path: Path, started: list[Exporter]) -> None:
    exporter = start(started, tmp_path)
    path = tmp_path / LOG
    path.parent.mkdir(parents=True)
    writer = open(path, "ab", buffering=0)  # noqa: SIM115 - the writer keeps it open
    writer.write(line() * 500)
    expect(exporter, 500)  # followed before it rotates (else only its new name is seen)
    writer.write(line() * 20)
    os.rename(path, path.with_name("app.jsonl.1"))
    writer.write(line() * 50)  # the writer finishes the rotated file before reopening
    writer.close()
    append(path, line() * 300)
    expect(exporter, 870)
    assert value(exporter, "ai_exporter_tail_rotations_total", {"path": LABEL}) == 1
    # Rotated to a name the glob still matches: followed on, never read again.
    os.rename(path, path.with_name("app-1.jsonl"))
    append(path, line() * 100)
    expect(exporter, 970)
    assert value(exporter, "ai_exporter_tail_rotations_total", {"path": LABEL}) == 2


def test_rotation_by_copy_truncate_mid_stream(tmp_path: Path,
                                              started: list[Exporter]) -> None:
    exporter = start(started, tmp_path)
    path = tmp_path / LOG
    append(path, line() * 400)
    expect(exporter, 400)
    shutil.copyfile(path, path.with_name("app.jsonl.1"))
    with open(path, "r+b") as handle:
        handle.truncate(0)
    wait_until(lambda: value(exporter, "ai_exporter_tail_truncations_total",
                             {"path": LABEL}) == 1, 10, what="truncation seen")
    append(path, line() * 250)
    expect(exporter, 650)
    # Truncated and refilled past the old offset before a poll: the changed first bytes
    # give it away.
    with open(path, "r+b") as handle:
        handle.truncate(0)
        handle.write(line("after") * 400)
    expect(exporter, 400, component="after")
    assert errors(exporter) == 650
    assert value(exporter, "ai_exporter_tail_truncations_total", {"path": LABEL}) == 2


def test_kill9_and_restart_mid_file(tmp_path: Path, started: list[Exporter]) -> None:
    path = tmp_path / LOG
    append(path, line() * 1000)
    first = start(started, tmp_path, read_chunk_bytes=4096)
    done = threading.Event()

    def write() -> None:
        for _ in range(60):
            append(path, line() * 50)
            time.sleep(0.04)
        done.set()

    thread = threading.Thread(target=write)
    thread.start()
    try:
        wait_until(lambda: errors(first) >= 1500, 20, what="reading under way")
        time.sleep(0.5)  # a checkpoint or two behind the last read lines
        before = errors(first)
        first.kill9()
        second = start(started, tmp_path, read_chunk_bytes=4096)
        # Restored counters plus the lines after the checkpoint, read before serving: a
        # counter never goes backwards, so rate() sees no reset.
        assert errors(second) >= before
    finally:
        thread.join(30)
    assert done.is_set()
    expect(second, 4000)
    text = second.metrics()
    assert sample_value(text, "ai_exporter_tail_lines_total", {"path": LABEL}) == 4000
    assert sample_value(text, "ai_exporter_events_total",
                        {"source": "tail", "kind": "error"}) == 4000
    # A graceful stop, events written while stopped, and a start: still exact.
    second.stop()
    append(path, line() * 100)
    third = start(started, tmp_path, read_chunk_bytes=4096)
    expect(third, 4100)


def test_partial_line_completed_later(tmp_path: Path, started: list[Exporter]) -> None:
    path = tmp_path / LOG
    append(path, line() * 10)
    first = start(started, tmp_path)
    whole = line()
    append(path, whole[:20])
    expect(first, 10)  # the partial line is held, not counted and not rejected
    assert value(first, "ai_exporter_tail_rejected_total",
                 {"path": LABEL, "reason": "malformed_json"}) == 0
    append(path, whole[20:30])
    time.sleep(SETTLE)
    first.kill9()  # held across a crash too: the checkpoint ends at the last newline
    second = start(started, tmp_path)
    expect(second, 10)
    append(path, whole[30:])
    expect(second, 11)
    assert value(second, "ai_exporter_tail_lines_total", {"path": LABEL}) == 11


def test_bad_lines_between_valid_ones(tmp_path: Path, started: list[Exporter]) -> None:
    path = tmp_path / LOG
    huge = b'{"kind":"error","component":"' + b"x" * (1024 * 1024 + 100) + b'"}\n'
    append(path, line() * 3 + b"not json\n" + huge
           + b'{"kind":"error","component":"w\xff","category":"tool"}\n'
           + b'{"kind":"bogus"}\n' + b"\n" + line() * 2)
    exporter = start(started, tmp_path)
    expect(exporter, 5)
    text = exporter.metrics()
    for reason in ("malformed_json", "too_large", "invalid_utf8", "unknown_kind"):
        assert sample_value(text, "ai_exporter_tail_rejected_total",
                            {"path": LABEL, "reason": reason}) == 1, reason
        assert sample_value(text, "ai_exporter_events_rejected_total",
                            {"source": "tail", "reason": reason}) == 1, reason
    assert sample_value(text, "ai_exporter_tail_lines_total", {"path": LABEL}) == 10
    assert f"{LABEL} line 4: malformed_json" in exporter.log()
    detail = exporter.get("/readyz").json()["checks"]["source:tail"]
    assert detail["ok"] is True
    assert f"{LABEL} line 7: unknown_kind" in detail["detail"]
    append(path, line())
    expect(exporter, 6)


def test_bad_lines_among_many_are_found_by_number(tmp_path: Path,
                                                  started: list[Exporter]) -> None:
    """Tens of thousands of lines, read in big chunks and decoded in slices of many lines:
    each bad one (some next to a slice boundary) is rejected under its own line number,
    every other line counts exactly once."""
    path = tmp_path / LOG
    total = 40_000
    bad = {
        7: b'{"kind":"error","component":"writer","component":"writer","category":"tool"}\n',
        1190: b"\n",  # blank: a line, not an event, not rejected
        1191: b"not json\n",
        20_000: line()[:-1] + b" " * 300 + b"\n",  # over max_line_bytes
        39_999: b'{"kind":"nope"}\n',
    }
    other = {30_000: line("a:b"), 30_001: line()[:-1] + b"\r\n"}  # valid, unusual
    append(path, b"".join(bad.get(n) or other.get(n) or line() for n in range(1, total + 1)))
    exporter = start(started, tmp_path, max_line_bytes=200)
    expect(exporter, total - len(bad) - 1)
    assert errors(exporter, "a:b") == 1
    text = exporter.metrics()
    assert sample_value(text, "ai_exporter_tail_lines_total", {"path": LABEL}) == total
    assert sample_value(text, "ai_exporter_tail_events_total", {"path": LABEL}) == total - 5
    for reason in ("duplicate_key", "malformed_json", "too_large", "unknown_kind"):
        assert sample_value(text, "ai_exporter_tail_rejected_total",
                            {"path": LABEL, "reason": reason}) == 1, reason
    assert f"{LABEL} line 7: duplicate_key" in exporter.log()
    detail = exporter.get("/readyz").json()["checks"]["source:tail"]["detail"]
    assert f"last rejected line: {LABEL} line 39999: unknown_kind" in detail
    append(path, line())
    expect(exporter, total - len(bad))


def test_file_replaced_by_directory_and_vanishing(tmp_path: Path,
                                                  started: list[Exporter]) -> None:
    exporter = start(started, tmp_path)
    path = tmp_path / LOG
    append(path, line() * 10)
    expect(exporter, 10)
    path.unlink()
    path.mkdir()
    wait_until(lambda: exporter.get("/readyz").status_code == 503, 10, what="not ready")
    check = exporter.get("/readyz").json()["checks"]["source:tail"]
    assert check["ok"] is False and f"{LABEL}: not a regular file" in check["detail"]
    assert value(exporter, "ai_exporter_tail_errors_total",
                 {"path": LABEL, "reason": "not_a_file"}) == 1
    path.rmdir()
    append(path, line() * 5)
    expect(exporter, 15)
    assert exporter.get("/readyz").status_code == 200
    path.unlink()
    wait_until(lambda: value(exporter, "ai_exporter_tail_files", {}) == 0, 10,
               what="deleted file released")
    assert errors(exporter) == 15


def test_state_directory_unusable(tmp_path: Path, started: list[Exporter]) -> None:
    (tmp_path / "blocker").write_text("a file where the state directory should be")
    exporter = start(started, tmp_path, storage="blocker/state")
    append(tmp_path / LOG, line() * 20)
    expect(exporter, 20)  # counting goes on without commits
    check = exporter.get("/readyz").json()["checks"]["storage"]
    assert exporter.get("/readyz").status_code == 503
    assert "blocker/state" in check["detail"] and check["ok"] is False
    assert value(exporter, "ai_exporter_storage_commits_total", {"outcome": "failure"}) >= 1
    assert "blocker/state" in exporter.log()


def test_unreadable_file(tmp_path: Path, started: list[Exporter]) -> None:
    path = tmp_path / LOG
    append(path, line() * 3)
    path.chmod(0)
    # As root, the exporter runs without the capabilities that bypass file permissions.
    prefix = WITHOUT_DAC_OVERRIDE if os.geteuid() == 0 else ()
    exporter = Exporter(tmp_path, config=config(tmp_path), prefix=prefix)
    started.append(exporter)
    wait_until(lambda: exporter.get("/readyz").status_code == 503, 10, what="not ready")
    assert value(exporter, "ai_exporter_tail_errors_total",
                 {"path": LABEL, "reason": "unreadable"}) == 1
    path.chmod(0o644)
    expect(exporter, 3)


def test_start_at_end(tmp_path: Path, started: list[Exporter]) -> None:
    path = tmp_path / LOG
    append(path, line() * 100 + line()[:10])
    exporter = start(started, tmp_path, start_at="end")
    time.sleep(SETTLE)
    assert errors(exporter) == 0
    append(path, line()[10:] + line() * 4)  # the line being written when it started counts
    expect(exporter, 5)
    append(tmp_path / "state/analytics/new.jsonl", line() * 7)  # new files: from the start
    expect(exporter, 12)


def test_reload_neither_rereads_nor_restores_twice(tmp_path: Path,
                                                   started: list[Exporter]) -> None:
    exporter = start(started, tmp_path)
    path = tmp_path / LOG
    append(path, line() * 100)
    expect(exporter, 100)
    exporter.signal(signal.SIGHUP)
    wait_until(lambda: "configuration reloaded" in exporter.log(), 10, what="reload")
    append(path, line() * 50)
    expect(exporter, 150)
    assert value(exporter, "ai_exporter_tail_lines_total", {"path": LABEL}) == 150
