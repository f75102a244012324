"""Battery charge and time left, on hosts that have a battery (none: no series)."""

from __future__ import annotations

from collections.abc import Iterable

import psutil
from prometheus_client.metrics_core import Metric

from exporter import catalog
from exporter.collectors.base import Collector


def battery_state(plugged: bool | None, percent: float) -> str:
    """OTel-style ``hw.state`` of a battery from psutil's reading."""
    if plugged and percent >= 100:
        return "full"
    return "charging" if plugged else "discharging"


class BatteryCollector(Collector):
    name = "battery"
    description = "Battery charge and time left (only on hosts with a battery)."

    def collect(self) -> Iterable[Metric]:
        reading = psutil.sensors_battery() if hasattr(psutil, "sensors_battery") else None
        if reading is None:
            return
        charge = catalog.HW_BATTERY_CHARGE.family()
        charge.add_metric(["BAT0", battery_state(reading.power_plugged, reading.percent)],
                          reading.percent / 100.0)
        yield charge
        secs = reading.secsleft
        if isinstance(secs, int | float) and secs >= 0 and not reading.power_plugged:
            left = catalog.HW_BATTERY_TIME_LEFT.family()
            left.add_metric(["BAT0"], float(secs))
            yield left
