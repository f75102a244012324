"""The stores of the AI state: bounded label sets of counters, gauges, histograms, and the
bounded maps of open items (queued tasks, loops, interventions, security events).

Every store admits a label set through ``_Capped.admit``: sanitized once, capped per metric
and by the shared ``SampleBudget``, folded into ``other`` past either (counted as overflow).
Nothing here knows an event kind; ``exporter.aggregation.handlers`` does.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Exemplar, Sample

from exporter import catalog, exposition
from exporter.catalog import MetricSpec
from exporter.deadline import paced

OTHER = "other"
# How long a histogram bucket keeps its exemplar before a newer observation replaces it.
EXEMPLAR_REFRESH_SECONDS = 1.0
MAX_LABEL_LENGTH = 128
# Label sets rendered between two looks at the scrape deadline (~1 ms of work).
_LINE_CHUNK = 256

Key = tuple[str, ...]


def sanitize(value: str) -> str:
    """Label values from events: non-printable characters (C0/C1 controls, bidi overrides,
    line separators, zero-width and format characters, lone surrogates) dropped, length
    capped. ``str.isprintable`` makes the common clean case one C-level pass."""
    cleaned = value if value.isprintable() else "".join(c for c in value if c.isprintable())
    return cleaned[:MAX_LABEL_LENGTH] if len(cleaned) > MAX_LABEL_LENGTH else cleaned


def _clean(key: Key) -> Key:
    return tuple(sanitize(v) for v in key)


class SampleBudget:
    """The samples that the label sets of every AI metric together may expose.

    Why: the per-metric cap alone let a cardinality attack fill ~35 metrics with 10,000
    label sets each, histograms at up to 17 samples a label set: 1.6 M lines, 300 MB and
    12 s to render, past any scrape timeout, so even the host metrics were lost. A label
    set takes its samples here when it is first admitted (a counter or gauge 1, a
    histogram its buckets + ``+Inf`` + ``_sum`` + ``_count``) and keeps them: nothing is
    ever removed, so ``used`` only grows. Past the limit a new label set folds into
    ``other`` like one past the per-metric cap; the ``other`` label sets themselves are
    not charged (at most one per metric).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def fits(self, samples: int) -> bool:
        return self.used + samples <= self.limit

    def take(self, samples: int) -> bool:
        """Charge ``samples`` if they fit; False (nothing charged) when they do not."""
        if not self.fits(samples):
            return False
        self.used += samples
        return True


def exposed_samples(spec: MetricSpec) -> int:
    """Samples one label set of ``spec`` adds to /metrics."""
    return len(spec.buckets) + 3 if spec.kind is catalog.Kind.HISTOGRAM else 1


class _Capped:
    """Label-set admission shared by every store: sanitize once, cap, fold to ``other``."""

    def __init__(self, spec: MetricSpec, cap: int, overflow: dict[str, float],
                 budget: SampleBudget) -> None:
        self.spec = spec
        self.cap = cap
        self.samples = exposed_samples(spec)
        self._overflow = overflow
        self._budget = budget
        self._other: Key = (OTHER,) * len(spec.labels)
        self._texts = LabelTexts(spec.labels)

    def folds(self, key: Key) -> bool:
        """Whether ``key`` (not stored yet) would fold into ``other``."""
        known: dict[Key, Any] = self.values  # type: ignore[attr-defined]
        return (key not in known and _clean(key) not in known
                and (len(known) >= self.cap or not self._budget.fits(self.samples)))

    def admit(self, key: Key, known: dict[Key, Any]) -> Key:
        """The key to store under: ``key`` cleaned, or the ``other`` key past the cap or
        the sample budget. The native line path calls this too (through ``add_new`` and
        ``row``) for every label set it has not seen, so both paths fold alike."""
        clean = _clean(key)
        if clean in known or (len(known) < self.cap and self._budget.take(self.samples)):
            return clean
        self._overflow[self.spec.name] = self._overflow.get(self.spec.name, 0.0) + 1
        return self._other


class CounterStore(_Capped):
    """Monotonic totals per label set."""

    def __init__(self, spec: MetricSpec, cap: int, overflow: dict[str, float],
                 budget: SampleBudget) -> None:
        super().__init__(spec, cap, overflow, budget)
        self.values: dict[Key, float] = {}

    def inc(self, key: Key, amount: float = 1.0) -> None:
        try:
            self.values[key] += amount
        except KeyError:
            self.add_new(key, amount)

    def add_new(self, key: Key, amount: float) -> None:
        """Slow path of ``inc``: a label set not seen yet (admitted, or folded)."""
        key = self.admit(key, self.values)
        self.values[key] = self.values.get(key, 0.0) + amount

    def snapshot(self) -> list[tuple[Key, Any]]:
        """A copy of the values, taken under the aggregator's lock."""
        return list(self.values.items())

    def family(self, extra: Sequence[str], extra_values: Key,
               rows: Sequence[tuple[Key, Any]] | None = None) -> Metric:
        """The family for one scrape, of ``rows`` (a ``snapshot()``; default: the values
        now): its lines from the kept label text, its samples built when read."""
        return _CounterFamily(self, extra, extra_values,
                              list(self.values.items()) if rows is None else rows)

    def samples_of(self, extra: Sequence[str], extra_values: Key,
                   rows: Iterable[tuple[Key, Any]]) -> list[Sample]:
        name = self.spec.name
        names = (*self.spec.labels, *extra)
        return [Sample(name, dict(zip(names, key + extra_values, strict=True)), value, None,
                       None) for key, value in rows]

    def sample_lines(self, extra: Sequence[str], extra_values: Key,
                     rows: Sequence[tuple[Key, Any]], deadline: float | None) -> list[str]:
        """The lines of ``rows``, from each label set's kept text."""
        texts = self._texts.of(extra, extra_values)
        value_text = exposition.value_text
        return [f"{texts.get(key) or self._texts.single(self.spec.name, key)}"
                f"{value_text(value)}\n"
                for key, value in paced(rows, deadline, _LINE_CHUNK)]


class GaugeStore(CounterStore):
    """Last value per label set."""

    def set(self, key: Key, value: float) -> None:
        if key not in self.values:
            key = self.admit(key, self.values)
        self.values[key] = value


# An exemplar as offered: (value, trace id, span id, Unix seconds). Converted once, under
# the aggregator's lock at the next scrape copy, into a ``StoredExemplar``.
OfferedExemplar = tuple[float, str, str, float]


def as_exemplar(ex: Any) -> Any:
    """A slot of an exemplar row as prometheus_client's ``Exemplar``: a ``StoredExemplar``
    as it is, an offer (a tuple) converted."""
    if ex.__class__ is not tuple:
        return ex
    value, trace_id, span_id, ts = ex
    labels = {"trace_id": trace_id, "span_id": span_id} if span_id else {"trace_id": trace_id}
    # Milliseconds, what Prometheus keeps: shorter text on every scrape.
    return StoredExemplar(labels, value, round(ts, 3))


class StoredExemplar(Exemplar):
    """prometheus_client's ``Exemplar`` (what families carry), kept in the store across
    scrapes; ``exposition`` caches its OpenMetrics text on it (attribute ``om``) the first
    time it renders it, so a scrape of exemplars that did not change formats none."""


ExemplarRow = list["OfferedExemplar | StoredExemplar | None"]


class HistogramStore(_Capped):
    """Per label set: per-bucket counts (not cumulative, last one is +Inf), then the sum.

    Exemplars: the latest observation that came with a trace
    id, per label set and bucket, in ``exemplars`` (a row of ``len(bounds) + 1`` slots,
    ``None`` where no exemplar was offered). Bounded like the rows: an exemplar is kept
    only under a key the store holds (a key folded into ``other`` keeps it under
    ``other``). Exemplars are not checkpointed: they point at recent traces, and a restart
    starts without them (the counts themselves are restored as before).
    """

    def __init__(self, spec: MetricSpec, cap: int, overflow: dict[str, float],
                 budget: SampleBudget) -> None:
        super().__init__(spec, cap, overflow, budget)
        self.bounds = list(spec.buckets)
        self.values: dict[Key, list[float]] = {}
        self.exemplars: dict[Key, ExemplarRow] = {}
        self._offered: set[Key] = set()  # rows with offers not converted yet
        self._width = len(self.bounds) + 2
        self._les = [*(repr(float(b)) for b in self.bounds), "+Inf"]

    def row(self, key: Key) -> list[float]:
        """The row of ``key`` (created, or the ``other`` row past the cap)."""
        row = self.values.get(key)
        if row is None:
            key = self.admit(key, self.values)
            row = self.values.get(key)
            if row is None:
                row = self.values[key] = [0.0] * self._width
        return row

    def observe(self, key: Key, value: float) -> None:
        row = self.values.get(key) or self.row(key)
        row[bisect_left(self.bounds, value)] += 1
        row[-1] += value

    def offer_exemplar(self, key: Key, value: float, trace_id: str, span_id: str,
                       ts: float) -> None:
        """Offer the observation ``value`` of ``key`` (already observed) as the exemplar
        of its bucket. The handlers and the native path call this only when an event
        carries a trace id, so events without one cost nothing.

        A bucket keeps its exemplar for ``EXEMPLAR_REFRESH_SECONDS`` before a newer
        observation replaces it. Why: Prometheus stores at most one exemplar per series
        per scrape, so replacing one many times a second shows nothing more, and at
        push rates the replacement was a third of the CPU of an event with a trace id
        (an offer per histogram it feeds). The native path reads the same row to skip an
        offer this would refuse. A slow call still lands in its own (rarely hit) bucket.
        """
        row = self.exemplars.get(key)
        if row is None:
            key, row = self._exemplar_row(key)
            if row is None:
                return
        i = bisect_left(self.bounds, value)
        held = row[i]
        if held is not None:
            # as offered: (value, trace, span, ts); once scraped, a StoredExemplar
            at = held.timestamp if isinstance(held, StoredExemplar) else held[3]
            if isinstance(at, float) and ts - at < EXEMPLAR_REFRESH_SECONDS:
                return
        row[i] = (value, trace_id, span_id, ts)
        self._offered.add(key)

    def _exemplar_row(self, key: Key) -> tuple[Key, ExemplarRow | None]:
        """The key ``key`` is stored under (itself, cleaned, or ``other``) and its exemplar
        row, created with its first exemplar; no row when ``key`` was never observed."""
        if key not in self.values:
            clean = _clean(key)
            key = clean if clean in self.values else self._other
            if key not in self.values:
                return key, None
            row = self.exemplars.get(key)
            if row is not None:
                return key, row
        row = self.exemplars[key] = [None] * (len(self.bounds) + 1)
        return key, row

    def snapshot(self) -> list[tuple[Key, Any]]:
        return [(key, row.copy()) for key, row in self.values.items()]

    def exemplar_snapshot(self) -> dict[Key, list[Exemplar | None]]:
        """The exemplar rows for a scrape, taken under the aggregator's lock: the exemplars
        offered since the last scrape (only those rows: ``_offered``) are turned into
        prometheus_client ``Exemplar`` here, in place, once each, so an offer stays one
        tuple and a scrape passes references.

        The rows themselves, not a copy. Why: copying 1,200 rows of 20 slots was 12 ms of
        every scrape, under the lock, for exemplars that mostly had not changed. An offer
        made after this call may land in a row while it is rendered: the renderers take a
        slot that is still a tuple as it is (``as_exemplar``), and an exemplar newer than
        the counts beside it is harmless (it is a pointer to a trace)."""
        for key in self._offered:
            row = self.exemplars.get(key)
            if row is None:
                continue
            for i, ex in enumerate(row):
                if ex.__class__ is tuple:
                    row[i] = as_exemplar(ex)
        self._offered.clear()
        return self.exemplars  # type: ignore[return-value]

    def family(self, extra: Sequence[str], extra_values: Key,
               rows: Sequence[tuple[Key, Any]] | None = None,
               exemplars: dict[Key, list[Exemplar | None]] | None = None) -> Metric:
        """The family for one scrape, of ``rows`` (a ``snapshot()``; default: the rows
        now); ``exemplars`` (``exemplar_snapshot()``) go on the ``_bucket`` samples (the
        Prometheus text format leaves them out, OpenMetrics and the OTLP push carry them)."""
        return _HistogramFamily(self, extra, extra_values,
                                self.snapshot() if rows is None else rows, exemplars or {})

    def samples_of(self, extra: Sequence[str], extra_values: Key,
                   rows: Iterable[tuple[Key, Any]],
                   exemplars: dict[Key, list[Exemplar | None]]) -> list[Sample]:
        fam_name = self.spec.name
        bucket, count, total = fam_name + "_bucket", fam_name + "_count", fam_name + "_sum"
        names = (*self.spec.labels, *extra)
        les = self._les
        out: list[Sample] = []
        append = out.append
        for key, row in rows:
            labels = dict(zip(names, key + extra_values, strict=True))
            running = 0.0
            ex_row = exemplars.get(key) if exemplars else None
            if ex_row is None:
                for le, n in zip(les, row, strict=False):
                    running += n
                    append(Sample(bucket, {**labels, "le": le}, running, None, None))
            else:
                for le, n, ex in zip(les, row, ex_row, strict=False):
                    running += n
                    append(Sample(bucket, {**labels, "le": le}, running, None,
                                  None if ex is None else as_exemplar(ex)))
            append(Sample(count, labels, running, None, None))
            append(Sample(total, labels, row[-1], None, None))
        return out

    def sample_lines(self, extra: Sequence[str], extra_values: Key,
                     rows: Sequence[tuple[Key, Any]],
                     exemplars: dict[Key, list[Exemplar | None]] | None,
                     deadline: float | None) -> list[str]:
        """The ``_bucket``, ``_count`` and ``_sum`` lines of ``rows`` (``exemplars``: the
        OpenMetrics form, with them), from each label set's kept text."""
        texts = self._texts.of(extra, extra_values)
        les = self._les
        value_text = exposition.value_text
        out: list[str] = []
        append = out.append
        for key, row in paced(rows, deadline, _LINE_CHUNK):
            text = texts.get(key) or self._texts.histogram(self.spec.name, key)
            pre, post, count, total = text
            running = 0.0
            ex_row = exemplars.get(key) if exemplars else None
            if ex_row is None:
                for le, n in zip(les, row, strict=False):
                    running += n
                    append(f"{pre}{le}{post}{value_text(running)}\n")
            else:
                exemplar_text = exposition.exemplar_text
                for le, n, ex in zip(les, row, ex_row, strict=False):
                    running += n
                    if ex is None:
                        append(f"{pre}{le}{post}{value_text(running)}\n")
                    else:
                        append(f"{pre}{le}{post}{value_text(running)}"
                               f"{exemplar_text(as_exemplar(ex))}\n")
            append(f"{count}{value_text(running)}\n")
            append(f"{total}{value_text(row[-1])}\n")
        return out


class LabelTexts:
    """Each label set's label text as the exposition writes it, kept for the life of its
    store: label sets are never removed and their values never change, so this is bounded
    like the rows (the sample budget: a few MB at most) and is built once per label set.
    Rebuilt when the extra labels change (a reload). Shared by concurrent scrapes without
    a lock: two of them building the same entry build the same strings."""

    def __init__(self, labels: tuple[str, ...]) -> None:
        self._labels = labels
        self._names: tuple[str, ...] = labels
        self._extra_values: Key = ()
        self._by_key: dict[Key, Any] = {}

    def of(self, extra: Sequence[str], extra_values: Key) -> dict[Key, Any]:
        """The kept texts, for these extra labels."""
        names = (*self._labels, *extra)
        if names != self._names or extra_values != self._extra_values:
            self._names, self._extra_values, self._by_key = names, extra_values, {}
        return self._by_key

    def _pairs(self, key: Key) -> list[tuple[str, str]]:
        escape = exposition.escape_label_value
        return sorted((exposition.label_name(n), f'{exposition.label_name(n)}="{escape(str(v))}"')
                      for n, v in zip(self._names, key + self._extra_values, strict=True))

    def single(self, name: str, key: Key) -> str:
        """``name{labels} `` for a counter or gauge sample."""
        pairs = self._pairs(key)
        text = f"{name}{{{','.join(p for _, p in pairs)}}} " if pairs else f"{name} "
        self._by_key[key] = text
        return text

    def histogram(self, name: str, key: Key) -> tuple[str, str, str, str]:
        """The four pieces of a histogram label set's lines: the ``_bucket`` text before
        and after the ``le`` value (labels sort around ``le``), then the ``_count`` and
        ``_sum`` text."""
        pairs = self._pairs(key)
        before = "".join(f"{p}," for n, p in pairs if n < "le")
        after = "".join(f",{p}" for n, p in pairs if n > "le")
        labels = f"{{{','.join(p for _, p in pairs)}}}" if pairs else ""
        text = (f'{name}_bucket{{{before}le="', f'"{after}}} ',
                f"{name}_count{labels} ", f"{name}_sum{labels} ")
        self._by_key[key] = text
        return text


class _CounterFamily(exposition.RenderedFamily):
    """A counter or gauge store's family of one scrape."""

    def __init__(self, store: CounterStore, extra: Sequence[str], extra_values: Key,
                 rows: Sequence[tuple[Key, Any]]) -> None:
        super().__init__(store.spec.family(extra))
        self._store, self._extra, self._extra_values, self._rows = (
            store, extra, extra_values, rows)

    def build_samples(self) -> list[Sample]:
        return self._store.samples_of(self._extra, self._extra_values, self._rows)

    def sample_lines(self, openmetrics: bool, deadline: float | None) -> list[str]:
        return self._store.sample_lines(self._extra, self._extra_values, self._rows, deadline)


class _HistogramFamily(exposition.RenderedFamily):
    """A histogram store's family of one scrape, with its exemplars."""

    def __init__(self, store: HistogramStore, extra: Sequence[str], extra_values: Key,
                 rows: Sequence[tuple[Key, Any]],
                 exemplars: dict[Key, list[Exemplar | None]]) -> None:
        super().__init__(store.spec.family(extra))
        self._store, self._extra, self._extra_values = store, extra, extra_values
        self._rows, self._exemplars = rows, exemplars

    def build_samples(self) -> list[Sample]:
        return self._store.samples_of(self._extra, self._extra_values, self._rows,
                                      self._exemplars)

    def sample_lines(self, openmetrics: bool, deadline: float | None) -> list[str]:
        return self._store.sample_lines(self._extra, self._extra_values, self._rows,
                                        self._exemplars if openmetrics else None, deadline)


class Tracked:
    """Open items (queued tasks, loops, interventions...) grouped by label set.

    Bounded twice: at most ``limit`` open ids (the oldest is forgotten past that, counted as
    overflow of ``name``), at most ``max_keys`` label sets and the sample budget (the rest
    fold into ``other``); each label set exposes ``samples`` samples (the count, and the
    oldest age where there is one). Items are kept in opening order, so the oldest of a
    group is its first.
    """

    def __init__(self, name: str, limit: int, max_keys: int, overflow: dict[str, float],
                 *, budget: SampleBudget, samples: int) -> None:
        self.name = name
        self.limit = limit
        self.max_keys = max_keys
        self.samples = samples
        self._overflow = overflow
        self._budget = budget
        self.by_key: dict[Key, dict[str, float]] = {}
        self.where: dict[str, Key] = {}

    def admits(self) -> bool:
        """Whether a label set not held yet fits (its samples are then charged)."""
        return len(self.by_key) < self.max_keys and self._budget.take(self.samples)

    def open(self, item: str, key: Key, since: float) -> None:
        self.close(item)
        if key not in self.by_key:
            key = _clean(key)
            if key not in self.by_key and not self.admits():
                key = (OTHER,) * len(key)
                self._count_overflow()
        if len(self.where) >= self.limit:
            self.close(next(iter(self.where)))
            self._count_overflow()
        self.where[item] = key
        self.by_key.setdefault(key, {})[item] = since

    def _count_overflow(self) -> None:
        self._overflow[self.name] = self._overflow.get(self.name, 0.0) + 1

    def close(self, item: str) -> tuple[Key, float] | None:
        key = self.where.pop(item, None)
        if key is None:
            return None
        since = self.by_key[key].pop(item)
        return key, since

    def counts(self) -> Iterator[tuple[Key, int, float | None]]:
        """(key, open count, oldest since) for every key ever seen (0 once drained)."""
        for key, group in self.by_key.items():
            yield key, len(group), next(iter(group.values())) if group else None
