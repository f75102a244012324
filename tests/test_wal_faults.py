"""The write-ahead log when a write fails while other records wait for their group's
fsync: each of them is either made durable before it is applied (and answered 2xx) or
failed (answered 503) and cut, never applied from a segment closed unsynced."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from exporter.storage import StorageUnavailableError
from exporter.storage.files import write_fully as real_write
from exporter.storage.wal import WriteAheadLog


def _interleave(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fsync_fails: bool
                ) -> tuple[list[str], list[int], int, list[bytes]]:
    """Record "a" is written, then waits before its group's fsync while the write of "b"
    fails (a full disk); then "a" goes on. Returns what was applied, the descriptors
    fsynced while "a" waited or after, the descriptor "a" was written to, and what a
    restart replays."""
    wal = WriteAheadLog(tmp_path / "wal")
    wal.append("push", "object", b"first", lambda now: None)  # the segment is open
    fd = wal._fd
    assert fd is not None
    applied: list[str] = []
    outcome: dict[str, Any] = {}
    arrived, go = threading.Event(), threading.Event()
    real_sync_and_apply = wal._sync_and_apply

    def paused(entry: Any) -> None:
        if threading.current_thread().name == "a":
            arrived.set()
            assert go.wait(10)
        real_sync_and_apply(entry)

    monkeypatch.setattr(wal, "_sync_and_apply", paused)
    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(target: int) -> None:
        if fsync_fails and target == fd:
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(target)
        synced.append(target)

    def a() -> None:
        try:
            outcome["a"] = wal.append("push", "object", b"a",
                                      lambda now: applied.append("a"))
        except StorageUnavailableError as exc:
            outcome["a"] = exc

    thread = threading.Thread(target=a, name="a")
    thread.start()
    assert arrived.wait(10)

    def full(target: int, data: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("exporter.storage.wal.write_fully", full)
    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(StorageUnavailableError, match="No space left"):
        wal.append("push", "object", b"b", lambda now: applied.append("b"))
    monkeypatch.setattr("exporter.storage.wal.write_fully", real_write)
    go.set()
    thread.join(10)
    assert not thread.is_alive()
    monkeypatch.setattr(os, "fsync", real_fsync)
    if "a" in applied:
        assert outcome["a"] is None
    else:
        assert isinstance(outcome["a"], StorageUnavailableError)
    wal.close()
    bodies: list[bytes] = []
    WriteAheadLog(tmp_path / "wal").recover(0, {"push": lambda r, now: bodies.append(r.body)})
    return applied, synced, fd, bodies


def test_a_record_waiting_for_its_fsync_when_a_write_fails_is_synced_first(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    applied, synced, fd, bodies = _interleave(tmp_path, monkeypatch, fsync_fails=False)
    assert applied == ["a"]
    assert fd in synced  # made durable before it was applied, and so answered 2xx
    assert bodies == [b"first", b"a"]


def test_a_record_waiting_for_its_fsync_is_failed_and_cut_when_it_cannot_be_synced(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    applied, _synced, _fd, bodies = _interleave(tmp_path, monkeypatch, fsync_fails=True)
    assert applied == []  # answered 503 ...
    assert bodies == [b"first"]  # ... and a restart does not count it either


def test_a_torn_tail_that_cannot_be_cut_still_replays_and_numbers_go_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Storage read-only at the start (after a crash that tore the last frame): the log
    is replayed all the same, and records written once it is writable again follow the
    last good one, in a new segment, and are found by the next start."""
    directory = tmp_path / "wal"
    wal = WriteAheadLog(directory)
    for i in range(3):
        wal.append("push", "object", b"%d" % i, lambda now: None)
    wal.close()
    segment = next(directory.glob("*.wal"))
    with open(segment, "ab") as fh:
        fh.write(b"\x10\x00\x00\x00torn")

    def read_only(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if "+" in mode or "w" in mode or "a" in mode:
            raise OSError(errno.EROFS, "Read-only file system")
        return open(path, mode, *args, **kwargs)

    monkeypatch.setattr("exporter.storage.wal.open", read_only, raising=False)
    again = WriteAheadLog(directory)
    bodies: list[bytes] = []
    assert again.recover(0, {"push": lambda r, now: bodies.append(r.body)}) == 3
    assert bodies == [b"0", b"1", b"2"] and again.next_seq == 4
    monkeypatch.undo()
    again.append("push", "object", b"3", lambda now: None)  # writable again
    again.close()
    bodies.clear()
    assert WriteAheadLog(directory).recover(
        0, {"push": lambda r, now: bodies.append(r.body)}) == 4
    assert bodies == [b"0", b"1", b"2", b"3"]
