"""Types of the native line path (exporter/_lines.c)."""

from collections.abc import Callable
from typing import Any

STORES: tuple[str, ...]
TRACKED: tuple[str, ...]

class Lines:
    def __init__(self, *, spec: dict[str, dict[str, tuple[Any, ...]]],
                 stores: dict[str, tuple[Any, ...]], tracked: dict[str, tuple[Any, ...]],
                 spend_for: Callable[[float], tuple[dict[str, float], dict[str, float]]],
                 delegate: dict[str, tuple[type, Callable[[Any, float], None], bool]]) -> None: ...
    def run(self, body: bytes | memoryview, pos: int, now: Callable[[], float],
            max_line: int, /) -> tuple[int, int, tuple[int, ...],
                                       list[tuple[str, BaseException]], bool, int]: ...
    def finish(self) -> None: ...
    def enabled(self) -> tuple[str, ...]: ...
    def kinds(self) -> tuple[str, ...]: ...
