"""Prometheus text format (0.0.4) rendering, byte-for-byte what prometheus_client writes.

prometheus_client's ``generate_latest`` re-validates and re-escapes every label name and
metric name on every sample (about 7 µs per sample here), which made /metrics with 10,000
AI series take ~70 ms to render. Names repeat on every sample of a family, so this
renderer resolves each name and each label-name set once per scrape and only escapes label
values, which are the only per-sample variable. The output is identical to
``generate_latest`` (tests compare the two on the same families), so Prometheus, promtool
and the parser see no difference.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable
from operator import itemgetter
from typing import Any

from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import exposition as om
from prometheus_client.samples import Sample

from exporter.deadline import paced

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
OPENMETRICS_EOF = "# EOF\n"

# OpenMetrics-only samples that the Prometheus text format lists as separate gauges.
_OM_SUFFIXES = ("_created", "_gsum", "_gcount")
# Samples rendered between two looks at the deadline: ~10 ms of work, a negligible cost.
_CHUNK = 2048
_TYPE_MAP = {"counter": "counter", "gauge": "gauge", "histogram": "histogram",
             "summary": "summary", "info": "gauge", "stateset": "gauge",
             "gaugehistogram": "histogram", "unknown": "untyped", "untyped": "untyped"}


def _metric_name(name: str) -> str:
    return str(om.escape_metric_name(name, om.UNDERSCORES))


def label_name(name: str) -> str:
    return str(om.escape_label_name(name, om.UNDERSCORES))


def format_value(value: Any) -> str:
    """prometheus_client's ``floatToGoString``: Go's float formatting, as Prometheus expects."""
    d = float(value)
    s = repr(d)
    if d - d == 0.0:  # finite
        dot = s.find(".")
        if d > 0 and dot > 6:  # Go switches to exponent form sooner than Python
            mantissa = f"{s[0]}.{s[1:dot]}{s[dot + 1:]}".rstrip("0.")
            return f"{mantissa}e+{dot - 1:02d}"
        return s
    if d != d:  # noqa: PLR0124 - NaN is the only value unequal to itself
        return "NaN"
    return "+Inf" if d > 0 else "-Inf"


def escape_label_value(value: str) -> str:
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return value


def _help(documentation: str) -> str:
    return documentation.replace("\\", r"\\").replace("\n", r"\n")


_Template = tuple[Callable[[dict[str, Any]], Any], bool, str]


def _template(keys: tuple[str, ...]) -> _Template:
    """For one label-key tuple: a getter of the values in sorted key order, whether it
    returns a single value (one label) rather than a tuple, and a ``str.format`` template."""
    order = tuple(sorted(keys))
    template = "{{" + ",".join(f'{label_name(k)}="{{}}"' for k in order) + "}}"
    return itemgetter(*order), len(order) == 1, template


def _label_values(values: tuple[Any, ...]) -> list[str]:
    return [escape_label_value(str(v)) for v in values]


def value_text(value: float) -> str:
    """``format_value`` with its common case inlined: finite floats below 1e6 print as
    Python's repr (floatToGoString's rule)."""
    if value.__class__ is float and -math.inf < value < 1e6:
        return repr(value)
    return format_value(value)


class RenderedFamily(Metric):
    """A family that writes its own sample lines: the AI stores, which keep each label
    set's label text from one scrape to the next (label sets only ever grow, and their
    values are fixed), so a scrape formats only the numbers.

    Why: building a ``Sample`` per line and formatting its labels again each scrape was
    three quarters of a scrape of the demo mix's 3,900 AI samples (30 ms of 40 on the
    2-core development machine); from the kept text it is a few milliseconds.
    ``samples`` are built only when something reads them (the OTLP push, tests), with
    the same values as the lines. Subclasses give ``build_samples`` and ``sample_lines``;
    the lines are byte for byte what the renderers below write for those samples."""

    def __init__(self, like: Metric) -> None:  # pylint: disable=super-init-not-called
        # Not Metric.__init__: ``like`` (a fresh family of the catalog) validated the name.
        self.name, self.documentation = like.name, like.documentation
        self.type, self.unit = like.type, like.unit
        self._samples: list[Sample] | None = None

    @property
    def samples(self) -> list[Sample]:
        if self._samples is None:
            self._samples = self.build_samples()
        return self._samples

    @samples.setter
    def samples(self, value: list[Sample]) -> None:
        self._samples = value

    def build_samples(self) -> list[Sample]:
        raise NotImplementedError

    def sample_lines(self, openmetrics: bool, deadline: float | None) -> list[str]:
        """The sample lines, in ``samples`` order; exemplars only when ``openmetrics``."""
        raise NotImplementedError


def render(families: Iterable[Metric], deadline: float | None = None) -> bytes:
    """The text exposition of ``families``, in order, as UTF-8."""
    return join(lines(families, deadline))


def join(pieces: list[str]) -> bytes:
    """The exposition from pieces of ``lines()`` (of one or more calls, in order)."""
    return "".join(pieces).encode("utf-8")


def lines(families: Iterable[Metric], deadline: float | None = None) -> list[str]:
    """The text exposition of ``families`` in pieces (lines and headers), to be joined.

    ``deadline`` (``time.monotonic()``): past it, rendering stops with ``TimeoutError``
    (looked at every ``_CHUNK`` samples), so a collector rendering in its own thread
    (``exporter.scrape``) gives up at its scrape deadline instead of rendering on for a
    response that no longer waits for it. Pieces rather than bytes because the pieces are
    small objects (Python's allocator, shared by all threads) while a joined text is one
    large block of the C allocator, which keeps a heap per thread: joined in each
    collector thread, every thread's heap would keep a scrape's worth of memory."""
    names: dict[str, str] = {}
    templates: dict[tuple[str, ...], _Template] = {}
    fmt = format_value
    inf = math.inf
    out: list[str] = []
    append = out.append

    for metric in families:
        try:
            mname = metric.name
            mtype = metric.type
            if mtype == "counter":
                mname += "_total"
            elif mtype == "info":
                mname += "_info"
            shown = _metric_name(mname)
            help_text = _help(metric.documentation)
            append(f"# HELP {shown} {help_text}\n")
            append(f"# TYPE {shown} {_TYPE_MAP.get(mtype, mtype)}\n")
            if isinstance(metric, RenderedFamily):
                out.extend(metric.sample_lines(False, deadline))
                continue
            extra: dict[str, list[str]] | None = None
            om_names = {metric.name + suffix: suffix for suffix in _OM_SUFFIXES}
            for sample in paced(metric.samples, deadline, _CHUNK):
                sname = sample.name
                name = names.get(sname)
                if name is None:
                    name = names[sname] = _metric_name(sname)
                labels = sample.labels
                if labels:
                    keys = tuple(labels)
                    entry = templates.get(keys)
                    if entry is None:
                        entry = templates[keys] = _template(keys)
                    getter, single, template = entry
                    values = (getter(labels),) if single else getter(labels)
                    try:  # one check for all values; escaping is rare
                        joined = "".join(values)
                        if '"' in joined or "\\" in joined or "\n" in joined:
                            values = _label_values(values)
                    except TypeError:  # a non-string value: convert each
                        values = _label_values(values)
                    labelstr = template.format(*values)
                else:
                    labelstr = ""
                value = sample.value
                # Finite floats below 1e6 print as Python's repr (floatToGoString's rule).
                shown_value = (repr(value) if value.__class__ is float and -inf < value < 1e6
                               else fmt(value))
                ts = sample.timestamp
                if ts is None:
                    line = f"{name}{labelstr} {shown_value}\n"
                else:
                    line = f"{name}{labelstr} {shown_value} {int(float(ts) * 1000):d}\n"
                suffix = om_names.get(sname)
                if suffix is None:
                    append(line)
                else:
                    if extra is None:
                        extra = {}
                    extra.setdefault(suffix, []).append(line)
        except TimeoutError:
            raise  # not a fault of this family: keep it out of the message
        except Exception as exc:
            exc.args = (exc.args or ("",)) + (metric,)
            raise
        if extra:
            for suffix, held in sorted(extra.items()):
                gauge = _metric_name(metric.name + suffix)
                append(f"# HELP {gauge} {help_text}\n")
                append(f"# TYPE {gauge} gauge\n")
                out.extend(held)
    return out


# --- OpenMetrics 1.0 ----------------------------------------
# Why a renderer here rather than prometheus_client.openmetrics.exposition.generate_latest:
# the library re-validates and re-escapes every metric and label name of every sample, as
# its text ``generate_latest`` does; measured on the same family (1,000 histogram label
# sets, 17,000 samples, every bucket with an exemplar; ``tests/test_exemplars.py::
# test_openmetrics_speed`` prints both): 323 ms here against 1,727 ms for the library on
# the 2-core development machine, a fifth. The exemplars' text is cached on the stores'
# exemplars (``exemplar_text``), which took a scrape with every bucket carrying one from 1.8x
# to about 1.2x the text format's time (``benchmarks/scrape.py --exemplars``). The output
# is byte for byte the library's (tests compare them); ``# EOF`` is appended by the caller
# (``render_openmetrics``), once, after every collector's part.


def _exemplar_labels(labels: dict[str, str]) -> str:
    return "{" + ",".join(f'{k}="{escape_label_value(v)}"' for k, v in sorted(labels.items())) + "}"


def exemplar_text(exemplar: Any) -> str:
    """`` # {labels} value [timestamp]`` as prometheus_client's OpenMetrics writer has it;
    cached on the exemplars the AI stores keep (``StoredExemplar``, unchanged from one
    scrape to the next): formatting is most of what exemplars cost a scrape."""
    try:
        return str(exemplar.om)
    except AttributeError:
        pass
    text = _format_exemplar(exemplar)
    with contextlib.suppress(AttributeError):  # a plain Exemplar (a tuple) takes none
        exemplar.om = text
    return text


def _format_exemplar(exemplar: Any) -> str:
    labels = exemplar.labels
    trace_id = labels.get("trace_id")
    span_id = labels.get("span_id")
    # The common shape (what the stores attach), in sorted order without sorting.
    if len(labels) == 2 and trace_id is not None and span_id is not None:
        labelstr = (f'{{span_id="{escape_label_value(span_id)}",'
                    f'trace_id="{escape_label_value(trace_id)}"}}')
    else:
        labelstr = _exemplar_labels(labels)
    ts = exemplar.timestamp
    if ts is None:
        return f" # {labelstr} {format_value(exemplar.value)}"
    return f" # {labelstr} {format_value(exemplar.value)} {ts}"


def render_openmetrics(families: Iterable[Metric], deadline: float | None = None) -> bytes:
    """The OpenMetrics exposition of ``families``, ``# EOF`` included, as UTF-8."""
    return join([*openmetrics_lines(families, deadline), OPENMETRICS_EOF])


def openmetrics_lines(families: Iterable[Metric], deadline: float | None = None) -> list[str]:
    """``lines`` for OpenMetrics 1.0: family names as given (counters without ``_total``),
    ``# UNIT`` where set, ``_created`` kept in its family, sample timestamps in seconds,
    and exemplars after the value; no ``# EOF`` (see ``render_openmetrics``)."""
    names: dict[str, str] = {}
    templates: dict[tuple[str, ...], _Template] = {}
    fmt = format_value
    inf = math.inf
    out: list[str] = []
    append = out.append
    for metric in families:
        try:
            shown = _metric_name(metric.name)
            help_text = metric.documentation.replace("\\", r"\\").replace(
                "\n", r"\n").replace('"', r'\"')
            append(f"# HELP {shown} {help_text}\n")
            append(f"# TYPE {shown} {metric.type}\n")
            if metric.unit:
                append(f"# UNIT {shown} {metric.unit}\n")
            if isinstance(metric, RenderedFamily):
                out.extend(metric.sample_lines(True, deadline))
                continue
            for sample in paced(metric.samples, deadline, _CHUNK):
                if sample.native_histogram is not None:
                    continue  # OpenMetrics 1.0 has none (the library skips them too)
                sname = sample.name
                name = names.get(sname)
                if name is None:
                    name = names[sname] = _metric_name(sname)
                labels = sample.labels
                if labels:
                    keys = tuple(labels)
                    entry = templates.get(keys)
                    if entry is None:
                        entry = templates[keys] = _template(keys)
                    getter, single, template = entry
                    values = (getter(labels),) if single else getter(labels)
                    try:
                        joined = "".join(values)
                        if '"' in joined or "\\" in joined or "\n" in joined:
                            values = _label_values(values)
                    except TypeError:
                        values = _label_values(values)
                    labelstr = template.format(*values)
                else:
                    labelstr = ""
                value = sample.value
                shown_value = (repr(value) if value.__class__ is float and -inf < value < 1e6
                               else fmt(value))
                ts = sample.timestamp
                exemplar = sample.exemplar
                if exemplar is None:
                    if ts is None:
                        append(f"{name}{labelstr} {shown_value}\n")
                    else:
                        append(f"{name}{labelstr} {shown_value} {ts}\n")
                else:
                    try:  # the text cached on a StoredExemplar (see ``exemplar_text``)
                        suffix = exemplar.om  # type: ignore[attr-defined]
                    except AttributeError:
                        suffix = exemplar_text(exemplar)
                    if ts is None:
                        append(f"{name}{labelstr} {shown_value}{suffix}\n")
                    else:
                        append(f"{name}{labelstr} {shown_value} {ts}{suffix}\n")
        except TimeoutError:
            raise
        except Exception as exc:
            exc.args = (exc.args or ("",)) + (metric,)
            raise
    return out


def wants_openmetrics(accept: str | None) -> bool:
    """Whether an ``Accept`` header prefers OpenMetrics text (1.0.0 or 0.0.1) to the
    Prometheus text format: the highest q-value wins, a tie goes to the earlier type (as
    Prometheus lists its preference first). Prometheus 2.x sends
    ``application/openmetrics-text;version=1.0.0,application/openmetrics-text;
    version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1``, Prometheus 3 its
    ``scrape_protocols`` with q-values (``application/openmetrics-text;version=1.0.0;
    q=0.5,...``); curl and most other clients send ``*/*`` or nothing and get the text
    format. Anything unparsable means the text format."""
    if not accept or "openmetrics" not in accept:
        return False
    best_om = best_text = -1.0
    for position, part in enumerate(accept.split(",")):
        media, *params = part.split(";")
        media = media.strip().lower()
        q, version = 1.0, ""
        for param in params:
            key, _, val = param.partition("=")
            key, val = key.strip().lower(), val.strip().strip('"')
            if key == "q":
                try:
                    q = float(val)
                except ValueError:
                    q = 0.0
            elif key == "version":
                version = val
        if q <= 0:
            continue
        rank = q - position * 1e-6  # earlier entries win ties
        if media == "application/openmetrics-text":
            if version in ("", "1.0.0", "0.0.1"):
                best_om = max(best_om, rank)
        elif media in ("text/plain", "*/*", "text/*"):
            best_text = max(best_text, rank)
    return best_om > best_text
