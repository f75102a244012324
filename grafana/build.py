"""Generate the provisioned Grafana dashboards (``grafana/dashboards/*.json``).

The dashboards are code (``grafana/dashboards_src/``, one module per dashboard, built with
Grafana's typed builders from grafana-foundation-sdk) so that every selector carries the same
``job``/``instance`` filters, every panel has a unit and a description, thresholds come from
the alert parameters in ``prometheus/rules/parameters.rules.yml`` (one place to tune them),
and the dashboards link to each other. Run ``python grafana/build.py`` after a change and
commit the JSON; ``python grafana/build.py --check`` fails when the committed JSON is stale
(the tests run the same comparison).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

# Run as a script, this file's directory is the first import path, so the dashboard modules
# next to it import as the package ``dashboards_src``.
from dashboards_src import dashboards as build_dashboards
from dashboards_src.layout import DOMAIN_LABELS, SCHEMA_VERSION, TAG, UID_EXPORTER
from dashboards_src.parameters import Parameters
from dashboards_src.parameters import load_parameters as _load_parameters

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD_DIR = ROOT / "grafana" / "dashboards"
PARAMETERS_FILE = ROOT / "prometheus" / "rules" / "parameters.rules.yml"

__all__ = ["DOMAIN_LABELS", "SCHEMA_VERSION", "TAG", "UID_EXPORTER", "dashboards",
           "iter_targets", "load_parameters", "main", "render", "stale_files", "write"]


def load_parameters(path: Path = PARAMETERS_FILE) -> dict[str, float]:
    """``parameter:<quantity>:<severity>`` → value, from the project's parameters file."""
    return _load_parameters(path)


def dashboards(parameters_file: Path = PARAMETERS_FILE) -> dict[str, dict[str, Any]]:
    """File name → dashboard JSON, for every provisioned dashboard."""
    return build_dashboards(Parameters.from_file(parameters_file))


def render(dashboard: dict[str, Any]) -> str:
    """The committed form: the SDK's key order, two-space indent, trailing newline."""
    return json.dumps(dashboard, indent=2, ensure_ascii=False) + "\n"


def stale_files(directory: Path = DASHBOARD_DIR,
                parameters_file: Path = PARAMETERS_FILE) -> list[str]:
    """Dashboard files whose committed JSON differs from what this script generates."""
    expected = dashboards(parameters_file)
    problems = [name for name, dash in expected.items()
                if not (directory / name).exists()
                or (directory / name).read_text(encoding="utf-8") != render(dash)]
    extra = sorted(p.name for p in directory.glob("*.json") if p.name not in expected)
    return problems + [f"{name} (not generated)" for name in extra]


def write(directory: Path = DASHBOARD_DIR,
          parameters_file: Path = PARAMETERS_FILE) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, dash in dashboards(parameters_file).items():
        path = directory / name
        path.write_text(render(dash), encoding="utf-8")
        written.append(path)
    return written


def iter_targets(dashboard: dict[str, Any]) -> Iterable[tuple[dict[str, Any], dict[str, Any]]]:
    """(panel, target) for every query target of a dashboard."""
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield panel, target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if the committed dashboards differ from the generated ones")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        for name in stale:
            print(f"stale: grafana/dashboards/{name} (run python grafana/build.py)",
                  file=sys.stderr)
        return 1 if stale else 0
    for path in write():
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
