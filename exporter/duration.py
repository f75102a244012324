"""Durations as Prometheus writes them (``30s``, ``5m``, ``1h30m``, ``500ms``).

Operators copy these from Prometheus and Alertmanager configurations and flags, so every
duration setting of the exporter accepts them next to a plain number. The grammar is the
one of Prometheus' ``model.ParseDuration``: integer amounts, units from years down to
milliseconds, each at most once and largest first (``1m30s``, never ``30s1m``); a year is
365 days, a week 7 days.
"""

from __future__ import annotations

import re

_UNITS = (("y", 365 * 86400.0), ("w", 7 * 86400.0), ("d", 86400.0), ("h", 3600.0),
          ("m", 60.0), ("s", 1.0), ("ms", 0.001))
_DURATION = re.compile("".join(f"(?:(?P<{unit}>[0-9]+){unit})?" for unit, _ in _UNITS))
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")

EXAMPLES = "a number of seconds or a duration such as 500ms, 30s, 5m, 1h30m, 2d"


def parse_prometheus_duration(text: str) -> float:
    """``1h30m`` → 5400.0 seconds; ValueError for anything ``model.ParseDuration`` refuses.

    ``0`` is accepted without a unit, as Prometheus does; any other number needs one here
    (``parse_seconds`` is the function that also takes plain numbers).
    """
    if text == "0":
        return 0.0
    match = _DURATION.fullmatch(text)
    if not text or match is None:
        raise ValueError(f"not a valid duration string: {text!r}")
    total = 0.0
    for unit, seconds in _UNITS:
        amount = match.group(unit)
        if amount is not None:
            total += int(amount) * seconds
    return total


def parse_seconds(text: str) -> float:
    """A plain number of seconds (``2``, ``0.25``) or a Prometheus duration, in seconds.

    ValueError names what is accepted, for a configuration error to pass on as is.
    """
    value = text.strip()
    if _NUMBER.fullmatch(value):
        return float(value)
    try:
        return parse_prometheus_duration(value)
    except ValueError:
        raise ValueError(f"expected {EXAMPLES}, got {text!r}") from None


def parse_milliseconds(text: str) -> int | float:
    """A plain number of milliseconds (``250``: what a ``*_ms`` setting always held) or a
    Prometheus duration (``2s``), in milliseconds; whole numbers come back as ``int``."""
    value = text.strip()
    if _NUMBER.fullmatch(value):
        millis = float(value)
    else:
        try:
            millis = parse_prometheus_duration(value) * 1000
        except ValueError:
            raise ValueError(f"expected a number of milliseconds or a duration such as "
                             f"500ms, 30s, 5m, got {text!r}") from None
        millis = round(millis, 3)
    return int(millis) if millis.is_integer() else millis
