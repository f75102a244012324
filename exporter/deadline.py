"""Scrape deadlines (``time.monotonic()`` values) for work that runs in pieces.

A collector thread that overruns its deadline is abandoned by the scrape, but Python
cannot stop it: left alone it builds and renders on, holding the GIL against the next
scrape. Long loops therefore look at the deadline every few hundred or thousand items
and give up with ``TimeoutError``, which the collector runner reports as that
collector's failure.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")


def check(deadline: float | None) -> None:
    """Raise ``TimeoutError`` when ``deadline`` has passed (None: no deadline)."""
    if deadline is not None and time.monotonic() > deadline:
        raise TimeoutError("past the scrape deadline")


def paced(items: Sequence[T], deadline: float | None, every: int) -> Iterable[T]:
    """``items``, with a look at ``deadline`` before each ``every`` of them; ``items``
    itself (no generator in the loop) when there is no deadline."""
    if deadline is None:
        return items
    return _paced(items, deadline, every)


def _paced(items: Sequence[T], deadline: float, every: int) -> Iterator[T]:
    for start in range(0, len(items), every):
        check(deadline)
        yield from items[start:start + every]
