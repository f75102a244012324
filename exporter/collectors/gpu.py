"""NVIDIA GPUs through NVML: utilization, memory, temperature, power, energy, clocks, ECC.

Enabled by default because it costs nothing where there is no GPU: without the
``nvidia-ml-py`` package (extra ``gpu``) or without the NVIDIA driver, the collector logs
once that GPU metrics are unavailable, serves no GPU series and reports success (nothing
to report is not a failure). NVML is initialised once per collector, not per scrape.

Reading is thin (``read_device``: one NVML call per value, each allowed to be unsupported);
mapping is pure (``gpu_families``: literal readings in, OTel ``hw.*`` families out), so it
is tested on readings recorded from real devices.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from prometheus_client.metrics_core import Metric

from exporter import catalog
from exporter.collectors.base import Collector, CollectorContext

log = logging.getLogger(__name__)

T = TypeVar("T")
_logged: set[str] = set()
_logged_lock = threading.Lock()


def _log_once(message: str) -> None:
    """Say why GPU metrics are unavailable once per process, not once per scrape."""
    with _logged_lock:
        if message in _logged:
            return
        _logged.add(message)
    log.info("gpu: GPU metrics unavailable: %s", message)


@dataclass(frozen=True)
class GpuReading:
    """One device's readings in NVML's own units; ``None`` where the device lacks it."""

    index: int
    uuid: str
    name: str
    utilization_percent: float | None = None
    memory_used_bytes: float | None = None
    memory_total_bytes: float | None = None
    temperature_celsius: float | None = None
    power_milliwatts: float | None = None
    energy_millijoules: float | None = None
    clocks_mhz: dict[str, float] = field(default_factory=dict)
    ecc_errors: dict[str, float] = field(default_factory=dict)


def gpu_families(readings: Sequence[GpuReading]) -> list[Metric]:
    """Map device readings to ``hw.*`` families: ratios, bytes, watts, joules, hertz."""
    util = catalog.HW_GPU_UTILIZATION.family()
    mem_used = catalog.HW_GPU_MEMORY_USAGE.family()
    mem_limit = catalog.HW_GPU_MEMORY_LIMIT.family()
    mem_util = catalog.HW_GPU_MEMORY_UTILIZATION.family()
    temperature = catalog.HW_TEMPERATURE.family()
    power = catalog.HW_POWER.family()
    energy = catalog.HW_ENERGY.family()
    clock = catalog.HW_GPU_CLOCK.family()
    errors = catalog.HW_ERRORS.family()
    for r in readings:
        labels = [r.uuid, r.name]
        if r.utilization_percent is not None:
            util.add_metric(labels, r.utilization_percent / 100.0)
        if r.memory_used_bytes is not None:
            mem_used.add_metric(labels, r.memory_used_bytes)
        if r.memory_total_bytes is not None:
            mem_limit.add_metric(labels, r.memory_total_bytes)
            if r.memory_used_bytes is not None and r.memory_total_bytes > 0:
                mem_util.add_metric(labels, r.memory_used_bytes / r.memory_total_bytes)
        if r.temperature_celsius is not None:
            temperature.add_metric(labels, r.temperature_celsius)
        if r.power_milliwatts is not None:
            power.add_metric(labels, r.power_milliwatts / 1000.0)
        if r.energy_millijoules is not None:
            energy.add_metric(labels, r.energy_millijoules / 1000.0)
        for domain, mhz in sorted(r.clocks_mhz.items()):
            clock.add_metric([*labels, domain], mhz * 1e6)
        for error_type, count in sorted(r.ecc_errors.items()):
            errors.add_metric([*labels, error_type], count)
    return [util, mem_used, mem_limit, mem_util, temperature, power, energy, clock, errors]


def read_device(nvml: Any, index: int) -> GpuReading:
    """Read one device; a value the device does not support is left ``None``."""
    handle = nvml.nvmlDeviceGetHandleByIndex(index)

    def get(call: Callable[[], T]) -> T | None:
        try:
            return call()
        except nvml.NVMLError:
            return None

    def text(value: Any) -> str:
        return value.decode() if isinstance(value, bytes) else str(value)

    uuid = get(lambda: text(nvml.nvmlDeviceGetUUID(handle))) or f"gpu{index}"
    name = get(lambda: text(nvml.nvmlDeviceGetName(handle))) or "unknown"
    util = get(lambda: nvml.nvmlDeviceGetUtilizationRates(handle))
    memory = get(lambda: nvml.nvmlDeviceGetMemoryInfo(handle))
    clocks: dict[str, float] = {}
    for domain, const in (("graphics", "NVML_CLOCK_GRAPHICS"), ("sm", "NVML_CLOCK_SM"),
                          ("memory", "NVML_CLOCK_MEM"), ("video", "NVML_CLOCK_VIDEO")):
        mhz = get(partial(nvml.nvmlDeviceGetClockInfo, handle, getattr(nvml, const)))
        if mhz is not None:
            clocks[domain] = float(mhz)
    ecc: dict[str, float] = {}
    for error_type, const in (("corrected", "NVML_MEMORY_ERROR_TYPE_CORRECTED"),
                              ("uncorrected", "NVML_MEMORY_ERROR_TYPE_UNCORRECTED")):
        count = get(partial(nvml.nvmlDeviceGetTotalEccErrors, handle, getattr(nvml, const),
                            nvml.NVML_VOLATILE_ECC))
        if count is not None:
            ecc[error_type] = float(count)
    temperature = get(lambda: nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU))
    power = get(lambda: nvml.nvmlDeviceGetPowerUsage(handle))
    energy = get(lambda: nvml.nvmlDeviceGetTotalEnergyConsumption(handle))
    return GpuReading(
        index=index, uuid=uuid, name=name,
        utilization_percent=None if util is None else float(util.gpu),
        memory_used_bytes=None if memory is None else float(memory.used),
        memory_total_bytes=None if memory is None else float(memory.total),
        temperature_celsius=None if temperature is None else float(temperature),
        power_milliwatts=None if power is None else float(power),
        energy_millijoules=None if energy is None else float(energy),
        clocks_mhz=clocks, ecc_errors=ecc)


NOT_INSTALLED = ("the nvidia-ml-py package is not installed "
                 "(pip install 'ai-metrics-exporter[gpu]')")
# The driver library pynvml loads outside Windows, and pynvml's text for failing to load it.
NVML_LIBRARY = "libnvidia-ml.so.1"
LIBRARY_NOT_FOUND = "NVML cannot be initialised: NVML Shared Library Not Found"


def _driver_library_missing() -> bool:
    """Whether loading NVML's library fails, as ``nvmlInit`` would find out.

    Importing pynvml costs more than the rest of the first scrape together (15-30 ms); on
    a host without the NVIDIA driver its only use would be to fail that same load. Asking
    the dynamic loader first keeps that cost off start-up where there is no GPU.
    """
    if sys.platform.startswith("win"):  # pynvml looks in several places there: let it
        return False
    import ctypes

    try:
        ctypes.CDLL(NVML_LIBRARY)
    except OSError:
        return True
    return False


def load_nvml() -> tuple[Any, str]:
    """The initialised ``pynvml`` module, or None and why it is unavailable."""
    if "pynvml" not in sys.modules:  # not imported yet: check what is cheap to check first
        if importlib.util.find_spec("pynvml") is None:
            return None, NOT_INSTALLED
        if _driver_library_missing():
            return None, LIBRARY_NOT_FOUND
    try:  # optional dependency (extra "gpu")
        pynvml: Any = importlib.import_module("pynvml")
    except ImportError:
        return None, NOT_INSTALLED
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return None, f"NVML cannot be initialised: {exc}"
    except OSError as exc:
        return None, f"NVML cannot be loaded: {exc}"
    return pynvml, ""


class GpuCollector(Collector):
    name = "gpu"
    default_enabled = True
    description = "NVIDIA GPUs via NVML (extra 'gpu'); silent where there is no GPU."

    def __init__(self, ctx: CollectorContext) -> None:
        super().__init__(ctx)
        self._nvml: Any = None
        self._tried = False
        self.unavailable = ""
        self._lock = threading.Lock()

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            if not self._tried:
                self._tried = True
                self._nvml, self.unavailable = load_nvml()
                if self._nvml is None:
                    _log_once(self.unavailable)
            nvml = self._nvml
        if nvml is None:
            return []
        count = nvml.nvmlDeviceGetCount()
        return gpu_families([read_device(nvml, i) for i in range(count)])

    def close(self) -> None:
        with self._lock:
            nvml, self._nvml = self._nvml, None
        if nvml is not None:
            try:
                nvml.nvmlShutdown()
            except nvml.NVMLError as exc:
                log.debug("gpu: nvmlShutdown failed: %s", exc)
