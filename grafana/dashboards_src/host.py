"""Host and GPU: CPU, memory, filesystems, disk I/O, network and GPUs of the exporter hosts."""

from __future__ import annotations

from .layout import UID_HOST, Board, Section
from .panels import Target, bargauge, rising, stat, ts
from .parameters import Parameters
from .promql import rate, sel


def build(params: Parameters) -> Board:
    """The dashboard, with the alert thresholds of ``params``."""
    alert = params.threshold
    fs_warn = alert("system_filesystem_utilization", "warning")
    fs_crit = alert("system_filesystem_utilization", "critical")
    mem_warn = alert("system_memory_utilization", "warning")
    mem_crit = alert("system_memory_utilization", "critical")
    summary = [
        stat("CPU busy (5m)", "Share of all logical CPUs' time not idle, waiting for I/O or "
             "stolen, over the last 5 minutes.", "percentunit",
             Target(sel("instance:system_cpu_utilization:rate5m"), "{{instance}}"),
             width=6, thresholds=rising(alert("system_cpu_utilization", "warning"))),
        stat("Memory in use", "Physical memory in use that the kernel cannot reclaim.",
             "percentunit",
             Target(sel("instance:system_memory_utilization:ratio"), "{{instance}}"),
             width=6, thresholds=rising(mem_warn, mem_crit)),
        stat("Load per CPU (5m)", "5-minute load average divided by the logical CPUs.",
             "percentunit",
             Target(sel("instance:system_cpu_load_average_5m_per_cpu:ratio"), "{{instance}}"),
             width=6, thresholds=rising(1.0, 2.0)),
        stat("Uptime", "Time since the host booted.", "s",
             Target(f"max by (instance) ({sel('system_uptime_seconds')})", "{{instance}}"),
             width=6),
    ]
    cpu_memory = [
        ts("CPU by mode", "Share of all logical CPUs' time spent in each mode except idle.",
           "percentunit",
           Target("sum by (instance, cpu_mode) ("
                  + rate("system_cpu_time_seconds_total", 'cpu_mode!="idle"')
                  + ") / on (instance) group_left () max by (instance) ("
                  + sel("system_cpu_logical_cpus") + ")", "{{instance}} {{cpu_mode}}"),
           width=8, stack=True, maximum=1),
        ts("Load average", "1, 5 and 15-minute load averages, and the number of logical "
           "CPUs.", "short",
           Target(f"max by (instance) ({sel('system_cpu_load_average_1m')})",
                  "{{instance}} 1m"),
           Target(f"max by (instance) ({sel('system_cpu_load_average_5m')})",
                  "{{instance}} 5m"),
           Target(f"max by (instance) ({sel('system_cpu_load_average_15m')})",
                  "{{instance}} 15m"),
           Target(f"max by (instance) ({sel('system_cpu_logical_cpus')})",
                  "{{instance}} CPUs"), width=8),
        ts("Memory", "Physical memory by state, and the total.", "bytes",
           Target("sum by (instance, system_memory_state) ("
                  + sel("system_memory_usage_bytes") + ")",
                  "{{instance}} {{system_memory_state}}"),
           Target(f"max by (instance) ({sel('system_memory_limit_bytes')})",
                  "{{instance}} total"), width=8),
        ts("Swap", "Swap space by state.", "bytes",
           Target("sum by (instance, system_paging_state) ("
                  + sel("system_paging_usage_bytes") + ")",
                  "{{instance}} {{system_paging_state}}"), width=12, stack=True),
        ts("Memory available", "Memory available for new work without swapping.", "bytes",
           Target(f"max by (instance) ({sel('system_linux_memory_available_bytes')})",
                  "{{instance}}"), width=12),
    ]
    filesystems = [
        bargauge("Filesystem used", "Share of each filesystem's space in use (of the space "
                 "usable by unprivileged users). Thresholds are the alert parameters.",
                 "percentunit",
                 Target("max by (instance, system_filesystem_mountpoint) ("
                        + sel("instance_device_mountpoint:system_filesystem_utilization:ratio")
                        + ")", "{{instance}} {{system_filesystem_mountpoint}}"),
                 minimum=0, maximum=1, thresholds=rising(fs_warn, fs_crit)),
        ts("Filesystem free space", "Free bytes per filesystem.", "bytes",
           Target("max by (instance, system_filesystem_mountpoint) ("
                  + sel("system_filesystem_usage_bytes", 'system_filesystem_state="free"')
                  + ")", "{{instance}} {{system_filesystem_mountpoint}}"), width=8),
        ts("Inodes used", "Share of each filesystem's inodes in use.", "percentunit",
           Target("sum by (instance, system_filesystem_mountpoint) ("
                  + sel("system_filesystem_inodes_usage", 'system_filesystem_state="used"')
                  + ") / sum by (instance, system_filesystem_mountpoint) ("
                  + sel("system_filesystem_inodes_usage") + ")",
                  "{{instance}} {{system_filesystem_mountpoint}}"), width=8, maximum=1),
    ]
    disks = [
        ts("Disk throughput", "Bytes read and written per second per disk.", "Bps",
           Target("sum by (instance, system_device, disk_io_direction) ("
                  + rate("system_disk_io_bytes_total") + ")",
                  "{{instance}} {{system_device}} {{disk_io_direction}}"), width=6),
        ts("Disk operations", "Reads and writes completed per second per disk.", "iops",
           Target("sum by (instance, system_device, disk_io_direction) ("
                  + rate("system_disk_operations_total") + ")",
                  "{{instance}} {{system_device}} {{disk_io_direction}}"), width=6),
        ts("Disk busy (5m)", "Share of time each disk was busy over the last 5 minutes.",
           "percentunit",
           Target(sel("instance_device:system_disk_io_time:rate5m"),
                  "{{instance}} {{system_device}}"), width=6, maximum=1),
        ts("Disk operation time", "Average time per completed read or write.", "s",
           Target("sum by (instance, system_device, disk_io_direction) ("
                  + rate("system_disk_operation_time_seconds_total") + ") / "
                  "sum by (instance, system_device, disk_io_direction) ("
                  + rate("system_disk_operations_total") + ")",
                  "{{instance}} {{system_device}} {{disk_io_direction}}"), width=6),
    ]
    network = [
        ts("Network throughput (5m)", "Bytes sent and received per second per interface "
           "over the last 5 minutes.", "Bps",
           Target(sel("instance_interface_direction:system_network_io_bytes:rate5m"),
                  "{{instance}} {{network_interface_name}} {{network_io_direction}}"),
           width=8),
        ts("Network packets", "Packets sent and received per second per interface.", "pps",
           Target("sum by (instance, network_interface_name, network_io_direction) ("
                  + rate("system_network_packets_total") + ")",
                  "{{instance}} {{network_interface_name}} {{network_io_direction}}"),
           width=8),
        ts("Network errors and drops", "Errors and dropped packets per second per "
           "interface.", "pps",
           Target("sum by (instance, network_interface_name, network_io_direction) ("
                  + rate("system_network_errors_total") + ")",
                  "{{instance}} {{network_interface_name}} {{network_io_direction}} errors"),
           Target("sum by (instance, network_interface_name, network_io_direction) ("
                  + rate("system_network_dropped_total") + ")",
                  "{{instance}} {{network_interface_name}} {{network_io_direction}} dropped"),
           width=8),
    ]
    gpu_label = "{{instance}} GPU {{hw_id}} {{hw_model}}"
    by_gpu = "max by (instance, hw_id, hw_model)"
    gpu = [
        ts("GPU utilization", "Share of time each GPU was busy.", "percentunit",
           Target(f"{by_gpu} ({sel('hw_gpu_utilization_ratio')})", gpu_label),
           width=8, maximum=1),
        ts("GPU memory", "GPU memory in use and each GPU's memory size.", "bytes",
           Target(f"{by_gpu} ({sel('hw_gpu_memory_usage_bytes')})", f"{gpu_label} used"),
           Target(f"{by_gpu} ({sel('hw_gpu_memory_limit_bytes')})", f"{gpu_label} size"),
           width=8),
        ts("GPU memory used", "Share of each GPU's memory in use; orange at the alert "
           "threshold.", "percentunit",
           Target(f"{by_gpu} ({sel('hw_gpu_memory_utilization_ratio')})", gpu_label),
           width=8, maximum=1,
           thresholds=rising(alert("hw_gpu_memory_utilization", "warning")),
           dashed=True),
        ts("GPU temperature", "GPU temperature; orange at the alert threshold.", "celsius",
           Target(f"{by_gpu} ({sel('hw_temperature_celsius')})", gpu_label), width=6,
           thresholds=rising(alert("hw_temperature_celsius", "warning")),
           dashed=True),
        ts("GPU power", "Power drawn by each GPU, as reported and as energy used per "
           "second.", "watt",
           Target(f"{by_gpu} ({sel('hw_power_watts')})", f"{gpu_label} reported"),
           Target(f"sum by (instance, hw_id, hw_model) ({rate('hw_energy_joules_total')})",
                  f"{gpu_label} from energy"), width=6),
        ts("GPU clocks", "GPU clock frequency by clock domain.", "hertz",
           Target(f"max by (instance, hw_id, hw_model, hw_gpu_clock_type) "
                  f"({sel('hw_gpu_clock_hertz')})", f"{gpu_label} {{{{hw_gpu_clock_type}}}}"),
           width=6),
        ts("GPU ECC errors", "ECC errors per second by type.", "cps",
           Target(f"sum by (instance, hw_id, error_type) ({rate('hw_errors_total')})",
                  "{{instance}} GPU {{hw_id}} {{error_type}}"), width=6),
    ]
    return Board(
        UID_HOST, "Host and GPU",
        "Resources of the hosts the exporter runs on: CPU, memory, filesystems, disk I/O, "
        "network and GPUs.",
        ["host", "gpu"], [],
        [Section("Summary", summary), Section("CPU and memory", cpu_memory),
         Section("Filesystems", filesystems), Section("Disk I/O", disks),
         Section("Network", network), Section("GPU", gpu)])
