"""Types of the native ingest path (exporter/_lines.c); the contract is in exporter/native.py."""

from collections.abc import Callable
from typing import Any

CONTRACT_VERSION: int
HISTOGRAM_ROW: tuple[str, ...]
STORES: tuple[str, ...]
TRACKED: tuple[str, ...]

class Lines:
    def __init__(self, *, spec: dict[str, dict[str, tuple[Any, ...]]],
                 table: dict[str, Any],
                 delegate: dict[str, tuple[type, Callable[[Any, float], None], bool]]) -> None: ...
    def run(self, body: bytes | memoryview, pos: int, now: Callable[[], float],
            max_line: int, /) -> tuple[int, int, tuple[int, ...],
                                       list[tuple[str, BaseException]], bool, int]: ...
    def run_items(self, items: list[Any], index: int, now: Callable[[], float],
                  max_event: int, /) -> tuple[int, int, tuple[int, ...],
                                              list[tuple[str, BaseException]], bool]: ...
    def run_array(self, body: bytes | memoryview, pos: int, state: int, index: int,
                  now: Callable[[], float], max_event: int, /
                  ) -> tuple[int, int, int, tuple[int, ...], list[tuple[str, BaseException]],
                             bool, int, int]: ...
    def finish(self) -> None: ...
    def enabled(self) -> tuple[str, ...]: ...
    def kinds(self) -> tuple[str, ...]: ...
