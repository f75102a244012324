"""What start-up leaves alive is out of the collector's view, so a full collection under
load walks only what was made since."""

from __future__ import annotations

import gc
import tempfile
import time

from exporter import config
from exporter.runtime import Runtime
from exporter.server import freeze_startup_heap


def _full_collection_ms() -> float:
    started = time.perf_counter()
    gc.collect()
    return (time.perf_counter() - started) * 1000


def test_freezing_the_startup_heap_takes_it_out_of_full_collections() -> None:
    runtime = Runtime(config.build({"storage": {"path": tempfile.mkdtemp()}}))
    try:
        tracked = len(gc.get_objects())
        freeze_startup_heap()
        try:
            assert gc.get_freeze_count() >= tracked // 2
            assert len(gc.get_objects()) < tracked // 4
            print(f"full collection after the freeze: {_full_collection_ms():.1f} ms")
        finally:
            gc.unfreeze()  # the rest of the test session collects as before
    finally:
        runtime.stop()
