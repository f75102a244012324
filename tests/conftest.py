"""Session fixtures (real servers started once, on free loopback ports, always cleaned up) and
the guard that keeps the test pyramid honest.

A test that starts a process (the exporter, prometheus, promtool, redis, openssl, even
``python -c``) is marked ``e2e``; ``pytest -m "not e2e"`` is then the fast in-process suite
that needs no Debian package. The split is checked, not trusted: while a test that is not
marked ``e2e`` sets up, runs or tears down, every way of starting a process (``subprocess``,
``os.fork``, ``os.posix_spawn``, ``os.system``, multiprocessing) fails it, whether or not the
code under test swallows the error.

The fast tier (a run selected with ``-m`` that holds no e2e test) also runs each property
test with a 25th of its examples (5 at least): a quick check of every property on each
edit, while the full suite keeps the counts the tests ask for.
"""

from __future__ import annotations

import _posixsubprocess
import os
import subprocess
import tempfile
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import settings

from exporter import runtime
from exporter.config import Config, StorageConfig
from exporter.storage import StateStore
from exporter.version import build_info
from tests.procs import Exporter

# (module, attribute) of every call that can start a process; subprocess (its own import of
# fork_exec, or os.posix_spawn) and multiprocessing reach the kernel through these.
SPAWNERS: tuple[tuple[Any, str], ...] = (
    (subprocess, "_fork_exec"),
    (_posixsubprocess, "fork_exec"),
    (os, "fork"),
    (os, "forkpty"),
    (os, "posix_spawn"),
    (os, "posix_spawnp"),
    (os, "system"),
)


class SpawnOutsideE2E(AssertionError):
    """A test not marked e2e tried to start a process."""


def _refuse(name: str, attempts: list[str]) -> Callable[..., Any]:
    def refused(*args: Any, **_: Any) -> Any:
        what = f"{name}({args[0]!r})" if args else f"{name}()"
        attempts.append(what)
        raise SpawnOutsideE2E(f"{what}: a test that starts a process must be marked e2e")

    return refused


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    return (yield from _guarded(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    return (yield from _guarded(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    return (yield from _guarded(item))


def _guarded(item: pytest.Item) -> Generator[None, None, None]:
    """Run one phase of ``item``; if it is not e2e, with every spawner refusing."""
    if item.get_closest_marker("e2e") is not None:
        return (yield)
    attempts: list[str] = []
    saved = [(owner, attr, getattr(owner, attr)) for owner, attr in SPAWNERS
             if hasattr(owner, attr)]
    for owner, attr, _ in saved:
        setattr(owner, attr, _refuse(attr, attempts))
    try:
        result = yield
    finally:
        for owner, attr, original in saved:
            setattr(owner, attr, original)
    if attempts:  # the code under test may have caught the error: fail the test anyway
        pytest.fail(f"{item.nodeid} is not marked e2e but started a process: "
                    + "; ".join(attempts), pytrace=False)
    return result


FAST_EXAMPLES_DIVISOR = 25
FAST_EXAMPLES_MIN = 5
FAST_TIER = pytest.StashKey[bool]()


@pytest.hookimpl(trylast=True)  # after ``-m`` has deselected
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Decide the tier; in the fast one, fewer examples for every Hypothesis test (see the
    module doc)."""
    fast = bool(config.option.markexpr) and not any(
        item.get_closest_marker("e2e") for item in items)
    config.stash[FAST_TIER] = fast
    if not fast:
        return
    for item in items:
        test = getattr(item, "obj", None)
        if test is None or getattr(test, "_fast_examples", False):
            continue  # not a function, or a parametrized one already scaled
        given = getattr(test, "_hypothesis_internal_use_settings", None)
        if isinstance(given, settings):
            examples = max(FAST_EXAMPLES_MIN, given.max_examples // FAST_EXAMPLES_DIVISOR)
            # Hypothesis reads this attribute when the test runs; there is no public way
            # to lower a count that a test's own @settings sets.
            test._hypothesis_internal_use_settings = settings(
                given, max_examples=min(given.max_examples, examples))
            test._fast_examples = True


def pytest_sessionstart(session: pytest.Session) -> None:
    """Resolve the build identity (two ``git`` runs) before any test, so that in-process
    tests reading ``build_info()`` start no process."""
    build_info()


@pytest.fixture(scope="session")
def fast_tier(request: pytest.FixtureRequest) -> bool:
    """Whether this run is the fast tier (see the module doc): a test that measures over a
    large volume may take a smaller one there, and the full one in the full suite."""
    return request.config.stash.get(FAST_TIER, False)


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("work")


@pytest.fixture(scope="session")
def exporter(workdir: Path) -> Iterator[Exporter]:
    """The exporter with default configuration: real host metrics, no demo."""
    proc = Exporter(workdir)
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def demo_exporter(workdir: Path) -> Iterator[Exporter]:
    """The exporter running the demo workload (all AI metrics moving), fast rate."""
    proc = Exporter(workdir, command="demo", args=["--demo.rate=400", "--demo.episode=none"])
    yield proc
    proc.stop()


@pytest.fixture(scope="session", autouse=True)
def _in_process_storage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A runtime built in this process with the default ``storage.path`` (``data``, under
    the current directory: the checkout) gets a directory of its own under the session's
    temporary directory instead, so tests never write into the checkout nor share a
    store (whose lock would refuse the second)."""
    base = tmp_path_factory.mktemp("storage")
    original = runtime.build_store
    default = StorageConfig().path

    def isolated(cfg: Config) -> StateStore:
        if cfg.storage.path == default:
            storage = msgspec.structs.replace(cfg.storage, path=tempfile.mkdtemp(dir=base))
            cfg = msgspec.structs.replace(cfg, storage=storage)
        return original(cfg)

    patch = pytest.MonkeyPatch()
    patch.setattr(runtime, "build_store", isolated)
    yield
    patch.undo()
