"""The counters accelscope knows, in one table: what each measures, in what unit, and what
it is for.

Collectors write these names (the unit is in the name); the analyzer reads the roles (a
device's own utilisation, its memory used and total); the dashboard reads the labels and
panels. A counter not in the table is still kept and drawn, in an "other" panel by its
unit. Adding a counter: one row here, written by its collector.
"""

from __future__ import annotations

from dataclasses import dataclass

# PyTorch's CUDA caching allocator, read at each step's end (collectors/cuda_memory.py; the
# analyzer's per-step memory, analysis/memory_samples.py): device cuda:N, stamped at the step's end.
CUDA_ALLOCATED = "memory_allocated_bytes"  # torch.cuda.memory_allocated at the step's end
CUDA_RESERVED = "memory_reserved_bytes"  # torch.cuda.memory_reserved at the step's end
CUDA_MAX_ALLOCATED = "max_memory_allocated_bytes"  # torch.cuda.max_memory_allocated: the step's peak (peaks reset each step)
CUDA_MAX_RESERVED = "max_memory_reserved_bytes"  # torch.cuda.max_memory_reserved: the step's peak
CUDA_MEMORY = (CUDA_ALLOCATED, CUDA_RESERVED, CUDA_MAX_ALLOCATED, CUDA_MAX_RESERVED)

# Roles: what the analyzer and the views use a counter for.
UTILISATION = "utilisation"  # how busy the device was by its own measure (a percentage)
MEMORY_USED = "memory_used"  # device memory in use
MEMORY_TOTAL = "memory_total"  # device memory in all
CAPACITY = "capacity"  # a limit another counter of its panel can reach: drawn dashed
HIDDEN = "hidden"  # kept in the run, not drawn (a bitmask, a scale that flattens the rest, a lost/recovered marker)


@dataclass(frozen=True)
class Counter:
    name: str
    unit: str  # "%", "bytes", "W", "°C", "MHz", "bytes/s", "count", "flag", "bitmask"
    label: str  # for people, after the device in a device counter: "cuda:0 utilisation"
    device: bool  # an accelerator counter (device cuda:N, tpu:N), else the host's
    panel: str  # the dashboard panel it is drawn in (metrics_view.PANELS)
    roles: frozenset[str] = frozenset()
    source: str = ""  # the collector that writes it


def _c(name: str, unit: str, label: str, device: bool, panel: str, *roles: str, source: str) -> Counter:
    return Counter(name, unit, label, device, panel, frozenset(roles), source)


TABLE: tuple[Counter, ...] = (
    # NVML (collectors/nvml.py)
    _c("gpu_util_percent", "%", "utilisation", True, "device_util", UTILISATION, source="nvml"),
    _c("memory_util_percent", "%", "memory busy", True, "device_util", source="nvml"),
    _c("memory_used_bytes", "bytes", "used", True, "device_memory", MEMORY_USED, source="nvml"),
    _c("process_memory_used_bytes", "bytes", "this process", True, "device_memory", source="nvml"),
    _c("memory_total_bytes", "bytes", "total", True, "device_memory", MEMORY_TOTAL, CAPACITY, source="nvml"),
    _c("power_watts", "W", "power", True, "power", source="nvml"),
    _c("temperature_celsius", "°C", "temperature", True, "temperature", source="nvml"),
    _c("sm_clock_mhz", "MHz", "SM clock", True, "clock", source="nvml"),
    _c("memory_clock_mhz", "MHz", "memory clock", True, "clock", source="nvml"),
    _c("pcie_rx_bytes_per_s", "bytes/s", "PCIe rx", True, "pcie", source="nvml"),
    _c("pcie_tx_bytes_per_s", "bytes/s", "PCIe tx", True, "pcie", source="nvml"),
    _c("throttle_reasons", "bitmask", "throttle reasons", True, "other", HIDDEN, source="nvml"),
    _c("gpu_lost", "flag", "GPU lost", True, "other", HIDDEN, source="nvml"),
    # PyTorch's CUDA caching allocator at each step's end (collectors/cuda_memory.py): no role, so
    # the devices table's memory figures stay NVML's (what the allocator holds is less than used)
    _c(CUDA_ALLOCATED, "bytes", "allocated (torch)", True, "device_memory", source="cuda_memory"),
    _c(CUDA_RESERVED, "bytes", "reserved (torch)", True, "device_memory", source="cuda_memory"),
    _c(CUDA_MAX_ALLOCATED, "bytes", "peak allocated (torch)", True, "device_memory", source="cuda_memory"),
    _c(CUDA_MAX_RESERVED, "bytes", "peak reserved (torch)", True, "device_memory", HIDDEN, source="cuda_memory"),
    # libtpu runtime metrics (collectors/tpu.py)
    _c("tpu_duty_cycle_percent", "%", "duty cycle", True, "device_util", UTILISATION, source="tpu"),
    _c("hbm_used_bytes", "bytes", "HBM used", True, "device_memory", MEMORY_USED, source="tpu"),
    _c("hbm_total_bytes", "bytes", "HBM total", True, "device_memory", MEMORY_TOTAL, CAPACITY, source="tpu"),
    _c("tpu_lost", "flag", "TPU service lost", True, "other", HIDDEN, source="tpu"),
    # the host (collectors/host.py)
    _c("process_cpu_percent", "%", "this process", False, "cpu", source="host"),
    _c("children_cpu_percent", "%", "child processes", False, "cpu", source="host"),
    _c("system_cpu_percent", "%", "whole system", False, "cpu", source="host"),
    _c("process_rss_bytes", "bytes", "process RSS", False, "memory", source="host"),
    _c("children_rss_bytes", "bytes", "children RSS", False, "memory", source="host"),
    _c("system_memory_used_bytes", "bytes", "system used", False, "memory", source="host"),
    _c("system_memory_available_bytes", "bytes", "system available", False, "memory", HIDDEN, source="host"),
    _c("children_count", "count", "child processes", False, "count", source="host"),
)
BY_NAME: dict[str, Counter] = {c.name: c for c in TABLE}


# The collectors, as people name them where a figure says where it came from.
SOURCE_LABEL = {"nvml": "NVML", "tpu": "TPU", "host": "host", "cuda_memory": "torch.cuda"}


def with_role(role: str) -> tuple[str, ...]:
    """The names of the counters with ``role``, in table order."""
    return tuple(c.name for c in TABLE if role in c.roles)


def label(name: str) -> str:
    """What people call counter ``name`` ("HBM used"); the name itself when it is not in the table."""
    c = BY_NAME.get(name)
    return c.label if c is not None else name


def described(name: str) -> str:
    """The counter's label with the collector that measured it ("NVML utilisation", "TPU duty
    cycle"), for figures that say where a number came from."""
    c = BY_NAME.get(name)
    if c is None:
        return name
    source = SOURCE_LABEL.get(c.source, c.source)
    return f"{source} {c.label}" if source else c.label


# A device's own utilisation counter, named for people ("NVML utilisation").
UTILISATION_SOURCE: dict[str, str] = {name: described(name) for name in with_role(UTILISATION)}
