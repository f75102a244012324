"""Scoped credentials: what one credential may report for.

A credential that may push (a static token, a JWT, a basic-auth user, the push tokens)
can be bound to the components it reports for, the event kinds it may send and label
fields its events always carry. Each event of a scoped request is checked on its own: one
outside the scope is rejected with ``forbidden_scope`` (counted, listed in the answer) and
the rest of the batch still counts, so a compromised agent cannot report, or page, for
another component.

The check runs on decoded events (the Python decode path): only scoped requests pay for
it. The scope travels with the batch into the write-ahead log, so a replay after a crash
judges each event exactly as the answer did.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import msgspec.inspect
import msgspec.structs

from exporter.config import ConfigError, ScopeConfig
from exporter.events import EVENT_TYPES, KIND_OF, KINDS, AnyEvent, Rejection

FORBIDDEN = "forbidden_scope"
# The field that names who reports an event, by kind: ``component`` where the kind has
# one, the calling ``agent`` for tool calls. Kinds without either cannot name a reporter;
# ``kinds`` is what limits them.
_REPORTER_FIELDS = ("component", "agent")


def _label_fields() -> dict[type, dict[str, Any]]:
    """Per event type: its string fields that become labels (not ids), with defaults."""
    out: dict[type, dict[str, Any]] = {}
    for cls in EVENT_TYPES:
        info = msgspec.inspect.type_info(cls)
        assert isinstance(info, msgspec.inspect.StructType)
        fields: dict[str, Any] = {}
        for f in info.fields:
            kind = f.type.type if isinstance(f.type, msgspec.inspect.Metadata) else f.type
            if isinstance(kind, msgspec.inspect.StrType) and not f.name.endswith("_id"):
                fields[f.name] = f.default if f.default is not msgspec.NODEFAULT else None
        out[cls] = fields
    return out


LABEL_FIELDS = _label_fields()
PINNABLE = frozenset(name for fields in LABEL_FIELDS.values() for name in fields)
REPORTER: dict[type, str] = {
    cls: next((f for f in _REPORTER_FIELDS if f in fields), "")
    for cls, fields in LABEL_FIELDS.items()}


class ScopeRecord(msgspec.Struct, array_like=True, frozen=True):
    """A scope as the write-ahead log keeps it with a batch."""

    credential: str
    components: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    service_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class Scope:
    """The bounds of one credential (see the module docstring)."""

    credential: str
    components: frozenset[str] = frozenset()
    kinds: frozenset[str] = frozenset()
    labels: tuple[tuple[str, str], ...] = ()
    service_names: frozenset[str] = frozenset()

    def admit(self, event: AnyEvent) -> AnyEvent | Rejection:
        """The event as it counts (pinned fields filled in), or why it may not."""
        cls = type(event)
        kind = KIND_OF[cls]
        if self.kinds and kind not in self.kinds:
            return Rejection(FORBIDDEN, f"{self.credential} may not send {kind} events "
                                        f"(it may send {', '.join(sorted(self.kinds))})")
        fields = LABEL_FIELDS[cls]
        changes: dict[str, str] = {}
        reporter = REPORTER[cls]
        if self.components and reporter:
            value = getattr(event, reporter)
            if not value or value == fields[reporter]:
                if len(self.components) != 1:
                    return Rejection(FORBIDDEN, f"{kind} names no {reporter}; "
                                                f"{self.credential} must name one of "
                                                f"{', '.join(sorted(self.components))}")
                changes[reporter] = next(iter(self.components))
            elif value not in self.components:
                return Rejection(FORBIDDEN, f"{self.credential} may not report for "
                                            f"{reporter} {value!r}")
        for name, pinned in self.labels:
            if name not in fields:
                continue
            value = getattr(event, name)
            if not value or value == fields[name]:
                changes[name] = pinned
            elif value != pinned:
                return Rejection(FORBIDDEN, f"{self.credential} always reports {name}="
                                            f"{pinned!r}, not {value!r}")
        return msgspec.structs.replace(event, **changes) if changes else event

    def admit_all(self, events: Sequence[tuple[int, AnyEvent]]
                  ) -> tuple[list[AnyEvent], list[tuple[int, Rejection]]]:
        admitted: list[AnyEvent] = []
        refused: list[tuple[int, Rejection]] = []
        for index, event in events:
            result = self.admit(event)
            if isinstance(result, Rejection):
                refused.append((index, result))
            else:
                admitted.append(result)
        return admitted, refused

    def encode(self) -> bytes:
        return msgspec.msgpack.encode(ScopeRecord(
            self.credential, tuple(sorted(self.components)), tuple(sorted(self.kinds)),
            self.labels, tuple(sorted(self.service_names))))

    @classmethod
    def decode(cls, data: bytes) -> Scope:
        rec = msgspec.msgpack.decode(data, type=ScopeRecord)
        return cls(rec.credential, frozenset(rec.components), frozenset(rec.kinds),
                   tuple(tuple(p) for p in rec.labels),  # type: ignore[misc]
                   frozenset(rec.service_names))


CREDENTIAL_PREFIXES = ("token:", "user:", "jwt:", "cert:")


def build_scopes(configured: Mapping[str, ScopeConfig],
                 where: str = "web.security.scopes") -> dict[str, Scope]:
    """Validate ``web.security.scopes`` (keyed by credential name as logs show it:
    ``token:<name>``, ``user:<name>``, ``jwt:<sub>``, ``cert:<CN>``; ``token:push`` for
    the ``sources.push`` tokens). ``ConfigError`` names the field."""
    scopes: dict[str, Scope] = {}
    for credential, conf in configured.items():
        if not credential.startswith(CREDENTIAL_PREFIXES) or credential.endswith(":"):
            raise ConfigError(f"{where}.{credential}: a credential name starts with one "
                              f"of {', '.join(CREDENTIAL_PREFIXES)} followed by its name")
        scopes[credential] = scope_from(credential, conf, f"{where}.{credential}")
    return scopes


def scope_from(credential: str, conf: ScopeConfig, where: str) -> Scope:
    for field, values in (("components", conf.components),
                          ("service_names", conf.service_names)):
        for i, value in enumerate(values):
            if not value.strip():
                raise ConfigError(f"{where}.{field}.{i}: empty name")
    for i, kind in enumerate(conf.kinds):
        if kind not in KINDS:
            raise ConfigError(f"{where}.kinds.{i}: unknown event kind {kind!r}; expected "
                              f"one of {', '.join(KINDS)}")
    for name, value in conf.labels.items():
        if name not in PINNABLE:
            raise ConfigError(f"{where}.labels.{name}: no event kind has a label field "
                              f"{name!r}; expected one of {', '.join(sorted(PINNABLE))}")
        if not value:
            raise ConfigError(f"{where}.labels.{name}: empty value")
    if not (conf.components or conf.kinds or conf.labels or conf.service_names):
        raise ConfigError(f"{where}: an empty scope; set components, kinds, labels or "
                          "service_names")
    return Scope(credential, frozenset(conf.components), frozenset(conf.kinds),
                 tuple(sorted(conf.labels.items())), frozenset(conf.service_names))


def scope_from_claim(credential: str, claim: Any) -> Scope | str:
    """A JWT's scope claim (an object with the keys of a configured scope), or a failure
    reason when the claim is not one."""
    try:
        conf = msgspec.convert(claim, ScopeConfig)
        return scope_from(credential, conf, "claim")
    except (msgspec.ValidationError, ConfigError):
        return "bad_scope"
