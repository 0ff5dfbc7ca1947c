"""The timeline's launch panels, from the report's launch tables: no Dash, no Plotly here.

* launch -> kernel flows: a line from each host launch call starting in the window to the
  device work it launched, only when few enough are in view;
* queue depth per stream (``Report.launches.depth``), reduced per pixel with its peaks kept;
* launch-to-start latency over time (``Report.launches.latency``), one point per device
  operation, thinned to one per 3x3-pixel cell (about a marker's size) when the window holds many, with the
  median and p90 of every launch in the window.

``SchedulingIndex.build`` sorts everything once per run; a window is then binary searches
and vectorised selections.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from accelscope.analysis.launches import Launches
from accelscope.dashboard.formatting import CAT_LAUNCH
from accelscope.dashboard.timeline.lod import step_envelope, thin_points
from accelscope.traces import schema as S

# Flows are drawn only when at most this many launches fall in the window.
MAX_FLOWS = 500
# The latency plot shows every launch up to this many, then one per cell of THIN_CELL_PX
# square (the 4 px markers would overlap in smaller ones): each point is an SVG node.
MAX_LATENCY_POINTS = 2000
THIN_CELL_PX = 3.0
LATENCY_PLOT_PX = 170  # plot height the thinning assumes (figures.py draws it this tall)


@dataclass
class Flows:
    """Launch -> device-work lines of a window: [launch, device start, NaN] triplets."""

    in_view: int  # launches starting in the window
    x_ms: np.ndarray
    y: np.ndarray

    @property
    def shown(self) -> int:
        return int(self.x_ms.size // 3)


@dataclass
class DepthSeries:
    label: str
    x_ms: np.ndarray
    depth: np.ndarray
    max_in_view: int


@dataclass
class LatencySeries:
    label: str
    x_ms: np.ndarray  # device start, ms since run start
    latency_us: np.ndarray
    text: list[str] | None  # the op's name; None when thinned (the hover shows the numbers only)
    custom: np.ndarray  # (n, 6) float64, columns as marks.HOVER_COLUMNS: CAT_LAUNCH, position x2, latency s, 1, launch ms (float32 without it when thinned)


@dataclass
class Latency:
    in_view: int  # launches whose device work starts in the window
    median_ns: float | None
    p90_ns: float | None
    run_median_ns: float | None
    run_p90_ns: float | None
    series: list[LatencySeries] = field(default_factory=list)
    thinned: bool = False  # one point per cell of cell_px square instead of every launch
    cell_px: float = 0.0

    @property
    def shown(self) -> int:
        return sum(s.x_ms.size for s in self.series)


def _stream_label(rank: int, device: str, stream: int | None, multi_rank: bool) -> str:
    label = f"{device} stream {stream}" if stream is not None else str(device)
    return f"rank {rank} · {label}" if multi_rank else label


@dataclass
class SchedulingIndex:
    """Launches and queue depths of one run, sorted for window queries; built once per run."""

    # launches, sorted by launch start
    launch_start_ns: np.ndarray
    start_ns: np.ndarray
    latency_ns: np.ndarray
    launch_row: np.ndarray  # timeline row of the launching runtime call (-1: not on the timeline)
    device_row: np.ndarray
    device_pos: np.ndarray  # position of the device slice in the lane layout's table (-1: none)
    stream_code: np.ndarray
    stream_labels: list[str]
    by_start: np.ndarray  # launches ordered by device start
    depth: list[tuple[str, np.ndarray, np.ndarray]]  # (label, time_ns, depth) per stream
    run_median_ns: float | None
    run_p90_ns: float | None

    @property
    def launches(self) -> int:
        return int(self.start_ns.size)

    @classmethod
    def build(cls, launches: Launches, table: pl.DataFrame, kinds: list[str], multi_rank: bool) -> SchedulingIndex:
        """``launches``: the report's launch section (latency and queue depth tables, the
        run's median and p90 latency); ``table``: the lane layout's table (one row per slice,
        in index order, with ``row`` and ``kind_code``, a position in ``kinds``)."""
        lat, depth_tab = launches.latency, launches.depth
        code = {k: i for i, k in enumerate(kinds)}
        pos = table.select("rank", "correlation_id", "start_ns", "kind_code", "row").with_row_index("pos").filter(pl.col("correlation_id").is_not_null())
        runtime = pos.filter(pl.col("kind_code") == code.get(S.RUNTIME, -1)).unique(["rank", "correlation_id", "start_ns"], keep="first")
        device = pos.filter(pl.col("kind_code").is_in([code[k] for k in S.DEVICE_KINDS if k in code])).unique(["rank", "correlation_id", "start_ns"], keep="first")
        lat = (
            lat.join(
                runtime.select("rank", "correlation_id", pl.col("start_ns").alias("launch_start_ns"), pl.col("row").alias("launch_row")),
                on=["rank", "correlation_id", "launch_start_ns"],
                how="left",
            )
            .join(
                device.select("rank", "correlation_id", "start_ns", pl.col("row").alias("device_row"), pl.col("pos").alias("device_pos")),
                on=["rank", "correlation_id", "start_ns"],
                how="left",
            )
            .with_columns(
                stream_label=pl.concat_str(
                    [pl.lit("rank ") + pl.col("rank").cast(pl.String) + pl.lit(" · ") if multi_rank else pl.lit(""), pl.col("device"), pl.lit(" stream "), pl.col("stream").cast(pl.String).fill_null("?")]
                )
            )
            .sort("launch_start_ns")
        )
        labels = lat["stream_label"].unique().sort()
        depth = []
        for (rank, dev, stream), g in depth_tab.group_by(["rank", "device", "stream"], maintain_order=True):
            depth.append((_stream_label(rank, dev, stream, multi_rank), g["time_ns"].to_numpy(), g["depth"].to_numpy()))
        latency = lat["latency_ns"].to_numpy()
        start = lat["start_ns"].to_numpy()
        return cls(
            launch_start_ns=lat["launch_start_ns"].to_numpy(),
            start_ns=start,
            latency_ns=latency,
            launch_row=lat["launch_row"].fill_null(-1).to_numpy().astype(np.int64),
            device_row=lat["device_row"].fill_null(-1).to_numpy().astype(np.int64),
            device_pos=lat["device_pos"].cast(pl.Int64).fill_null(-1).to_numpy(),
            stream_code=labels.search_sorted(lat["stream_label"]).to_numpy().astype(np.int64),
            stream_labels=labels.to_list(),
            by_start=np.argsort(start, kind="stable"),
            depth=depth,
            run_median_ns=launches.median_ns,
            run_p90_ns=launches.p90_ns,
        )

    # -- one window ----------------------------------------------------------------------
    def flows(self, a_ns: int, b_ns: int, origin_ns: int, max_flows: int = MAX_FLOWS) -> Flows:
        """Lines from each launch that starts in [a_ns, b_ns) to its device work (wherever that
        starts); none when more than max_flows."""
        lo = int(np.searchsorted(self.launch_start_ns, a_ns, side="left"))
        hi = int(np.searchsorted(self.launch_start_ns, b_ns, side="left"))
        cand = np.arange(lo, hi)
        sel = cand[(self.launch_row[cand] >= 0) & (self.device_row[cand] >= 0)]
        if sel.size == 0 or sel.size > max_flows:
            return Flows(int(sel.size), np.empty(0), np.empty(0, np.float32))
        x = np.stack(((self.launch_start_ns[sel] - origin_ns) / 1e6, (self.start_ns[sel] - origin_ns) / 1e6, np.full(sel.size, np.nan)), axis=1).ravel()
        y = np.stack((self.launch_row[sel], self.device_row[sel], np.full(sel.size, np.nan)), axis=1).ravel().astype(np.float32)
        return Flows(int(sel.size), x, y)

    def queue(self, a_ns: int, b_ns: int, origin_ns: int, width_px: int) -> list[DepthSeries]:
        out = []
        for label, t, d in self.depth:
            tt, dd = step_envelope(t, d, a_ns, b_ns, width_px)
            out.append(DepthSeries(label, (tt - origin_ns) / 1e6, dd.astype(np.int32), int(dd.max()) if dd.size else 0))
        return out

    def latency(self, a_ns: int, b_ns: int, origin_ns: int, width_px: int, hover_names: pl.Series, name_code: np.ndarray) -> Latency:
        """Launch-to-start latencies of the launches whose device work starts in [a_ns, b_ns)."""
        order = self.by_start
        s_sorted = self.start_ns[order]
        sel = order[int(np.searchsorted(s_sorted, a_ns, side="left")) : int(np.searchsorted(s_sorted, b_ns, side="left"))]
        n = int(sel.size)
        if n == 0:
            return Latency(0, None, None, self.run_median_ns, self.run_p90_ns)
        lat = self.latency_ns[sel]
        median, p90 = (float(v) for v in np.percentile(lat, [50, 90]))
        x_ms = (self.start_ns[sel] - origin_ns) / 1e6
        thinned = n > MAX_LATENCY_POINTS
        if thinned:
            x_lo, x_hi = (a_ns - origin_ns) / 1e6, (b_ns - origin_ns) / 1e6
            y_lo, y_hi = float(min(lat.min(), 0)), float(lat.max())
            cell = THIN_CELL_PX
            keep = thin_points(x_ms, lat.astype(np.float64), x_lo, x_hi, y_lo, y_hi, width_px, LATENCY_PLOT_PX, cell)
            while keep.size > MAX_LATENCY_POINTS:  # a few rounds at most: cells grow by half each time
                cell *= 1.5
                keep = thin_points(x_ms, lat.astype(np.float64), x_lo, x_hi, y_lo, y_hi, width_px, LATENCY_PLOT_PX, cell)
            sel, x_ms, lat = sel[keep], x_ms[keep], lat[keep]
        pos = self.device_pos[sel]
        # Numbers travel in customdata; the text is the op's name, left out when thinned.
        custom = np.empty((sel.size, 6), dtype=np.float64)
        custom[:, 0] = CAT_LAUNCH
        custom[:, 1] = pos
        custom[:, 2] = pos
        custom[:, 3] = lat / 1e9
        custom[:, 4] = 1
        custom[:, 5] = np.round((self.launch_start_ns[sel] - origin_ns) / 1e6, 6)
        if thinned:  # the hover shows latency and start only: float32 halves the bytes
            custom = custom[:, :5].astype(np.float32) if int(pos.max(initial=0)) < 2**24 else custom[:, :5]
        names = None if thinned else hover_names.gather(name_code[np.maximum(pos, 0)])
        series = []
        codes = self.stream_code[sel]
        for code in np.unique(codes):  # one series per stream
            m = np.flatnonzero(codes == code)
            texts = names.gather(m).to_list() if names is not None else None
            series.append(LatencySeries(self.stream_labels[int(code)], x_ms[m], lat[m] / 1e3, texts, custom[m]))
        return Latency(n, median, p90, self.run_median_ns, self.run_p90_ns, series, thinned, cell if thinned else 0.0)

