"""The guard that keeps the fast tier honest (tests/conftest.py): a test not marked e2e
cannot start a process, even when the code under test swallows the error, and every
spawner is back in place afterwards."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import subprocess
from collections.abc import Generator
from typing import cast

import pytest

from tests.conftest import SPAWNERS, SpawnOutsideE2E, _guarded


class FakeItem:
    """What ``_guarded`` reads of a test item."""

    def __init__(self, e2e: bool) -> None:
        self.nodeid = "tests/test_x.py::test_y"
        self._e2e = e2e

    def get_closest_marker(self, name: str) -> object | None:
        return object() if name == "e2e" and self._e2e else None


def _enter(item: FakeItem) -> Generator[None, None, None]:
    phase = _guarded(cast(pytest.Item, item))  # duck-typed: what the guard reads
    next(phase)
    return phase


def _leave(phase: Generator[None, None, None]) -> None:
    with pytest.raises(StopIteration):
        phase.send(None)


def test_a_spawn_outside_e2e_raises_and_fails_even_if_swallowed() -> None:
    originals = [getattr(owner, attr) for owner, attr in SPAWNERS if hasattr(owner, attr)]
    phase = _enter(FakeItem(e2e=False))
    with pytest.raises(SpawnOutsideE2E, match="must be marked e2e"):
        subprocess.run(["true"], check=False)
    with contextlib.suppress(Exception):  # swallowing the error does not hide the spawn
        os.system("true")
    with pytest.raises(pytest.fail.Exception, match=r"not marked e2e.*\['true'\].*system"):
        phase.send(None)
    after = [getattr(owner, attr) for owner, attr in SPAWNERS if hasattr(owner, attr)]
    assert after == originals


def test_every_spawner_is_refused_outside_e2e() -> None:
    phase = _enter(FakeItem(e2e=False))
    with pytest.raises(SpawnOutsideE2E):
        os.fork()
    with pytest.raises(SpawnOutsideE2E):
        os.posix_spawn("/bin/true", ["true"], {})
    with pytest.raises(SpawnOutsideE2E):  # through _posixsubprocess.fork_exec
        multiprocessing.get_context("spawn").Process(target=print).start()
    with pytest.raises(pytest.fail.Exception):
        phase.send(None)


def test_an_e2e_test_is_left_alone() -> None:
    originals = [getattr(owner, attr) for owner, attr in SPAWNERS if hasattr(owner, attr)]
    phase = _enter(FakeItem(e2e=True))
    assert [getattr(owner, attr) for owner, attr in SPAWNERS
            if hasattr(owner, attr)] == originals
    _leave(phase)
