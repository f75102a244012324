"""JSON snapshot files: documents rewritten in place, re-read on change, mapped to gauges.

Some platforms keep their current state as a JSON document (the older layout's
``state/analytics/*.json`` and ``state/limits/usage_log.json``). Each configured glob names
its files and a small declarative mapping, in the spirit of json_exporter: a dotted path
into the document (``*`` walks every key of an object or item of a list) gives the value
of a gauge, and label values are templates over the keys the wildcards matched
(``{1}``, ``{2}``...) and the file name (``{file}``). A file is re-read only when its
inode, size or mtime change; a read that fails keeps the last good values and is counted.
"""

from __future__ import annotations

import glob
import logging
import math
import os
import re
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from exporter import catalog
from exporter.catalog import Kind, MetricSpec
from exporter.config import (
    ConfigError,
    SnapshotConfig,
    SnapshotFileConfig,
    SnapshotMetricConfig,
)
from exporter.events import is_utf8
from exporter.ingest import Ingestor
from exporter.logutil import RateLimitedLogger
from exporter.sources.base import Source, path_label, resolve

_log = logging.getLogger(__name__)

MAX_FILES = 1000
MAX_VALUES_PER_FILE = 10_000
MAX_LABEL_LENGTH = 128
_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_.]*")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")

# Catalog gauges a mapping may produce (the default mapping's); every other catalog name
# is served by another part of the exporter and would collide.
CATALOG_GAUGES: dict[str, MetricSpec] = {spec.name: spec for spec in (
    catalog.AI_PROVIDER_USAGE, catalog.AI_PROVIDER_USAGE_LIMIT, catalog.AI_PROVIDER_SPEND_TODAY,
    catalog.AI_ANALYTICS_TASKS, catalog.AI_ANALYTICS_APPROVAL,
    catalog.AI_ANALYTICS_QUALITY_SCORE, catalog.AI_ANALYTICS_RESOLUTION_ACTIVE,
    catalog.AI_ANALYTICS_SPEND_TODAY, catalog.AI_SNAPSHOT_GENERATED)}

if TYPE_CHECKING:
    from exporter.sources import SourceDeps


def _metric(name: str, path: str, unit: str = "", **labels: str) -> SnapshotMetricConfig:
    return SnapshotMetricConfig(name=name, path=path, unit=unit, labels=labels)


# The older layout (docs/files.md shows the documents these expect).
DEFAULT_FILES: tuple[SnapshotFileConfig, ...] = (
    SnapshotFileConfig(path="state/limits/usage_log.json", metrics=[
        _metric("ai.provider.usage", "providers.*.*.used", "{unit}",
                gen_ai_provider_name="{1}", limit_type="{2}"),
        _metric("ai.provider.usage.limit", "providers.*.*.limit", "{unit}",
                gen_ai_provider_name="{1}", limit_type="{2}"),
        _metric("ai.provider.spend.today", "providers.*.cost_usd_today", "USD",
                gen_ai_provider_name="{1}"),
        _metric("ai.snapshot.generated_timestamp", "updated_at", "s", file="{file}"),
    ]),
    SnapshotFileConfig(path="state/analytics/*.json", metrics=[
        _metric("ai.analytics.tasks", "tasks.*", "{task}", component="{file}", state="{1}"),
        _metric("ai.analytics.approval", "quality_gates.approval_ratio", "1",
                component="{file}"),
        _metric("ai.analytics.quality_score", "quality_gates.average_score",
                component="{file}"),
        _metric("ai.analytics.resolution.active", "resolution.active_loops", "{loop}",
                component="{file}"),
        _metric("ai.analytics.spend.today", "cost_usd_today", "USD", component="{file}"),
        _metric("ai.snapshot.generated_timestamp", "generated_at", "s", file="{file}"),
    ]),
)


@dataclass(frozen=True)
class Mapping:
    """One compiled mapping: where the values are and which gauge they become."""

    metric: str  # Prometheus name
    help: str
    label_names: tuple[str, ...]
    templates: tuple[str, ...]
    tokens: tuple[str, ...]

    def values(self, document: Any, file: str) -> Iterator[tuple[tuple[str, ...], float]]:
        for captures, raw in walk(document, self.tokens, ()):
            value = to_number(raw)
            if value is None:
                continue
            yield tuple(render(t, captures, file) for t in self.templates), value


def walk(node: Any, tokens: tuple[str, ...], captures: tuple[str, ...]
         ) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Values at a dotted path; ``*`` fans out over object keys or list indexes."""
    if not tokens:
        yield captures, node
        return
    token, rest = tokens[0], tokens[1:]
    if token == "*":  # noqa: S105 - a wildcard, not a password
        if isinstance(node, dict):
            for key, child in node.items():
                yield from walk(child, rest, (*captures, str(key)))
        elif isinstance(node, list):
            for index, child in enumerate(node):
                yield from walk(child, rest, (*captures, str(index)))
    elif isinstance(node, dict):
        if token in node:
            yield from walk(node[token], rest, captures)
    elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
        yield from walk(node[int(token)], rest, captures)


def to_number(raw: Any) -> float | None:
    """Numbers as they are, booleans as 1/0, numeric strings parsed; anything else: none."""
    if isinstance(raw, bool):
        return 1.0 if raw else 0.0
    if isinstance(raw, int | float):
        return float(raw)
    if isinstance(raw, str):
        try:
            value = float(raw)
        except ValueError:
            return None
        return value if math.isfinite(value) else None
    return None


def render(template: str, captures: tuple[str, ...], file: str) -> str:
    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        return file if name == "file" else captures[int(name) - 1]

    value = _PLACEHOLDER.sub(one, template)
    return value[:MAX_LABEL_LENGTH]


def compile_file(index: int, spec: SnapshotFileConfig,
                 seen: dict[str, tuple[tuple[str, ...], str]]) -> list[Mapping]:
    """Check one file's mappings (errors name the field) and compile them."""
    out = []
    for m_index, m in enumerate(spec.metrics):
        where = f"sources.snapshot.files.{index}.metrics.{m_index}"
        if not _NAME.fullmatch(m.name):
            raise ConfigError(f"{where}.name: {m.name!r} is not a metric name "
                              "(letters, digits, '_' and '.')")
        name = catalog.prometheus_name(m.name, m.unit, Kind.GAUGE)
        labels = tuple(m.labels)
        for label in labels:
            if not _LABEL.fullmatch(label) or label.startswith("__"):
                raise ConfigError(f"{where}.labels.{label}: not a valid label name")
        tokens = tuple(m.path.split("."))
        if "" in tokens:
            raise ConfigError(f"{where}.path: {m.path!r} has an empty segment")
        wildcards = tokens.count("*")
        for label, template in m.labels.items():
            for placeholder in _PLACEHOLDER.findall(template):
                if placeholder != "file" and not (placeholder.isdigit()
                                                  and 1 <= int(placeholder) <= wildcards):
                    raise ConfigError(
                        f"{where}.labels.{label}: unknown placeholder {{{placeholder}}} "
                        f"(use {{file}} or {{1}}..{{{wildcards}}} for the path's wildcards)")
        spec_in_catalog = catalog.by_name().get(name)
        if spec_in_catalog is not None:
            if name not in CATALOG_GAUGES:
                raise ConfigError(f"{where}.name: {name} is a metric the exporter already "
                                  "serves; choose another name")
            if set(labels) != set(spec_in_catalog.labels):
                raise ConfigError(f"{where}.labels: {name} has labels "
                                  f"{', '.join(spec_in_catalog.labels)}")
            labels = spec_in_catalog.labels
            help_text = spec_in_catalog.description
        else:
            taken = catalog.known_series_names() | {s.family_name for s in
                                                    catalog.all_metrics()}
            if name in taken or name.startswith("ai_exporter_"):
                raise ConfigError(f"{where}.name: {name} collides with a series the "
                                  "exporter serves")
            help_text = m.help or f"{m.path} from JSON snapshot files."
        previous = seen.setdefault(name, (tuple(sorted(labels)), help_text))
        if previous[0] != tuple(sorted(labels)):
            raise ConfigError(f"{where}.labels: {name} is mapped elsewhere with labels "
                              f"{', '.join(previous[0])}")
        out.append(Mapping(name, previous[1], labels,
                           tuple(m.labels[label] for label in labels), tokens))
    return out


@dataclass
class _FileState:
    """What the last good read of one file gave, and the signature it was read at."""

    label: str
    signature: tuple[int, int, int, int] = (0, 0, 0, -1)
    values: list[tuple[Mapping, tuple[str, ...], float]] = field(default_factory=list)
    problem: str = ""


class SnapshotSource(Source):
    """Polls the snapshot globs and serves their mapped gauges at scrape time."""

    name = "snapshot"

    def __init__(self, ingestor: Ingestor, cfg: SnapshotConfig,
                 files: list[tuple[str, list[Mapping]]], log_interval: float = 10.0) -> None:
        super().__init__(ingestor)
        self.cfg = cfg
        self.base = Path(os.path.abspath(cfg.base_dir))
        self.files = [(resolve(self.base, p), m) for p, m in files]
        self.state: dict[str, _FileState] = {}
        self.reads: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._log = RateLimitedLogger(_log, log_interval)

    def start(self) -> None:
        self._stop.clear()
        self.poll()  # values are there for the first scrape
        self._thread = threading.Thread(target=self._run, name="snapshot", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.cfg.interval_seconds):
            try:
                self.poll()
            except Exception as exc:  # keep serving the last good values
                self._log.error("snapshot: poll failed: %s: %s", type(exc).__name__, exc,
                                key="snapshot-poll")

    def ready(self) -> tuple[bool, str]:
        with self._lock:
            problems = sorted(f"{s.label}: {s.problem}" for s in self.state.values()
                              if s.problem)
            count = len(self.state)
        detail = f"watching {count} files"
        if problems:
            detail += "; problems: " + "; ".join(problems[:10])
        alive = self._thread is not None and self._thread.is_alive()
        hard = any("unreadable" in p or "not a regular file" in p for p in problems)
        return alive and not hard, detail if alive else "stopped"

    def _label(self, path: str) -> str:
        return path_label(self.base, path)

    def poll(self) -> None:
        """Re-read every matched file whose signature changed; drop vanished ones."""
        matched: dict[str, list[Mapping]] = {}
        for pattern, mappings in self.files:
            for path in sorted(glob.glob(pattern)):
                if len(matched) >= MAX_FILES:
                    break
                matched.setdefault(path, []).extend(mappings)
        for path in [p for p in self.state if p not in matched]:
            with self._lock:
                gone = self.state.pop(path)
            self._count(gone.label, "vanished")
        for path, mappings in matched.items():
            self._check(path, mappings)

    def _check(self, path: str, mappings: list[Mapping]) -> None:
        state = self.state.get(path)
        if state is None:
            with self._lock:
                state = self.state[path] = _FileState(self._label(path))
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return
        except OSError as exc:
            self._fail(state, "unreadable", f"unreadable: {exc.strerror or exc}")
            return
        if not stat.S_ISREG(st.st_mode):
            self._fail(state, "not_a_file", "not a regular file")
            return
        signature = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if signature == state.signature:
            return
        if st.st_size > self.cfg.max_file_bytes:
            state.signature = signature
            self._fail(state, "too_large", f"{st.st_size} bytes, over max_file_bytes "
                                           f"({self.cfg.max_file_bytes})")
            return
        try:
            with open(path, "rb") as handle:
                data = handle.read(self.cfg.max_file_bytes + 1)
        except FileNotFoundError:
            return
        except OSError as exc:
            self._fail(state, "unreadable", f"unreadable: {exc.strerror or exc}")
            return
        try:
            document = msgspec.json.decode(data)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            state.signature = signature
            if is_utf8(data) and not isinstance(exc, UnicodeDecodeError):
                self._fail(state, "malformed_json", f"not valid JSON: {exc}")
            else:
                self._fail(state, "invalid_utf8", "not valid UTF-8")
            return
        file = Path(path).name.rsplit(".", 1)[0]
        values: list[tuple[Mapping, tuple[str, ...], float]] = []
        for mapping in mappings:
            for labels, value in mapping.values(document, file):
                if len(values) < MAX_VALUES_PER_FILE:
                    values.append((mapping, labels, value))
        with self._lock:
            state.signature, state.values, state.problem = signature, values, ""
        self._count(state.label, "ok")

    def _fail(self, state: _FileState, outcome: str, problem: str) -> None:
        if state.problem != problem:
            self._log.warning("snapshot: %s: %s (keeping its last good values)", state.label,
                              problem, key=f"snapshot:{state.label}")
        with self._lock:
            state.problem = problem
        self._count(state.label, outcome)

    def _count(self, label: str, outcome: str) -> None:
        with self._lock:
            key = (label, outcome)
            self.reads[key] = self.reads.get(key, 0.0) + 1

    def families(self) -> list[Metric]:
        reads = catalog.EXPORTER_SNAPSHOT_READS.family()
        counts = catalog.EXPORTER_SNAPSHOT_VALUES.family()
        gauges: dict[str, GaugeMetricFamily] = {}
        seen: set[tuple[str, tuple[str, ...]]] = set()
        with self._lock:
            for (label, outcome), n in self.reads.items():
                reads.add_metric([label, outcome], n)
            for state in self.state.values():
                counts.add_metric([state.label], float(len(state.values)))
                for mapping, labels, value in state.values:
                    if (mapping.metric, labels) in seen:
                        continue  # the same series from two files: the first one wins
                    seen.add((mapping.metric, labels))
                    family = gauges.get(mapping.metric)
                    if family is None:
                        family = gauges[mapping.metric] = GaugeMetricFamily(
                            mapping.metric, mapping.help, labels=list(mapping.label_names))
                    family.add_metric(list(labels), value)
        return [reads, counts, *gauges.values()]


def from_config(deps: SourceDeps) -> list[Source]:
    config, ingestor = deps.config, deps.ingestor
    cfg = config.sources.snapshot
    if not cfg.enabled:
        return []
    specs = list(DEFAULT_FILES) if cfg.files is None else cfg.files
    seen: dict[str, tuple[tuple[str, ...], str]] = {}
    files = [(spec.path, compile_file(i, spec, seen)) for i, spec in enumerate(specs)]
    return [SnapshotSource(ingestor, cfg, files, config.ai.log_interval_seconds)]
