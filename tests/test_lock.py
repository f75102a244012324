"""The lock files agree with pyproject.toml, and the test venv holds what they lock."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.lockfile import ROOT, disagreements, installed_differences, read_lock, requirements

DEV_LOCK = ROOT / "requirements" / "dev.lock"
RUN_LOCK = ROOT / "requirements" / "run.lock"


@pytest.mark.parametrize(("lock", "extras"), [
    pytest.param(DEV_LOCK, ("dev", "gpu"), id="dev"),
    pytest.param(RUN_LOCK, ("gpu", "grpc"), id="run"),
])
def test_lock_pins_every_requirement_of_pyproject_within_its_range(
        lock: Path, extras: tuple[str, ...]) -> None:
    problems = disagreements(read_lock(lock), requirements(extras))
    assert not problems, f"pyproject.toml and {lock.name} disagree (run scripts/lock): {problems}"


def test_every_pin_is_hashed() -> None:
    for lock in (DEV_LOCK, RUN_LOCK):
        unhashed = [pin.name for pin in read_lock(lock).values() if not pin.hashes]
        assert not unhashed, f"{lock.name}: no hashes for {unhashed}"


def test_run_lock_pins_the_versions_of_the_dev_lock() -> None:
    dev, run = read_lock(DEV_LOCK), read_lock(RUN_LOCK)
    assert set(run) <= set(dev)
    assert {name: pin.version for name, pin in run.items()} == \
        {name: dev[name].version for name in run}


def test_the_test_environment_holds_the_locked_versions() -> None:
    if os.environ.get("EXPORTER_TEST_UNLOCKED"):
        # scripts/test --latest: the venv holds the newest releases on purpose.
        assert read_lock(DEV_LOCK)
        return
    assert not installed_differences(read_lock(DEV_LOCK))
