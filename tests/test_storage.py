"""The state store in process: the write-ahead log's group commit, replay and failure
handling; commits of state and cursors together; the lock; the tail checkpoint migration."""

from __future__ import annotations

import errno
import json
import os
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import msgspec
import pytest

from exporter.aggregator import Aggregator
from exporter.config import TailConfig
from exporter.ingest import Ingestor
from exporter.sources.follow import SavedFile
from exporter.sources.tail import CHECKPOINT_FILE, Checkpoint, legacy_state
from exporter.storage import StateStore, StorageLockedError, StorageUnavailableError
from exporter.storage.store import STATE_FILE
from exporter.storage.wal import WalRecord, WriteAheadLog

EVENT = b'{"kind":"error","component":"c","category":"tool"}'


def errors_counted(ingestor: Ingestor) -> float:
    return sum(n for (source, kind), n in ingestor.accepted.items() if kind == "error")


@pytest.fixture
def wal_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "wal"
    path.mkdir()
    yield path


def test_records_are_applied_in_log_order_and_replayed_after_the_applied_one(
        wal_dir: Path) -> None:
    wal = WriteAheadLog(wal_dir, clock=lambda: 100.0)
    seen: list[int] = []
    for i in range(5):
        def apply(now: float, i: int = i) -> None:
            seen.append(i)

        assert wal.append("push", "object", b"%d" % i, apply) is None
    assert seen == [0, 1, 2, 3, 4] and wal.applied_seq == 5
    wal.close()
    replayed: list[tuple[bytes, float]] = []
    again = WriteAheadLog(wal_dir)
    n = again.recover(3, {"push": lambda record, now: replayed.append((record.body, now))})
    assert n == 2 and replayed == [(b"3", 100.0), (b"4", 100.0)]
    assert again.next_seq == 6 and again.applied_seq == 5


def test_a_torn_last_frame_is_cut_and_new_records_follow_the_good_ones(wal_dir: Path) -> None:
    wal = WriteAheadLog(wal_dir)
    for i in range(3):
        wal.append("push", "object", b"%d" % i, lambda now: None)
    wal.close()
    segment = next(wal_dir.glob("*.wal"))
    with open(segment, "ab") as fh:
        fh.write(b"\x10\x00\x00\x00garbage")  # a crash in the middle of a frame
    again = WriteAheadLog(wal_dir)
    bodies: list[bytes] = []
    assert again.recover(0, {"push": lambda r, now: bodies.append(r.body)}) == 3
    assert bodies == [b"0", b"1", b"2"]
    again.append("push", "object", b"3", lambda now: None)
    again.close()
    last = WriteAheadLog(wal_dir)
    bodies.clear()
    assert last.recover(0, {"push": lambda r, now: bodies.append(r.body)}) == 4
    assert bodies == [b"0", b"1", b"2", b"3"]


def test_concurrent_appends_share_fsyncs_and_each_applies_once(wal_dir: Path) -> None:
    wal = WriteAheadLog(wal_dir)
    applied: list[int] = []
    lock = threading.Lock()

    def push(worker: int) -> None:
        for i in range(50):
            def apply(now: float, key: int = worker * 1000 + i) -> int:
                with lock:
                    applied.append(key)
                return key
            assert wal.append("push", "object", EVENT, apply) == worker * 1000 + i

    threads = [threading.Thread(target=push, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(applied) == sorted({w * 1000 + i for w in range(8) for i in range(50)})
    assert wal.stats.records == 400 and wal.stats.syncs <= 400
    wal.close()
    count = WriteAheadLog(wal_dir).recover(0, {"push": lambda r, now: None})
    assert count == 400


def test_a_failed_write_applies_nothing_and_the_log_recovers(
        wal_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wal = WriteAheadLog(wal_dir)
    applied: list[bytes] = []
    wal.append("push", "object", b"a", lambda now: applied.append(b"a"))
    real_write = os.write

    def full(fd: int, data: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(StorageUnavailableError, match="No space left"):
        wal.append("push", "object", b"b", lambda now: applied.append(b"b"))
    with pytest.raises(StorageUnavailableError):  # refused at once until the retry time
        wal.append("push", "object", b"c", lambda now: applied.append(b"c"))
    monkeypatch.setattr(os, "write", real_write)
    monkeypatch.setattr("exporter.storage.wal.RETRY_SECONDS", 0.0)
    wal._retry_at = 0.0
    wal.append("push", "object", b"d", lambda now: applied.append(b"d"))
    assert applied == [b"a", b"d"] and wal.problem == ""
    wal.close()
    bodies: list[bytes] = []
    WriteAheadLog(wal_dir).recover(0, {"push": lambda r, now: bodies.append(r.body)})
    assert bodies == [b"a", b"d"]


def test_a_failed_fsync_cuts_the_unsynced_records(wal_dir: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    wal = WriteAheadLog(wal_dir)
    wal.append("push", "object", b"kept", lambda now: None)

    def broken(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken)
    applied: list[bytes] = []
    with pytest.raises(StorageUnavailableError, match="Input/output"):
        wal.append("push", "object", b"lost", lambda now: applied.append(b"lost"))
    assert applied == []
    monkeypatch.undo()
    wal.close()
    bodies: list[bytes] = []
    WriteAheadLog(wal_dir).recover(0, {"push": lambda r, now: bodies.append(r.body)})
    assert bodies == [b"kept"]  # the client was told 503: a restart must not count it


class Counter:
    """A participant whose cursor is the number of batches it applied."""

    def __init__(self, ingestor: Ingestor) -> None:
        self.ingestor = ingestor
        self.lock = threading.Lock()
        self.batches = 0
        self.commits = 0

    def hold(self) -> AbstractContextManager[object]:
        return self.lock

    def cursor(self) -> Any:
        return {"batches": self.batches}

    def committed(self) -> None:
        self.commits += 1

    def feed(self) -> None:
        with self.lock:
            self.ingestor.ingest_raw("test", [EVENT])
            self.batches += 1


def open_store(path: Path) -> tuple[StateStore, Ingestor]:
    store = StateStore(path)
    ingestor = Ingestor(Aggregator())
    store.open(ingestor)
    return store, ingestor


def test_state_and_cursors_are_committed_together_and_restored(tmp_path: Path) -> None:
    store, ingestor = open_store(tmp_path / "data")
    counter = Counter(ingestor)
    store.attach("counter", counter)
    for _ in range(3):
        counter.feed()
    assert store.commit() and counter.commits == 1
    counter.feed()  # after the commit: lost with the process, as its cursor is
    store.lock.release()  # as kill -9 would: no final commit
    again, restored = open_store(tmp_path / "data")
    assert errors_counted(restored) == 3
    assert again.cursor("counter") == {"batches": 3}
    saved = json.loads((tmp_path / "data" / STATE_FILE).read_text())
    assert saved["cursors"]["counter"] == {"batches": 3} and saved["version"] == 1
    again.close()


def test_a_commit_that_changes_nothing_still_tells_each_participant(tmp_path: Path) -> None:
    """Redelivered duplicates change no cursor; the source still waits on a commit to
    acknowledge them, so an unchanged state must not skip the after-commit step."""
    store, ingestor = open_store(tmp_path / "data")
    counter = Counter(ingestor)
    store.attach("counter", counter)
    counter.feed()
    assert store.commit() and counter.commits == 1
    written = (tmp_path / "data" / STATE_FILE).stat().st_mtime_ns
    assert store.commit() and counter.commits == 2
    assert (tmp_path / "data" / STATE_FILE).stat().st_mtime_ns == written  # not rewritten
    assert store.commits["success"] == 1
    store.close()


def test_a_second_store_on_the_same_directory_is_refused(tmp_path: Path) -> None:
    store, _ = open_store(tmp_path / "data")
    with pytest.raises(StorageLockedError, match="in use by another exporter"):
        open_store(tmp_path / "data")
    store.close()
    again, _ = open_store(tmp_path / "data")  # free once the first is closed
    again.close()


def test_an_unwritable_directory_is_reported_and_never_fatal(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the directory should be")
    store, ingestor = open_store(blocker / "data")
    ingestor.ingest_raw("test", [EVENT])
    assert not store.commit()
    ok, detail = store.ready()
    assert not ok and "blocker/data" in detail and not store.writable
    assert store.commits["failure"] >= 1
    with pytest.raises(StorageUnavailableError):
        store.wal.append("push", "object", EVENT, lambda now: None)
    store.close()


def test_logged_batches_after_the_last_commit_are_replayed(tmp_path: Path) -> None:
    store, ingestor = open_store(tmp_path / "data")
    for _ in range(2):
        store.wal.append("push", "object", EVENT,
                         lambda now: ingestor.ingest_raw("push", [EVENT], now=now))
    assert store.commit()
    store.wal.append("push", "object", EVENT,
                     lambda now: ingestor.ingest_raw("push", [EVENT], now=now))
    store.wal.close()
    store.lock.release()  # killed: the third batch is only in the log
    again, restored = open_store(tmp_path / "data")
    assert errors_counted(restored) == 2

    def replay(record: WalRecord, now: float) -> None:
        restored.ingest_raw("push", [record.body], now=now)

    assert again.replay({"push": replay}) == 1
    assert errors_counted(restored) == 3
    again.close()
    third, final = open_store(tmp_path / "data")
    assert errors_counted(final) == 3 and third.replay({"push": replay}) == 0
    assert len(list((tmp_path / "data" / "wal").glob("*.wal"))) <= 1  # covered ones dropped
    third.close()


def test_an_older_tail_checkpoint_is_migrated_once(tmp_path: Path) -> None:
    old_agg = Ingestor(Aggregator())
    old_agg.ingest_raw("tail", [EVENT] * 7)
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    checkpoint = Checkpoint(version=1, written_at=1.0, files=[
        SavedFile(path="/x.jsonl", dev=1, ino=2, offset=30, line=7)], stats={},
        ingest=old_agg.snapshot(), aggregator=old_agg.aggregator.snapshot())
    (state_dir / CHECKPOINT_FILE).write_bytes(msgspec.json.encode(checkpoint))
    cfg = TailConfig(enabled=True, base_dir=str(tmp_path), state_dir="state")
    store = StateStore(tmp_path / "data")
    ingestor = Ingestor(Aggregator())
    store.open(ingestor, legacy=lambda: legacy_state(cfg))
    assert errors_counted(ingestor) == 7 and store.loaded_from == "migrated"
    assert store.cursor("tail")["files"][0]["offset"] == 30
    assert not (state_dir / CHECKPOINT_FILE).exists()
    assert (state_dir / (CHECKPOINT_FILE + ".migrated")).exists()
    store.close()
    again = StateStore(tmp_path / "data")
    fresh = Ingestor(Aggregator())
    again.open(fresh, legacy=lambda: legacy_state(cfg))
    assert errors_counted(fresh) == 7  # from the store now, not migrated twice
    again.close()


def test_the_demo_keeps_its_state_apart_from_a_plain_exporter() -> None:
    from exporter import config
    from exporter.runtime import DEMO_STORAGE_PATH, storage_path

    assert storage_path(config.build({})) == "data"
    assert storage_path(config.build({"demo": {"enabled": True}})) == DEMO_STORAGE_PATH
    assert storage_path(config.build({"demo": {"enabled": True},
                                      "storage": {"path": "/srv/x"}})) == "/srv/x"
