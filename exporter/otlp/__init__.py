"""OTLP push of the series /metrics serves, into existing OpenTelemetry collectors.

Importing this package is cheap: the OpenTelemetry SDK and exporters are imported only
when a push is configured (``build_pusher``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from exporter.otlp.gate import CollectGate
from exporter.otlp.settings import OtlpSettings, resolve

if TYPE_CHECKING:
    from exporter.config import Config
    from exporter.otlp.pusher import FamilySource, OtlpPusher


def build_pusher(cfg: Config, source: FamilySource) -> OtlpPusher | None:
    """The pusher for this configuration, or None when no endpoint is configured.

    Raises ``ConfigError`` for a bad ``otlp:`` value or ``OTEL_*`` variable."""
    settings = resolve(cfg)
    if settings is None:
        return None
    from exporter.otlp.pusher import OtlpPusher

    return OtlpPusher(settings, source)


__all__ = ["CollectGate", "OtlpSettings", "build_pusher", "resolve"]
