"""Reads the lock files (requirements/*.lock, pip's requirements format with hashes) and
compares them with pyproject.toml and with an installed environment.

``python -m tests.lockfile diff requirements/dev.lock`` prints, for the running
interpreter's environment, every locked package installed at another version (what
``scripts/test --latest`` shows before it runs the suite).
"""

from __future__ import annotations

import re
import sys
import tomllib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "ai-metrics-exporter"
_PIN = re.compile(r"^([A-Za-z0-9._-]+)(\[[^\]]*\])?==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")


@dataclass(frozen=True)
class Pin:
    """One locked package: its version, the environments it applies to, its hashes."""

    name: str
    version: str
    marker: Marker | None
    hashes: tuple[str, ...]

    def applies(self) -> bool:
        return self.marker is None or self.marker.evaluate()


def read_lock(path: Path) -> dict[str, Pin]:
    """The pins of a lock file, by canonical name (comments and ``# via`` lines skipped)."""
    pins: dict[str, Pin] = {}
    current: tuple[str, str, Marker | None] | None = None
    hashes: list[str] = []

    def flush() -> None:
        if current is not None:
            name, version, marker = current
            pins[name] = Pin(name, version, marker, tuple(hashes))

    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("--hash="):
            hashes.append(stripped.removeprefix("--hash=").rstrip(" \\"))
            continue
        match = _PIN.match(stripped)
        if match is None:
            raise ValueError(f"{path.name}: not a pinned requirement: {stripped!r}")
        flush()
        name, _, version, marker = match.groups()
        current = (canonicalize_name(name), version, Marker(marker) if marker else None)
        hashes = []
    flush()
    return pins


def _pyproject() -> dict[str, object]:
    with (ROOT / "pyproject.toml").open("rb") as handle:
        return tomllib.load(handle)


def requirements(extras: tuple[str, ...]) -> list[Requirement]:
    """The project's runtime dependencies, those of ``extras`` (self-references such as
    ``ai-metrics-exporter[grpc]`` followed) and its build requirements."""
    data = _pyproject()
    project = data["project"]
    assert isinstance(project, dict)
    optional: dict[str, list[str]] = project.get("optional-dependencies", {})
    build = data["build-system"]
    assert isinstance(build, dict)
    found: list[Requirement] = [Requirement(r) for r in project["dependencies"]]
    found += [Requirement(r) for r in build["requires"]]
    pending, seen = list(extras), set()
    while pending:
        extra = pending.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for text in optional[extra]:
            requirement = Requirement(text)
            if canonicalize_name(requirement.name) == PROJECT:
                pending.extend(requirement.extras)
            else:
                found.append(requirement)
    return found


def disagreements(lock: dict[str, Pin], wanted: list[Requirement]) -> list[str]:
    """Each requirement of pyproject.toml that the lock lacks or pins outside its range."""
    problems = []
    for requirement in wanted:
        pin = lock.get(canonicalize_name(requirement.name))
        if pin is None:
            problems.append(f"{requirement} is not in the lock")
        elif not requirement.specifier.contains(pin.version, prereleases=True):
            problems.append(f"{requirement}: the lock pins {pin.version}")
    return problems


def installed_differences(lock: dict[str, Pin]) -> list[str]:
    """Locked packages (for this environment) installed at another version, or missing."""
    problems = []
    for pin in lock.values():
        if not pin.applies():
            continue
        try:
            version = metadata.version(pin.name)
        except metadata.PackageNotFoundError:
            problems.append(f"{pin.name}: locked {pin.version}, not installed")
            continue
        if version != pin.version:
            problems.append(f"{pin.name}: locked {pin.version}, installed {version}")
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "diff":
        print("usage: python -m tests.lockfile diff LOCKFILE", file=sys.stderr)
        return 2
    differences = installed_differences(read_lock(Path(argv[1])))
    print("\n".join(differences) or "none: the newest releases are the locked ones")
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
