"""The Device and host metrics section's data: sampled counters as line series, one panel
per quantity (no Plotly here; ``figures.metrics_figure`` draws them).

Accelerator panels come first (utilisation, memory, power, temperature, clocks, PCIe: NVML
for GPUs, libtpu's runtime metrics for TPUs), then the host's (CPU, memory, processes). A
panel appears only when one of its counters was recorded. Device series are labelled with
their device (``cuda:0 utilisation``), so several GPUs share a panel; a rank is added when
the run holds several. Which panel a counter is drawn in, its label, whether it is a
capacity (drawn dashed) or hidden all come from the table of known counters
(``traces/counters.py``); counters not in it go to an "other" panel by unit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from accelscope.traces import counters as K


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
    """The panel a counter is drawn in; None for a hidden one (a scale that would flatten
    everything else, a bitmask, a lost/recovered marker)."""
    known = K.BY_NAME.get(name)
    if known is not None:
        return None if K.HIDDEN in known.roles else known.panel
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
    order = {c.name: i for i, c in enumerate(K.TABLE)}
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
        known = name in K.BY_NAME
        what = K.label(name)
        label = f"{device} {what}" if PANEL[panel].device and device else what
        if not known and device and device != "cpu":
            label += f" ({device})"
        if multi_rank:
            label += f" (rank {rank})"
        x = (df["time_ns"].to_numpy() - origin_ns) / 1e6
        y = np.where(np.isfinite(values), values, np.nan)  # a missing sample: a gap in the line
        capacity = known and K.CAPACITY in K.BY_NAME[name].roles  # drawn dashed: the line a used series can reach
        out.append(Series(name, label, panel, x, y, device if PANEL[panel].device else None, capacity))
    return Metrics(out, units)
