"""The Device and host metrics section's data: sampled counters as line series, one panel
per quantity (no Plotly here; ``figures.metrics_figure`` draws them).

Accelerator panels come first (utilisation, memory, power, temperature, clocks, PCIe: NVML
for GPUs, libtpu's runtime metrics for TPUs), then the host's (CPU, memory, processes). A
panel appears only when one of its counters was recorded. Device series are labelled with
their device (``cuda:0 utilisation``), so several GPUs share a panel; a rank is added when
the run holds several. Counters this module does not know go to an "other" panel by unit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from accelscope.traces import counters


@dataclass(frozen=True)
class Panel:
    key: str
    title: str  # the y axis title, without its unit
    unit: str  # "%", "bytes" (shown in MiB or GiB), "W", "°C", "MHz", "bytes/s" (shown in MB/s), ""
    device: bool  # an accelerator panel: labels start with the device
    height_px: int = 140


PANELS = (
    Panel("device_util", "Accelerator busy", "%", True),
    Panel("device_memory", "Accelerator memory", "bytes", True),
    Panel("power", "Power", "W", True, 110),
    Panel("temperature", "Temperature", "°C", True, 110),
    Panel("clock", "Clocks", "MHz", True, 110),
    Panel("pcie", "PCIe", "bytes/s", True, 110),
    Panel("cpu", "Host CPU", "%", False),
    Panel("memory", "Host memory", "bytes", False),
    Panel("count", "Processes", "", False, 90),
    Panel("other_percent", "Other", "%", False, 110),
    Panel("other_bytes", "Other", "bytes", False, 110),
    Panel("other", "Other", "", False, 110),
)
PANEL = {p.key: p for p in PANELS}

# counter -> (panel, what the label says), from the table of known counters (traces/counters.py).
COUNTERS = {c.name: (c.panel, c.label) for c in counters.TABLE if counters.HIDDEN not in c.roles}
# Capacities, drawn dashed: the line a used-memory series can reach.
CAPACITY_COUNTERS = frozenset(counters.with_role(counters.CAPACITY))
# Left out: a scale that would flatten everything else, a bitmask, and lost/recovered markers.
HIDDEN_COUNTERS = frozenset(counters.with_role(counters.HIDDEN))
GIB = 1024**3
MIB = 1024**2


@dataclass
class Series:
    name: str  # counter name
    label: str
    group: str  # panel key
    x_ms: np.ndarray  # ms since the run's start
    y: np.ndarray  # in the panel's display unit (Metrics.units); NaN where a sample was missing
    device: str | None = None
    capacity: bool = False  # a capacity line (total memory): drawn dashed


@dataclass
class Metrics:
    """The series to draw, in panel order, and each shown panel's display unit."""

    series: list[Series]
    units: dict[str, str]  # panel key -> unit as shown ("%", "GiB", "MiB", "W", "MB/s", ...)

    @property
    def panels(self) -> list[Panel]:
        shown = {s.group for s in self.series}
        return [p for p in PANELS if p.key in shown]

    def __bool__(self) -> bool:
        return bool(self.series)


def _panel_of(name: str) -> str | None:
    if name in HIDDEN_COUNTERS:
        return None
    if name in COUNTERS:
        return COUNTERS[name][0]
    if name.endswith("_percent"):
        return "other_percent"
    if name.endswith("_bytes"):
        return "other_bytes"
    return "other"


def _display_unit(panel: Panel, peak: float) -> tuple[str, float]:
    """(unit shown, divisor) for a panel whose largest raw value is ``peak``."""
    if panel.unit == "bytes":
        return ("GiB", GIB) if peak >= 2 * GIB else ("MiB", MIB)
    if panel.unit == "bytes/s":
        return "MB/s", 1e6
    return panel.unit, 1.0


def build_metrics(counters: pl.DataFrame, origin_ns: int) -> Metrics:
    """Line series per (counter, device, rank), in panel order; empty when nothing was sampled."""
    if counters.height == 0:
        return Metrics([], {})
    multi_rank = counters["rank"].n_unique() > 1
    order = {name: i for i, name in enumerate(COUNTERS)}
    groups = counters.partition_by(["name", "device", "rank"], as_dict=True, maintain_order=True)
    picked: list[tuple[str, str, str | None, int, pl.DataFrame]] = []
    peaks: dict[str, float] = {}
    for (name, device, rank), df in groups.items():
        panel = _panel_of(name)
        if panel is None:
            continue
        values = df["value"].to_numpy().astype(np.float64)
        finite = values[np.isfinite(values)]
        if panel == "count" and not np.abs(finite).sum():
            continue  # an all-zero count (no child processes) says nothing
        picked.append((panel, name, device, rank, df))
        if finite.size:
            peaks[panel] = max(peaks.get(panel, 0.0), float(np.abs(finite).max()))
    units: dict[str, str] = {}
    divisors: dict[str, float] = {}
    for key in {p[0] for p in picked}:
        units[key], divisors[key] = _display_unit(PANEL[key], peaks.get(key, 0.0))
    panel_rank = {p.key: i for i, p in enumerate(PANELS)}
    picked.sort(key=lambda p: (panel_rank[p[0]], p[2] or "", order.get(p[1], len(order)), p[1], p[3]))
    out: list[Series] = []
    for panel, name, device, rank, df in picked:
        df = df.sort("time_ns")
        values = df["value"].to_numpy().astype(np.float64) / divisors[panel]  # nulls become NaN
        what = COUNTERS.get(name, (panel, name))[1]
        label = f"{device} {what}" if PANEL[panel].device and device else what
        if name not in COUNTERS and device and device != "cpu":
            label += f" ({device})"
        if multi_rank:
            label += f" (rank {rank})"
        x = (df["time_ns"].to_numpy() - origin_ns) / 1e6
        y = np.where(np.isfinite(values), values, np.nan)  # a missing sample: a gap in the line
        out.append(Series(name, label, panel, x, y, device if PANEL[panel].device else None, name in CAPACITY_COUNTERS))
    return Metrics(out, units)
