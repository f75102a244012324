"""The alert thresholds that panels draw, read from ``prometheus/rules/parameters.rules.yml``.

A threshold is tuned in one place: the rules file records it as ``parameter:<quantity>:<severity>``
for the alerts, and the dashboards draw the same value. The builders receive a `Parameters`
value instead of reading the file themselves, so building a dashboard has no hidden input.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

_VECTOR = re.compile(r"\s*vector\(\s*([0-9.eE+-]+)\s*\)\s*")


def load_parameters(path: Path) -> dict[str, float]:
    """``parameter:<quantity>:<severity>`` → value, from the ``vector(<number>)`` records."""
    data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    values: dict[str, float] = {}
    for group in data["groups"]:
        for rule in group["rules"]:
            match = _VECTOR.fullmatch(str(rule.get("expr", "")))
            if "record" in rule and match:
                values[str(rule["record"])] = float(match.group(1))
    return values


@dataclass(frozen=True)
class Parameters:
    """The recorded alert parameters, looked up by quantity and severity."""

    values: Mapping[str, float]

    @classmethod
    def from_file(cls, path: Path) -> Parameters:
        return cls(load_parameters(path))

    def threshold(self, quantity: str, severity: str) -> float:
        """One alert threshold; a missing parameter is an error, never a silent default."""
        return self.values[f"parameter:{quantity}:{severity}"]
