"""Build identity: version, git revision and build date, resolved once per process.

A checkout is asked through ``git``; an installed image passes ``AI_EXPORTER_REVISION``
and ``AI_EXPORTER_BUILD_DATE`` (the Dockerfile sets them). Nothing here reveals paths.

Resolving costs two ``git`` runs and a package-metadata scan, so the command line starts it
on a background thread (``prefetch``) once it knows it will serve: the git processes then
run while the exporter imports and builds instead of delaying the first scrape.
"""

from __future__ import annotations

import os
import platform
import subprocess
import threading
from dataclasses import dataclass
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


def _package_version() -> str:
    # importlib.metadata and its imports (zipfile, csv, email parsing) are only needed here.
    from importlib import metadata

    try:
        return metadata.version("ai-metrics-exporter")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def _resolve() -> BuildInfo:
    revision = os.environ.get("AI_EXPORTER_REVISION") or _git("rev-parse", "HEAD") or "unknown"
    date = (os.environ.get("AI_EXPORTER_BUILD_DATE") or _git("log", "-1", "--format=%cI")
            or "unknown")
    return BuildInfo(_package_version(), revision, date, platform.python_version())


_lock = threading.Lock()
_info: BuildInfo | None = None


def build_info() -> BuildInfo:
    """The build identity; the first caller resolves it, a concurrent caller waits for it."""
    global _info  # noqa: PLW0603 - resolved once per process, by whichever thread is first
    info = _info
    if info is None:
        with _lock:
            if _info is None:
                _info = _resolve()
            info = _info
    return info


def prefetch() -> None:
    """Resolve the build identity on a daemon thread, so that ``git`` runs in parallel with
    the rest of start-up; ``build_info()`` then returns it, or waits for it to finish."""
    threading.Thread(target=build_info, name="build-info", daemon=True).start()
