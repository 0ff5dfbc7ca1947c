"""What the dashboard shows, computed from a run directory: no Dash, no Plotly here.

Everything is derived from the trace model (``accelscope.traces.run.Run``) and the
analyzer (``accelscope.analysis``); the dashboard never talks to collectors. Each
``RunView`` computes its tables once and caches them, so switching between runs in the
browser costs nothing after the first visit.
"""

from __future__ import annotations

import dataclasses
import html
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import polars as pl

from accelscope.analysis import VERDICT_TEXT, NoStepsError, Report, analyze, time_per_name
from accelscope.causes import CAUSE_TEXT, CAUSES
from accelscope.breakdown import BREAKDOWN
from accelscope.traces import schema as S
from accelscope.traces.run import Run

# The timeline sends at most this many slices per lane to the browser (the longest ones).
MAX_SLICES_PER_LANE = 3000
# Nested slices on one thread are drawn on sub-rows by nesting depth, up to this many.
MAX_DEPTH_ROWS = 8
# Step boundaries are drawn as shaded bands across all lanes up to this many steps.
MAX_STEP_BANDS = 400
# Hover points per timeline row across the whole run (see _segments).
HOVER_POINTS_PER_ROW = 400

STEPS_LANE = "steps"
# Rows sent to each kernel/op table (the longest by total time); the browser sorts and filters them.
TABLE_ROWS = 500
IDLE_GAP = "idle gap"


# -- labels ------------------------------------------------------------------------------
def run_labels(paths: Sequence[Path]) -> list[str]:
    """Short, unique labels for runs: the directory name, with parents added where names clash.

    The same directory given twice gets a number: ``run``, ``run (2)``.
    """
    resolved = [Path(p).resolve() for p in paths]
    distinct = list(dict.fromkeys(resolved))
    depth = {p: 1 for p in distinct}

    def label(p: Path) -> str:
        return "/".join(p.parts[-depth[p]:]) if depth[p] < len(p.parts) else str(p)

    while True:
        labels = {p: label(p) for p in distinct}
        counts: dict[str, int] = {}
        for lab in labels.values():
            counts[lab] = counts.get(lab, 0) + 1
        clashing = [p for p in distinct if counts[labels[p]] > 1 and depth[p] < len(p.parts)]
        if not clashing:
            break
        for p in clashing:
            depth[p] += 1
    out: list[str] = []
    seen: dict[Path, int] = {}
    for p in resolved:
        seen[p] = seen.get(p, 0) + 1
        out.append(labels[p] if seen[p] == 1 else f"{labels[p]} ({seen[p]})")
    return out


def format_duration_ns(ns: float) -> str:
    """A duration for people: 41.1 ms, 552 µs, 2.35 s."""
    ns = float(ns)
    if ns >= 1e9:
        return f"{ns / 1e9:.3g} s" if ns < 1e11 else f"{ns / 1e9:,.0f} s"
    if ns >= 1e6:
        return f"{ns / 1e6:.3g} ms" if ns < 1e8 else f"{ns / 1e6:.0f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.3g} µs" if ns < 1e5 else f"{ns / 1e3:.0f} µs"
    return f"{ns:.0f} ns"


# -- overview ----------------------------------------------------------------------------
@dataclass
class Overview:
    """The numbers on the overview cards, as the analyzer computed them."""

    steps: int
    mean_step_ms: float | None
    input_wait_share: float | None
    verdict: str | None  # "high" | "moderate" | "none"; None when no steps were recorded
    verdict_text: str
    notes: list[str] = field(default_factory=list)
    recommendations: list[str] = field(default_factory=list)

    @property
    def steps_text(self) -> str:
        return str(self.steps)

    @property
    def mean_step_text(self) -> str:
        return "—" if self.mean_step_ms is None else f"{self.mean_step_ms:,.1f} ms"

    @property
    def input_share_text(self) -> str:
        return "—" if self.input_wait_share is None else f"{self.input_wait_share * 100:.1f}%"


@dataclass
class StepBars:
    """One row per step, in ms: input wait, the rest of the step, and the analyzer's
    breakdown (``parts``: category -> ms per step, categories that occur, in priority order)."""

    step: list[int]
    name: list[str]
    input_wait_ms: list[float]
    rest_ms: list[float]
    share: list[float]
    warmup: list[bool]
    mean_step_ms: float | None
    parts: list[tuple[str, list[float]]] = field(default_factory=list)


# -- timeline ----------------------------------------------------------------------------
@dataclass
class Lane:
    key: tuple
    label: str
    row0: int  # first row (0 = top)
    rows: int  # number of rows (nesting depths shown)
    total: int  # slices recorded on this lane
    shown: int  # slices sent to the browser


@dataclass
class KindSegments:
    """Line segments of one kind: x/y/hover text with None separators, ready for Scattergl."""

    kind: str
    x: list[float | None]
    y: list[float | None]
    text: list[str | None]
    slices: int


@dataclass
class Timeline:
    lanes: list[Lane]
    segments: list[KindSegments]  # one per kind present (steps split into two alternating shades)
    step_bands: list[tuple[float, float]]  # (start_ms, end_ms) of every other step
    total_slices: int
    shown_slices: int
    max_per_lane: int
    x_range: tuple[float, float]
    window: tuple[float, float] | None = None  # None: the whole run

    @property
    def dropped(self) -> int:
        return self.total_slices - self.shown_slices

    @property
    def rows(self) -> int:
        return sum(lane.rows for lane in self.lanes)


# -- metrics -----------------------------------------------------------------------------
CPU_COUNTERS = {
    "process_cpu_percent": "this process",
    "children_cpu_percent": "child processes",
    "system_cpu_percent": "whole system",
}
MEMORY_COUNTERS = {
    "process_rss_bytes": "process RSS",
    "children_rss_bytes": "children RSS",
    "system_memory_used_bytes": "system used",
}
COUNT_COUNTERS = {"children_count": "child processes"}
# Counters left out of the plots: on a scale that would flatten everything else.
HIDDEN_COUNTERS = frozenset({"system_memory_available_bytes"})


@dataclass
class Series:
    name: str  # counter name
    label: str
    group: str  # "cpu" | "memory" | "count"
    x_ms: list[float]
    y: list[float | None]


def _counter_group(name: str) -> str | None:
    if name in HIDDEN_COUNTERS:
        return None
    if name.endswith("_percent"):
        return "cpu"
    if name.endswith("_bytes"):
        return "memory"
    return "count"


class RunView:
    """One run as the dashboard sees it. Every property is computed once, on first use."""

    def __init__(self, run: Run, label: str, max_slices_per_lane: int = MAX_SLICES_PER_LANE):
        self.run = run
        self.label = label
        self.max_slices_per_lane = max_slices_per_lane
        self._lock = threading.RLock()
        self._cache: dict[str, Any] = {}

    def _cached(self, key: str, build):
        with self._lock:
            if key not in self._cache:
                self._cache[key] = build()
            return self._cache[key]

    # -- clock -------------------------------------------------------------------------
    @property
    def origin_ns(self) -> int:
        """Time zero of every plot: the run's start (never after its first event or sample)."""

        def build() -> int:
            candidates = []
            start = self.run.meta.get("start_ns")
            if isinstance(start, int):
                candidates.append(start)
            ev, ct = self.run.slices, self.run.counters
            if ev.height:
                candidates.append(int(ev["start_ns"].min()))
            if ct.height:
                candidates.append(int(ct["time_ns"].min()))
            return min(candidates) if candidates else 0

        return self._cached("origin", build)

    @property
    def end_ms(self) -> float:
        def build() -> float:
            candidates = []
            end = self.run.meta.get("end_ns")
            if isinstance(end, int):
                candidates.append(end)
            ev, ct = self.run.slices, self.run.counters
            if ev.height:
                candidates.append(int((ev["start_ns"] + ev["dur_ns"]).max()))
            if ct.height:
                candidates.append(int(ct["time_ns"].max()))
            return (max(candidates) - self.origin_ns) / 1e6 if candidates else 0.0

        return self._cached("end", build)

    # -- analysis ----------------------------------------------------------------------
    @property
    def report(self) -> Report | None:
        """The analyzer's report, or None when the run recorded no steps."""

        def build() -> Report | None:
            try:
                return analyze(self.run)
            except NoStepsError:
                return None

        return self._cached("report", build)

    @property
    def overview(self) -> Overview:
        def build() -> Overview:
            rep = self.report
            if rep is None:
                notes = list(self.run.read_warnings)
                notes.append("no steps recorded: call prof.step() once per training step")
                return Overview(0, None, None, None, "no steps recorded", notes, [])
            return Overview(
                steps=rep.n_steps,
                mean_step_ms=rep.mean_step_ns / 1e6 if np.isfinite(rep.mean_step_ns) else None,
                input_wait_share=rep.input_wait_share,
                verdict=rep.verdict,
                verdict_text=VERDICT_TEXT[rep.verdict],
                notes=list(rep.notes),
                recommendations=list(rep.recommendations),
            )

        return self._cached("overview", build)

    @property
    def step_bars(self) -> StepBars:
        def build() -> StepBars:
            rep = self.report
            if rep is None:
                return StepBars([], [], [], [], [], [], None)
            st = rep.steps
            dur = st["dur_ns"].to_numpy().astype(np.float64) / 1e6
            wait = st["input_wait_ns"].to_numpy().astype(np.float64) / 1e6
            parts = [(c, (st[f"{c}_ns"].to_numpy() / 1e6).tolist()) for c in BREAKDOWN if st[f"{c}_ns"].sum() > 0]
            return StepBars(
                step=st["step"].to_list(),
                name=st["name"].to_list(),
                input_wait_ms=wait.tolist(),
                rest_ms=(dur - wait).tolist(),
                share=st["input_wait_share"].to_list(),
                warmup=st["warmup"].to_list(),
                mean_step_ms=self.overview.mean_step_ms,
                parts=parts,
            )

        return self._cached("step_bars", build)

    @property
    def info(self) -> list[str]:
        """Facts about the run for the header line."""
        meta = self.run.meta
        out = []
        start = meta.get("start_ns")
        if isinstance(start, int):
            out.append(datetime.fromtimestamp(start / 1e9).strftime("%Y-%m-%d %H:%M:%S"))
        out.append(f"{format_duration_ns(self.end_ms * 1e6)} recorded")
        if meta.get("host"):
            out.append(f"host {meta['host']}")
        fw = meta.get("framework") or {}
        if isinstance(fw, dict) and fw.get("name") and fw.get("name") != "none":
            out.append(" ".join(str(x) for x in (fw.get("name"), fw.get("version")) if x))
        if meta.get("mode"):
            out.append(f"{meta['mode']} mode")
        devices = [d.get("id") for d in meta.get("devices", []) if isinstance(d, dict) and d.get("id")]
        if devices:
            out.append("devices " + ", ".join(devices))
        collectors = meta.get("collectors") or {}
        bad = [f"{name} {c.get('status')}" for name, c in collectors.items() if isinstance(c, dict) and c.get("status") != "ok"]
        if bad:
            out.append("collectors: " + ", ".join(bad))
        return out

    # -- timeline ----------------------------------------------------------------------
    @property
    def lane_layout(self) -> LaneLayout:
        return self._cached("lanes", lambda: build_lane_layout(self.run.slices, self.run.thread_names()))

    @property
    def timeline(self) -> Timeline:
        """The whole run."""
        return self._cached("timeline", lambda: self._with_gaps(build_timeline(self.lane_layout, self.origin_ns, self.end_ms, None, self.max_slices_per_lane)))

    def timeline_window(self, start_ms: float, end_ms: float) -> Timeline:
        """The slices overlapping [start_ms, end_ms] (ms since run start), capped per lane."""
        lo, hi = max(0.0, float(start_ms)), min(self.end_ms, float(end_ms))
        if hi <= lo or (lo <= 0.0 and hi >= self.end_ms):
            return self.timeline
        return self._with_gaps(build_timeline(self.lane_layout, self.origin_ns, self.end_ms, (lo, hi), self.max_slices_per_lane))

    def name_table(self, kinds: Sequence[str]) -> list[dict[str, Any]]:
        """Rows for a sortable table: time per name over the whole run, longest first.

        Shares are of the steady-state step time (warm-up left out), as in the overview.
        """
        def build() -> list[dict[str, Any]]:
            ev = self.run.slices
            rep = self.report
            total = rep.steady_ns if rep is not None and rep.steady_ns else int(ev["dur_ns"].sum()) or 1
            table = time_per_name(ev, list(kinds), total, limit=TABLE_ROWS)
            return [
                {
                    "name": r["name"],
                    "kind": r["kind"],
                    "count": r["count"],
                    "total_ms": round(r["total_ns"] / 1e6, 3),
                    "mean_us": round(r["mean_ns"] / 1e3, 2),
                    "max_us": round(r["max_ns"] / 1e3, 2),
                    "share_pct": round(100 * r["share_of_step_time"], 2),
                }
                for r in table.iter_rows(named=True)
            ]

        return self._cached(f"table:{','.join(kinds)}", build)

    def _with_gaps(self, tl: Timeline) -> Timeline:
        """Add the analyzer's idle gaps of each device, on the device's first lane, with their cause."""
        rep = self.report
        if rep is None or not rep.has_device or rep.gaps.height == 0 or not tl.lanes:
            return tl
        rows: dict[tuple[int, str], int] = {}
        for lane in self.lane_layout.lanes:
            label = lane.label.split(" · ", 1)[-1]
            device = label.split(" ", 1)[0]
            rank = int(lane.label.split(" · ")[0].removeprefix("rank ")) if lane.label.startswith("rank ") else None
            if device != "cpu" and ":" in device:
                for r in ([rank] if rank is not None else rep.gaps["rank"].unique().to_list()):
                    rows.setdefault((r, device), lane.row0)
        gaps = rep.gaps
        if tl.window is not None:
            a_ns = self.origin_ns + int(tl.window[0] * 1e6)
            b_ns = self.origin_ns + int(np.ceil(tl.window[1] * 1e6))
            gaps = gaps.filter((pl.col("start_ns") < b_ns) & (pl.col("end_ns") > a_ns))
        keys = list(rows)
        if not keys:
            return tl
        lookup = pl.DataFrame({"rank": [k[0] for k in keys], "device": [k[1] for k in keys], "row": [rows[k] for k in keys]}, schema={"rank": pl.Int32, "device": pl.String, "row": pl.Int64})
        gaps = gaps.join(lookup, on=["rank", "device"], how="inner").sort("dur_ns", descending=True).head(self.max_slices_per_lane)
        if gaps.height == 0:
            return tl
        cause_cols = [f"{c}_ns" for c in CAUSES]
        names = []
        for r in gaps.select("cause", *cause_cols).iter_rows(named=True):
            parts = sorted(((r[f"{c}_ns"], c) for c in CAUSES if r[f"{c}_ns"] > 0), reverse=True)[:3]
            detail = ", ".join(f"{CAUSE_TEXT[c]} {format_duration_ns(v)}" for v, c in parts)
            names.append(f"idle: {CAUSE_TEXT[r['cause']]} ({detail})")
        part = pl.DataFrame({"start_ns": gaps["start_ns"], "dur_ns": gaps["dur_ns"], "row": gaps["row"], "name": names, "kind": ["idle gap"] * gaps.height, "step_i": gaps["step"]})
        span = tl.window if tl.window is not None else tl.x_range
        return dataclasses.replace(tl, segments=tl.segments + [_segments(IDLE_GAP, part, self.origin_ns, span)])

    # -- metrics -----------------------------------------------------------------------
    @property
    def metrics(self) -> list[Series]:
        return self._cached("metrics", lambda: build_metrics(self.run.counters, self.origin_ns))


# -- timeline construction -------------------------------------------------------------------
@dataclass
class LaneLayout:
    """Every slice of a run placed on its lane and row, computed once per run.

    Rows come from nesting depth over *all* slices, so the layout stays put while the
    browser zooms and different subsets of slices are sent.
    """

    lanes: list[Lane]  # total = slices on the lane; shown filled per view
    table: pl.DataFrame  # start_ns, dur_ns, kind, name, lane_id, row, step_i
    lane_index: dict[int, int]  # lane_id -> position in lanes
    n_steps: int


def _lane_keys(events: pl.DataFrame, thread_names: dict[tuple[int, int], str]) -> pl.DataFrame:
    """Events with a lane (id, label, type); steps get a lane of their own."""
    multi_rank = events["rank"].n_unique() > 1
    is_device = pl.col("kind").is_in(list(S.DEVICE_KINDS)) | pl.col("stream").is_not_null()
    ev = events.with_columns(
        lane_type=pl.when(pl.col("kind") == S.STEP).then(pl.lit(0)).when(is_device).then(pl.lit(2)).otherwise(pl.lit(1)),
    )
    key_cols = ["lane_type", "rank", "device", "stream", "pid", "tid"]
    # Steps belong to the steps lane whichever thread marked them.
    ev = ev.with_columns(
        [pl.when(pl.col("lane_type") == 0).then(pl.lit(None)).otherwise(pl.col(c)).alias(c) for c in ("device", "stream", "pid", "tid")]
    )
    keys = ev.select(key_cols).unique()
    labels, order = [], []
    for lane_type, rank, device, stream, pid, tid in keys.iter_rows():
        if lane_type == 0:
            label = STEPS_LANE
        elif lane_type == 2:
            label = f"{device} stream {stream}" if stream is not None else f"{device}"
        elif pid is None and tid is None:
            label = f"{device} (no thread)"
        else:
            label = thread_names.get((pid, tid)) or f"{pid}/{tid}"
        if multi_rank:
            label = f"rank {rank} · {label}"
        labels.append(label)
        training = 0 if "(training)" in label else 1
        order.append((rank if lane_type else -1, lane_type, training, -1 if pid is None else pid, -1 if tid is None else tid, device or "", -1 if stream is None else stream))
    keys = keys.with_columns(lane_label=pl.Series(labels, dtype=pl.String), lane_order=pl.Series(order, dtype=pl.Object))
    sorted_idx = sorted(range(keys.height), key=lambda i: order[i])
    keys = keys[sorted_idx].drop("lane_order").with_row_index("lane_id")
    return ev.join(keys, on=key_cols, how="left", nulls_equal=True)


def _depths(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Nesting depth of each slice: how many slices are open when it starts.

    Input sorted by start, then longest first. Vectorised: slice i is preceded by i
    slices, of which those ending at or before its start are closed.
    """
    ends = np.maximum(ends, starts + 1)  # a zero-length slice must not close its parent early
    closed = np.searchsorted(np.sort(ends), starts, side="right")
    return np.maximum(np.arange(starts.size) - closed, 0)


def build_lane_layout(events: pl.DataFrame, thread_names: dict[tuple[int, int], str]) -> LaneLayout:
    if events.height == 0:
        return LaneLayout([], events.select("start_ns", "dur_ns", "kind", "name"), {}, 0)
    ev = _lane_keys(events, thread_names)
    ev = ev.sort(["lane_id", "start_ns", "dur_ns"], descending=[False, False, True])
    lane_ids = ev["lane_id"].to_numpy()
    starts = ev["start_ns"].to_numpy()
    ends = starts + ev["dur_ns"].to_numpy()
    rows = np.zeros(ev.height, dtype=np.int64)
    bounds = np.flatnonzero(np.diff(lane_ids)) + 1
    lo_hi = zip(np.concatenate(([0], bounds)), np.concatenate((bounds, [ev.height])))
    info = ev.group_by("lane_id", maintain_order=True).agg(pl.col("lane_label").first(), pl.col("lane_type").first(), pl.len().alias("total"))
    lanes: list[Lane] = []
    row0 = 0
    for (lo, hi), (lane_id, label, lane_type, total) in zip(lo_hi, info.iter_rows()):
        if lane_type == 0:
            depth = np.zeros(hi - lo, dtype=np.int64)  # steps follow one another
        else:
            depth = np.minimum(_depths(starts[lo:hi], ends[lo:hi]), MAX_DEPTH_ROWS - 1)
        n_rows = int(depth.max()) + 1
        rows[lo:hi] = row0 + depth
        lanes.append(Lane(key=(int(lane_id),), label=label, row0=row0, rows=n_rows, total=int(total), shown=0))
        row0 += n_rows
    n_steps = int((ev["kind"] == S.STEP).sum())
    table = ev.select(
        "start_ns",
        "dur_ns",
        "kind",
        "name",
        "lane_id",
        row=pl.Series(rows),
        # Steps are numbered as the analyzer numbers them: by start time.
        step_i=pl.when(pl.col("kind") == S.STEP).then(pl.col("start_ns").rank("ordinal").over("kind").cast(pl.Int64) - 1),
    )
    return LaneLayout(lanes, table, {int(lane.key[0]): i for i, lane in enumerate(lanes)}, n_steps)


def build_timeline(
    layout: LaneLayout,
    origin_ns: int,
    end_ms: float,
    window_ms: tuple[float, float] | None = None,
    max_per_lane: int = MAX_SLICES_PER_LANE,
) -> Timeline:
    """Scattergl-ready segments for the whole run or a window of it, capped per lane.

    In a window, only slices overlapping it are candidates, so zooming in brings back the
    short slices the cap left out of the whole-run view.
    """
    full = (0.0, max(end_ms, 1e-3))
    if not layout.lanes:
        return Timeline([], [], [], 0, 0, max_per_lane, full, None)
    ev = layout.table
    span = full
    if window_ms is not None:
        a, b = window_ms
        a_ns, b_ns = origin_ns + int(a * 1e6), origin_ns + int(np.ceil(b * 1e6))
        ev = ev.filter((pl.col("start_ns") < b_ns) & (pl.col("start_ns") + pl.col("dur_ns") > a_ns))
        span = (a, b)
    totals = dict(ev.group_by("lane_id").agg(pl.len()).iter_rows())
    # The cap: the longest slices of each lane survive.
    kept = ev.filter(pl.col("dur_ns").rank("ordinal", descending=True).over("lane_id") <= max_per_lane)
    shown = dict(kept.group_by("lane_id").agg(pl.len()).iter_rows())
    lanes = [
        Lane(lane.key, lane.label, lane.row0, lane.rows, int(totals.get(lane.key[0], 0)), int(shown.get(lane.key[0], 0)))
        for lane in layout.lanes
    ]
    segments: list[KindSegments] = []
    step_bands: list[tuple[float, float]] = []
    kinds_present = set(kept["kind"].unique().to_list())
    for kind in list(S.KINDS) + sorted(kinds_present - set(S.KINDS)):
        if kind not in kinds_present:
            continue
        part = kept.filter(pl.col("kind") == kind)
        if kind == S.STEP:
            warm = {0} if layout.n_steps >= 3 else set()
            for parity in (0, 1):
                sub = part.filter(pl.col("step_i") % 2 == parity)
                if sub.height:
                    segments.append(_segments(f"{S.STEP}{'' if parity == 0 else ' (odd)'}", sub, origin_ns, span, warm))
            if part.height <= MAX_STEP_BANDS:
                odd = part.filter(pl.col("step_i") % 2 == 1).sort("start_ns")
                starts = (odd["start_ns"].to_numpy() - origin_ns) / 1e6
                ends = starts + odd["dur_ns"].to_numpy() / 1e6
                step_bands = [(float(x), float(y)) for x, y in zip(starts, ends)]
        else:
            segments.append(_segments(kind, part, origin_ns, span))
    return Timeline(
        lanes=lanes,
        segments=segments,
        step_bands=step_bands,
        total_slices=sum(totals.values()),
        shown_slices=kept.height,
        max_per_lane=max_per_lane,
        x_range=span if window_ms is not None else full,
        window=window_ms,
    )


def _segments(kind: str, part: pl.DataFrame, origin_ns: int, span_ms: tuple[float, float], warmup_steps: set[int] = frozenset()) -> KindSegments:
    """Each slice becomes a run of points on its row followed by a None separator.

    Plotly hovers points, not lines, so a slice gets its start and end plus points spaced
    at most (view width / HOVER_POINTS_PER_ROW) apart: long slices stay hoverable along
    their length. Slices reaching far outside the view are drawn up to one view width
    beyond it, which bounds the extra points to a few hundred per row.
    """
    n = part.height
    start = (part["start_ns"].to_numpy() - origin_ns) / 1e6
    dur_ns = part["dur_ns"].to_numpy()
    end = start + dur_ns / 1e6
    width = max(span_ms[1] - span_ms[0], 1e-6)
    lo = np.maximum(start, span_ms[0] - width)
    hi = np.maximum(np.minimum(end, span_ms[1] + width), lo)
    spacing = width / HOVER_POINTS_PER_ROW
    npts = np.clip(np.ceil((hi - lo) / spacing).astype(np.int64) + 1, 3, 3 * HOVER_POINTS_PER_ROW + 1)
    counts = npts + 1  # + separator
    offsets = np.concatenate(([0], np.cumsum(counts)[:-1]))
    slice_of = np.repeat(np.arange(n), counts)
    j = np.arange(int(counts.sum())) - offsets[slice_of]
    is_sep = j == npts[slice_of]
    frac = np.where(is_sep, 0.0, j / (npts[slice_of] - 1))
    xs = np.round(lo[slice_of] + (hi - lo)[slice_of] * frac, 4)
    row = part["row"].to_numpy().astype(np.float64)[slice_of]
    names = part["name"].to_list()
    kinds = part["kind"].to_list()
    step_idx = part["step_i"].to_list()
    texts = []
    for i in range(n):
        name = names[i] if len(names[i]) <= 90 else names[i][:87] + "…"
        extra = " (warm-up)" if step_idx[i] in warmup_steps else ""
        texts.append(
            f"<b>{html.escape(name)}</b>{extra}<br>{html.escape(kinds[i])} · {format_duration_ns(dur_ns[i])}"
            f"<br>at {start[i]:,.3f} ms"
        )
    x = xs.astype(object)
    y = row.astype(object)
    text = np.array(texts, dtype=object)[slice_of] if n else np.array([], dtype=object)
    x[is_sep] = None
    y[is_sep] = None
    text[is_sep] = None
    return KindSegments(kind=kind, x=x.tolist(), y=y.tolist(), text=text.tolist(), slices=n)


# -- metrics construction -------------------------------------------------------------------
def build_metrics(counters: pl.DataFrame, origin_ns: int) -> list[Series]:
    """Line series per (counter, device, rank), in plot order; empty when nothing was sampled."""
    if counters.height == 0:
        return []
    multi_device = counters["device"].n_unique() > 1
    multi_rank = counters["rank"].n_unique() > 1
    order = {name: i for i, name in enumerate([*CPU_COUNTERS, *MEMORY_COUNTERS, *COUNT_COUNTERS])}
    out: list[Series] = []
    groups = counters.partition_by(["name", "device", "rank"], as_dict=True, maintain_order=True)
    for (name, device, rank), df in sorted(groups.items(), key=lambda kv: (order.get(kv[0][0], len(order)), kv[0][0], kv[0][1], kv[0][2])):
        group = _counter_group(name)
        if group is None:
            continue
        df = df.sort("time_ns")
        values = df["value"].to_numpy().astype(np.float64)
        if group == "memory":
            values = values / (1024 * 1024)
        if group == "count" and not np.nansum(np.abs(values)):
            continue  # an all-zero count (no child processes) says nothing
        label = {**CPU_COUNTERS, **MEMORY_COUNTERS, **COUNT_COUNTERS}.get(name, name)
        suffix = [x for x, show in ((device, multi_device), (f"rank {rank}", multi_rank)) if show]
        if suffix:
            label = f"{label} ({', '.join(suffix)})"
        x = np.round((df["time_ns"].to_numpy() - origin_ns) / 1e6, 3).tolist()
        y = [None if not np.isfinite(v) else round(float(v), 3) for v in values]
        out.append(Series(name=name, label=label, group=group, x_ms=x, y=y))
    return out
