"""The provisioned Grafana dashboards, one module per dashboard.

Each module has ``build(params) -> Board``; `dashboards` builds them all from the alert
parameters it is given (nothing is read at import), keyed by the file name under
``grafana/dashboards/``.
"""

from __future__ import annotations

from typing import Any

from . import agents, host, llm, overview, security, self_monitoring
from .layout import Board
from .parameters import Parameters

MODULES = (overview, llm, agents, security, host, self_monitoring)


def boards(params: Parameters) -> list[Board]:
    return [module.build(params) for module in MODULES]


def dashboards(params: Parameters) -> dict[str, dict[str, Any]]:
    """File name → dashboard JSON, for every provisioned dashboard."""
    return {f"{board.uid}.json": board.to_json() for board in boards(params)}
