"""Build identity: version, git revision and build date, resolved once at start-up.

A checkout is asked through ``git``; an installed image passes ``AI_EXPORTER_REVISION``
and ``AI_EXPORTER_BUILD_DATE`` (the Dockerfile sets them). Nothing here reveals paths.
"""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path


@dataclass(frozen=True)
class BuildInfo:
    version: str
    revision: str
    build_date: str
    python_version: str


def _git(*args: str) -> str:
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return ""
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True,
                             text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


@lru_cache(maxsize=1)
def build_info() -> BuildInfo:
    try:
        version = metadata.version("ai-metrics-exporter")
    except metadata.PackageNotFoundError:
        version = "0.0.0"
    revision = os.environ.get("AI_EXPORTER_REVISION") or _git("rev-parse", "HEAD") or "unknown"
    date = (os.environ.get("AI_EXPORTER_BUILD_DATE") or _git("log", "-1", "--format=%cI")
            or "unknown")
    return BuildInfo(version, revision, date, platform.python_version())
