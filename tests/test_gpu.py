"""GPU collector: NVML readings → hw.* series, and a clean absence where there is no GPU."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric

from exporter import config
from exporter.collectors import gpu
from exporter.collectors.base import CollectorContext
from exporter.collectors.gpu import GpuCollector, GpuReading, gpu_families
from exporter.scrape import StaticFamilies
from tests.procs import Exporter, sample_value

# Readings as NVML reports them (nvidia-smi -q on the same devices shows the same numbers):
# an A100 under load with ECC on, and an idle T4 whose driver reports no ECC and no energy.
A100 = GpuReading(
    index=0, uuid="GPU-5b2c7d1e-8f3a-4c6b-9e0d-1a2b3c4d5e6f", name="NVIDIA A100-SXM4-40GB",
    utilization_percent=87, memory_used_bytes=31_138_512_896,
    memory_total_bytes=42_949_672_960, temperature_celsius=64, power_milliwatts=287_345,
    energy_millijoules=9_876_543_210,
    clocks_mhz={"graphics": 1410, "sm": 1410, "memory": 1215, "video": 1275},
    ecc_errors={"corrected": 3, "uncorrected": 0})
T4 = GpuReading(
    index=1, uuid="GPU-0f9e8d7c-6b5a-4321-8fed-cba987654321", name="Tesla T4",
    utilization_percent=0, memory_used_bytes=0, memory_total_bytes=16_106_127_360,
    temperature_celsius=38, power_milliwatts=9_876, clocks_mhz={"graphics": 300, "sm": 300,
                                                                "memory": 405})


def render(families: list[Metric]) -> str:
    return generate_latest(StaticFamilies(families)).decode()


def test_readings_map_to_hw_series_in_base_units() -> None:
    text = render(gpu_families([A100, T4]))
    a100 = {"hw_id": A100.uuid, "hw_model": "NVIDIA A100-SXM4-40GB"}
    t4 = {"hw_id": T4.uuid, "hw_model": "Tesla T4"}
    assert sample_value(text, "hw_gpu_utilization_ratio", a100) == pytest.approx(0.87)
    assert sample_value(text, "hw_gpu_memory_usage_bytes", a100) == 31_138_512_896
    assert sample_value(text, "hw_gpu_memory_limit_bytes", a100) == 42_949_672_960
    assert sample_value(text, "hw_gpu_memory_utilization_ratio", a100) == pytest.approx(
        31_138_512_896 / 42_949_672_960)
    assert sample_value(text, "hw_temperature_celsius", a100) == 64
    assert sample_value(text, "hw_power_watts", a100) == pytest.approx(287.345)
    assert sample_value(text, "hw_energy_joules_total", a100) == pytest.approx(9_876_543.21)
    assert sample_value(text, "hw_gpu_clock_hertz",
                        {**a100, "hw_gpu_clock_type": "sm"}) == 1_410_000_000
    assert sample_value(text, "hw_gpu_clock_hertz",
                        {**a100, "hw_gpu_clock_type": "memory"}) == 1_215_000_000
    assert sample_value(text, "hw_errors_total", {**a100, "error_type": "corrected"}) == 3
    assert sample_value(text, "hw_errors_total", {**a100, "error_type": "uncorrected"}) == 0
    assert sample_value(text, "hw_gpu_utilization_ratio", t4) == 0
    assert sample_value(text, "hw_power_watts", t4) == pytest.approx(9.876)
    # What the T4 does not report is absent, never a fake 0.
    assert sample_value(text, "hw_energy_joules_total", t4) is None
    assert sample_value(text, "hw_errors_total", t4) is None
    assert sample_value(text, "hw_gpu_clock_hertz", {**t4, "hw_gpu_clock_type": "video"}) is None


def test_no_readings_no_series() -> None:
    text = render(gpu_families([]))
    assert "hw_gpu_utilization_ratio{" not in text and "hw_power_watts{" not in text


def _collector() -> GpuCollector:
    return GpuCollector(CollectorContext(config.build({})))


def test_no_gpu_here_is_reported_once_and_exposes_nothing(
        caplog: pytest.LogCaptureFixture) -> None:
    """Real absence: nvidia-ml-py is installed, the NVIDIA driver library is not."""
    gpu._logged.clear()
    caplog.set_level(logging.INFO, logger="exporter.collectors.gpu")
    first, second = _collector(), _collector()
    assert list(first.collect()) == []
    assert list(first.collect()) == []
    assert list(second.collect()) == []
    assert "NVML" in first.unavailable
    messages = [r.getMessage() for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(messages) == 1, messages
    first.close()


def test_missing_library_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml → ImportError
    collector = _collector()
    assert list(collector.collect()) == []
    assert "nvidia-ml-py" in collector.unavailable


def _driver_library_loads() -> bool:
    import ctypes

    try:
        ctypes.CDLL(gpu.NVML_LIBRARY)
    except OSError:
        return False
    return True


@pytest.mark.skipif(_driver_library_loads(), reason="this host has the NVIDIA driver")
def test_missing_driver_is_found_without_importing_pynvml(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """No driver: the collector says what pynvml would say, without paying its import."""
    pytest.importorskip("pynvml")
    monkeypatch.delitem(sys.modules, "pynvml")
    module, reason = gpu.load_nvml()
    assert module is None and "pynvml" not in sys.modules
    import pynvml  # type: ignore[import-untyped]

    with pytest.raises(pynvml.NVMLError) as failure:
        pynvml.nvmlInit()
    assert reason == f"NVML cannot be initialised: {failure.value}" == gpu.LIBRARY_NOT_FOUND


def test_driver_check_asks_the_dynamic_loader(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu, "NVML_LIBRARY", "libc.so.6")
    assert not gpu._driver_library_missing()
    monkeypatch.setattr(gpu, "NVML_LIBRARY", "libno-such-library-here.so.1")
    assert gpu._driver_library_missing()


@pytest.mark.e2e
def test_exporter_scrape_unaffected_without_gpu(tmp_path: Path) -> None:
    exp = Exporter(tmp_path)
    try:
        for _ in range(3):
            start = time.monotonic()
            text = exp.metrics()
            assert time.monotonic() - start < 5
            assert sample_value(text, "ai_exporter_collector_success", {"collector": "gpu"}) == 1
            assert "hw_gpu_utilization_ratio{" not in text
            assert "hw_temperature_celsius{" not in text
        exp.stop()
        assert exp.log().count("GPU metrics unavailable") == 1
    finally:
        exp.stop()
