"""File following in process (``exporter/sources/follow.py``) with a recording sink: new
files, partial lines, rotation by rename, copy-truncate, over-long lines and where reading
resumes after a restart, each poll driven by the test (``test_tail.py`` checks the same
through the real exporter)."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import pytest

from exporter import config
from exporter.logutil import RateLimitedLogger
from exporter.sources.follow import FileFollower, Tailed


class Sink:
    """Records what the follower reports: the lines by label, counts and problems."""

    def __init__(self) -> None:
        self.lines_by_label: dict[str, list[bytes]] = {}
        self.oversized: list[str] = []
        self.counts: dict[tuple[str, str], int] = {}
        self.lags: dict[str, float] = {}
        self.problems: dict[str, tuple[str, str]] = {}

    def lines(self, tailed: Tailed, data: bytes, start: int, end: int, *, oversized: bool,
              nbytes: int) -> int:
        got = data[start:end].split(b"\n") if end > start else []
        self.lines_by_label.setdefault(tailed.label, []).extend(got)
        if oversized:
            self.oversized.append(tailed.label)
        return len(got)

    def read(self, label: str, nbytes: int) -> None:
        pass

    def count(self, label: str, what: str) -> None:
        self.counts[label, what] = self.counts.get((label, what), 0) + 1

    def lag(self, label: str, value: float) -> None:
        self.lags[label] = value

    def problems_now(self, current: dict[str, tuple[str, str]]) -> None:
        self.problems = current


def follower(base: Path, sink: Sink, **tail: Any) -> FileFollower:
    cfg = config.build({"sources": {"tail": {"enabled": True, "base_dir": str(base),
                                             "paths": ["logs/*.jsonl"], **tail}}})
    return FileFollower(cfg.sources.tail, sink,
                        RateLimitedLogger(logging.getLogger("test.follow"), 60.0))


def poll(f: FileFollower) -> None:
    while f.poll(time.monotonic() + 5):
        pass


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    (tmp_path / "logs").mkdir()
    return tmp_path / "logs"


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as f:
        f.write(data)


def test_new_files_are_followed_and_a_partial_line_waits_for_its_newline(
        logs: Path) -> None:
    sink = Sink()
    f = follower(logs.parent, sink)
    try:
        poll(f)
        assert sink.lines_by_label == {}
        path = logs / "a.jsonl"
        path.write_bytes(b"one\ntwo\nthr")
        poll(f)
        assert sink.lines_by_label == {"logs/a.jsonl": [b"one", b"two"]}
        assert sink.lags["logs/a.jsonl"] == 3.0  # the partial line, not handled yet
        append(path, b"ee\n")
        poll(f)
        assert sink.lines_by_label["logs/a.jsonl"] == [b"one", b"two", b"three"]
        assert f.files[str(path)].line_no == 3
        (logs / "ignored.txt").write_bytes(b"not matched\n")
        poll(f)
        assert set(sink.lines_by_label) == {"logs/a.jsonl"}
    finally:
        f.close()


def test_rotation_by_rename_drains_the_old_file_then_reads_the_new(logs: Path) -> None:
    sink = Sink()
    f = follower(logs.parent, sink, rotate_wait_seconds=0)
    path = logs / "a.jsonl"
    try:
        path.write_bytes(b"1\n2\n")
        poll(f)
        append(path, b"3\n")  # written before the rotation, not read yet
        os.rename(path, logs / "a.jsonl.1")  # no longer matches the glob
        path.write_bytes(b"4\n")
        poll(f)
        assert sink.lines_by_label["logs/a.jsonl"] == [b"1", b"2", b"3", b"4"]
        assert sink.counts == {("logs/a.jsonl", "rotations"): 1}
        assert f.draining == []  # released at once: rotate_wait_seconds is 0
    finally:
        f.close()


def test_copy_truncate_reads_the_file_again_from_the_start(logs: Path) -> None:
    sink = Sink()
    f = follower(logs.parent, sink)
    path = logs / "a.jsonl"
    try:
        path.write_bytes(b"first line of the old content\nsecond\n")
        poll(f)
        with path.open("r+b") as out:
            out.truncate(0)
            out.write(b"new\n")
        poll(f)
        assert sink.lines_by_label["logs/a.jsonl"] == [
            b"first line of the old content", b"second", b"new"]
        assert sink.counts == {("logs/a.jsonl", "truncations"): 1}
        assert f.files[str(path)].line_no == 1
    finally:
        f.close()


def test_a_line_over_the_limit_is_skipped_and_reported(logs: Path) -> None:
    sink = Sink()
    f = follower(logs.parent, sink, max_line_bytes=16, read_chunk_bytes=4096)
    path = logs / "a.jsonl"
    try:
        path.write_bytes(b"short\n" + b"x" * 40)
        poll(f)
        append(path, b"x" * 40 + b"\nafter\n")
        poll(f)
        assert sink.lines_by_label["logs/a.jsonl"] == [b"short", b"after"]
        assert sink.oversized == ["logs/a.jsonl"]
    finally:
        f.close()


def test_start_at_end_skips_what_is_there_on_the_first_start_only(logs: Path) -> None:
    path = logs / "a.jsonl"
    path.write_bytes(b"old\nolder\npart")
    sink = Sink()
    f = follower(logs.parent, sink, start_at="end")
    try:
        poll(f)
        append(path, b"ial\nnew\n")
        poll(f)
        # The line being written when following began is not cut: it is read whole.
        assert sink.lines_by_label["logs/a.jsonl"] == [b"partial", b"new"]
        saved = f.positions()
    finally:
        f.close()
    append(path, b"while stopped\n")
    sink = Sink()
    again = follower(logs.parent, sink, start_at="end")
    again.restore(saved)
    try:
        poll(again)
        assert sink.lines_by_label["logs/a.jsonl"] == [b"while stopped"]
    finally:
        again.close()


@pytest.mark.parametrize(("rewritten", "counted"), [
    (b"fresh\n", {}),  # other first bytes: another file's content, read from the start
    (b"L" * 70 + b"\n", {("logs/a.jsonl", "truncations"): 1}),  # same start, cut short
])
def test_a_file_rewritten_while_stopped_is_read_from_the_start(
        logs: Path, rewritten: bytes, counted: dict[tuple[str, str], int]) -> None:
    path = logs / "a.jsonl"
    path.write_bytes(b"L" * 70 + b"\nsecond\n")
    sink = Sink()
    f = follower(logs.parent, sink)
    try:
        poll(f)
        saved = f.positions()
    finally:
        f.close()
    with path.open("r+b") as out:  # same inode, shorter content
        out.truncate(0)
        out.write(rewritten)
    sink = Sink()
    again = follower(logs.parent, sink)
    again.restore(saved)
    try:
        poll(again)
        assert sink.lines_by_label["logs/a.jsonl"] == [rewritten.rstrip(b"\n")]
        assert sink.counts == counted
    finally:
        again.close()
