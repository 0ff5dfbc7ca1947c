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
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import polars as pl

from accelscope.analysis import NoStepsError, Report, analyze
from accelscope.analysis.breakdown import BREAKDOWN
from accelscope.analysis.causes import CAUSE_TEXT, CAUSES
from accelscope.analysis.intervals import union
from accelscope.verdicts import VERDICT_TEXT
from accelscope.dashboard.formatting import (
    CAT_GAP,
    CAT_LAUNCH,
    CAT_MERGED,
    CAT_MERGED_GAPS,
    CAT_SLICE,
    duration_expr,
    format_duration_ns,
)
from accelscope.dashboard.lod import DEFAULT_WIDTH_PX, IntervalIndex, Merged, build_index, clamp_width_px, level_of_detail, sort_order
from accelscope.dashboard.metrics_view import Metrics, build_metrics
from accelscope.dashboard.scheduling_view import DepthSeries, Flows, Latency, SchedulingIndex
from accelscope.traces import schema as S
from accelscope.traces.run import Run

# Slices of at least one pixel drawn one by one per lane, at most (the longest; the rest are merged).
MAX_SLICES_PER_LANE = 4000
# Nested slices on one thread are drawn on sub-rows by nesting depth, up to this many.
MAX_DEPTH_ROWS = 8
# Every other step in view is drawn as a shaded band across all lanes, up to this many bands.
MAX_STEP_BANDS = 400
# Hover points are spaced this many pixels apart along long marks, at most this many per mark.
HOVER_SPACING_PX = 24
HOVER_POINTS_PER_MARK = 200
# Names in hover texts are cut to this many characters (the click panel shows them whole).
HOVER_NAME_CHARS = 80
# A merged mark's click panel lists its members' names with the most time, this many.
MERGED_TOP_NAMES = 8
# A merged mark's details cover at most this many positions (a real one holds far fewer).
MAX_MERGED_DETAILS = 2_000_000
# customdata columns of the hover points (see HoverTrace); the first three identify the mark.
HOVER_COLUMNS = ("category", "first", "last", "seconds", "count", "start_ms")

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
    total: int  # slices on this lane (in the view's window)
    shown: int  # marks drawn for them (kept slices + merged marks)
    merged: int = 0  # slices drawn inside merged marks
    lane_type: int = 1  # 0: steps, 1: host thread, 2: device stream
    rank: int | None = None
    device: str | None = None
    stream: int | None = None


@dataclass
class MarkTrace:
    """Marks of one kind as line segments: [x0, x1, NaN] per mark (ms, row)."""

    name: str  # trace name: a kind, "step (odd)", "idle gap"
    kind: str  # legend group and colour
    merged: bool  # marks standing for several slices shorter than a pixel
    x_ms: np.ndarray
    y: np.ndarray
    marks: int
    slices: int

    @property
    def segments(self) -> int:
        """Segments drawn: merged marks less than a pixel apart on a row are drawn as one."""
        return int(self.x_ms.size // 3)


@dataclass
class HoverTrace:
    """Invisible points carrying one category of marks' hover texts and click data.

    One point per mark, more along long marks (plotly hovers points, not lines). Numbers
    travel in ``custom`` (columns HOVER_COLUMNS) and are formatted by the ``template``, so
    the per-point ``text`` is short plain text (a name, a cause) or absent.
    """

    name: str
    template: str  # plotly hovertemplate
    x_ms: np.ndarray
    y: np.ndarray
    text: list[str] | None
    custom: np.ndarray  # (n, len(HOVER_COLUMNS)) float64, or float32 without the start column


@dataclass
class Timeline:
    lanes: list[Lane]
    traces: list[MarkTrace]
    hover: list[HoverTrace]
    step_bands: list[tuple[float, float]]  # (start_ms, end_ms) of every other step in view
    total_slices: int  # slices overlapping the window
    kept_slices: int  # drawn one by one
    merged_slices: int  # drawn inside merged marks
    merged_marks: int
    x_range: tuple[float, float]
    window: tuple[float, float] | None = None  # None: the whole run
    width_px: int = DEFAULT_WIDTH_PX
    bucket_ns: float = 0.0  # one pixel
    gaps_in_view: int = 0
    flows: Flows | None = None
    queue: list[DepthSeries] = field(default_factory=list)
    latency: Latency | None = None

    @property
    def rows(self) -> int:
        return sum(lane.rows for lane in self.lanes)

    @property
    def marks(self) -> int:
        return self.kept_slices + self.merged_marks


@dataclass
class Details:
    """What the panel under the timeline says about a clicked mark."""

    title: str
    kind: str
    rows: list[tuple[str, str]]  # (label, value)
    table_header: tuple[str, ...] = ()
    table: list[tuple[str, ...]] = field(default_factory=list)  # a gap's causes, a merged mark's names


# The slow steps of a first view, by cache key (a whole-run timeline is "timeline" or
# "timeline@<width>"), in the order they run; the page shows them while a large run loads.
STAGES = {
    "slices": "reading the events",
    "report": "analysing steps and idle gaps",
    "lanes": "laying out the lanes",
    "scheduling": "matching launches to kernels",
    "timeline": "drawing the whole run",
}


@dataclass(frozen=True)
class Stage:
    """One step of preparing a run: ``seconds`` so far (running) or in all (done, failed)."""

    label: str
    state: str  # "running", "done" or "failed"
    seconds: float
    error: str = ""


class RunView:
    """One run as the dashboard sees it. Every property is computed once, on first use.

    Each cached value has its own lock, so independent ones (the analysis, the lane
    layout, the scheduling tables) can be computed at the same time by ``prepare``.
    The slow ones (``STAGES``) record when they ran, for ``progress``.
    """

    def __init__(self, run: Run, label: str, max_slices_per_lane: int = MAX_SLICES_PER_LANE):
        self.run = run
        self.label = label
        self.max_slices_per_lane = max_slices_per_lane
        self._lock = threading.Lock()  # guards _locks and _stages
        self._locks: dict[str, threading.RLock] = {}
        self._cache: dict[str, Any] = {}
        self._stages: dict[str, list] = {}  # stage key -> [start, end or None, error]

    def _cached(self, key: str, build):
        if key in self._cache:
            return self._cache[key]
        with self._lock:
            lock = self._locks.setdefault(key, threading.RLock())
        with lock:
            if key not in self._cache:
                stage = key.split("@")[0]
                if stage not in STAGES:
                    self._cache[key] = build()
                    return self._cache[key]
                with self._lock:
                    record = self._stages[stage] = [time.monotonic(), None, ""]
                try:
                    self._cache[key] = build()
                except BaseException as exc:
                    with self._lock:
                        record[1], record[2] = time.monotonic(), f"{type(exc).__name__}: {exc}".splitlines()[0]
                    raise
                with self._lock:
                    record[1] = time.monotonic()
            return self._cache[key]

    def progress(self) -> list[Stage]:
        """The stages of preparing this run that have started, in ``STAGES`` order."""
        now = time.monotonic()
        with self._lock:
            records = {k: list(v) for k, v in self._stages.items()}
        out = []
        for key, label in STAGES.items():
            if key in records:
                start, end, error = records[key]
                state = "failed" if error else "running" if end is None else "done"
                out.append(Stage(label, state, (end if end is not None else now) - start, error))
        return out

    def slice_count(self) -> int | None:
        """How many slices the run holds, once they are read (None before)."""
        slices = self._cache.get("slices")
        return None if slices is None else slices.height

    def prepare(self, width_px: int | None = DEFAULT_WIDTH_PX) -> None:
        """Compute what the first view needs: the events, then the analysis beside the lane
        layout and the scheduling tables, in two threads (Polars and numpy release the GIL),
        then the whole-run timeline ``width_px`` wide (not when None: the width is not known yet)."""
        self.slices
        with ThreadPoolExecutor(2, thread_name_prefix="accelscope-prepare") as pool:
            jobs = [pool.submit(lambda: self.report), pool.submit(lambda: (self.lane_layout, self.scheduling))]
            for job in jobs:
                job.result()
        if width_px is not None:
            self.timeline_window(0.0, self.end_ms, width_px)

    @property
    def slices(self) -> pl.DataFrame:
        """The run's slices, read once (``Run`` itself does not lock: two threads would both read)."""
        return self._cached("slices", lambda: self.run.slices)

    # -- clock -------------------------------------------------------------------------
    @property
    def origin_ns(self) -> int:
        """Time zero of every plot: the run's start (never after its first event or sample)."""

        def build() -> int:
            candidates = []
            start = self.run.meta.get("start_ns")
            if isinstance(start, int):
                candidates.append(start)
            ev, ct = self.slices, self.run.counters
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
            ev, ct = self.slices, self.run.counters
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
            self.slices  # read under our lock; analyze then finds it in the run's cache
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
        return self._cached("lanes", lambda: build_lane_layout(self.slices, self.run.thread_names()))

    @property
    def gap_layout(self) -> GapLayout | None:
        """The analyzer's idle gaps of each device, placed on the device's first lane row."""

        def build() -> GapLayout | None:
            rep = self.report
            if rep is None or not rep.has_device or rep.gaps.height == 0:
                return None
            return build_gap_layout(rep.gaps, self.lane_layout)

        return self._cached("gaps", build)

    @property
    def scheduling(self) -> SchedulingIndex | None:
        """Launches and queue depths for the scheduling panels; None without matched launches."""

        def build() -> SchedulingIndex | None:
            layout = self.lane_layout
            if not layout.lanes or not any(lane.lane_type == 2 for lane in layout.lanes):
                return None
            ix = SchedulingIndex.build(self.slices, layout.table, layout.kinds)
            return ix if ix.launches or ix.depth else None

        return self._cached("scheduling", build)

    @property
    def timeline(self) -> Timeline:
        """The whole run, at the default width."""
        return self._cached("timeline", lambda: self._view(None, DEFAULT_WIDTH_PX))

    def timeline_window(self, start_ms: float, end_ms: float, width_px: float | None = None) -> Timeline:
        """The view of [start_ms, end_ms] (ms since run start) drawn ``width_px`` pixels wide.

        A window covering the run gives the whole-run view (computed once per width).
        """
        width = clamp_width_px(width_px) if width_px is not None else DEFAULT_WIDTH_PX
        lo, hi = max(0.0, float(start_ms)), min(self.end_ms, float(end_ms))
        if hi <= lo:
            hi = lo + 1e-6
        if lo <= 0.0 and hi >= self.end_ms:
            return self.timeline if width == DEFAULT_WIDTH_PX else self._cached(f"timeline@{width}", lambda: self._view(None, width))
        return self._view((lo, hi), width)

    def _view(self, window_ms: tuple[float, float] | None, width_px: int) -> Timeline:
        layout, origin = self.lane_layout, self.origin_ns
        tl = build_timeline(layout, origin, self.end_ms, window_ms, width_px, self.max_slices_per_lane)
        if not tl.lanes:
            return tl
        a_ns, b_ns = window_ns(origin, tl.x_range)
        gaps = self.gap_layout
        if gaps is not None:
            tl = add_gaps(tl, gaps, origin, a_ns, b_ns)
        sched = self.scheduling
        if sched is not None:
            tl.flows = sched.flows(a_ns, b_ns, origin)
            tl.queue = sched.queue(a_ns, b_ns, origin, tl.width_px)
            tl.latency = sched.latency(a_ns, b_ns, origin, tl.width_px, layout.hover_names, layout.name_code)
        return tl

    def details(self, custom: Any) -> Details | None:
        """The details of a clicked mark from its ids (category, first, last position: the first
        three customdata columns); None for anything that names no mark of this run."""
        if not (isinstance(custom, (list, tuple)) and 3 <= len(custom) <= len(HOVER_COLUMNS)):
            return None
        ids = custom[:3]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and float(v).is_integer() for v in ids):
            return None
        cat, a, b = (int(v) for v in ids)
        layout = self.lane_layout
        n = layout.table.height
        if cat in (CAT_SLICE, CAT_LAUNCH) and 0 <= a < n:
            return slice_details(self, a)
        if cat == CAT_MERGED and 0 <= a <= b < n and b - a < MAX_MERGED_DETAILS:
            return merged_details(self, a, b)
        gaps = self.gap_layout
        if gaps is None:
            return None
        if cat == CAT_GAP and 0 <= a < gaps.table.height:
            return gap_details(self, a)
        if cat == CAT_MERGED_GAPS and 0 <= a <= b < gaps.table.height and b - a < MAX_MERGED_DETAILS:
            return merged_gap_details(self, a, b)
        return None

    def name_table(self, kinds: Sequence[str]) -> list[dict[str, Any]]:
        """Rows for a sortable table: time per name over the whole run, longest first.

        Shares are of the step time of the steady steps the framework profiler traced
        (``Report.traced_ns``: ops and kernels exist only there), as in the analyzer's tables.
        """
        def build() -> list[dict[str, Any]]:
            rep = self.report
            by_name = None
            if rep is not None:  # the analyzer's own tables, when they are of these kinds
                by_name = {frozenset((S.KERNEL, S.MEMCPY, S.MEMSET)): rep.kernels_by_name, frozenset((S.CPU_OP,)): rep.ops_by_name}.get(frozenset(kinds))
            if by_name is None:
                return []
            table = by_name.head(TABLE_ROWS)
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

    # -- metrics -----------------------------------------------------------------------
    @property
    def metrics(self) -> Metrics:
        return self._cached("metrics", lambda: build_metrics(self.run.counters, self.origin_ns))


# -- timeline construction -------------------------------------------------------------------
@dataclass
class LaneLayout:
    """Every slice of a run placed on its lane and row, sorted and indexed once per run.

    Rows come from nesting depth over *all* slices, so the layout stays put while the
    browser zooms. ``table`` is in index order (row, start, longest first): position i of
    every array here is row i of the table.
    """

    lanes: list[Lane]  # total = slices on the lane; shown filled per view
    table: pl.DataFrame  # start_ns, dur_ns, kind_code, name_code, row, lane, step_i, rank, stream, pid, tid, correlation_id
    index: IntervalIndex
    kinds: list[str]  # kind_code -> kind
    names: pl.Series  # name_code -> name
    hover_names: pl.Series  # name_code -> HTML-escaped, shortened name
    kind_code: np.ndarray
    name_code: np.ndarray
    step_i: np.ndarray  # step number of step slices, -1 for the others
    lane_of_row: np.ndarray
    n_steps: int


def _empty_layout() -> LaneLayout:
    e = np.empty(0, dtype=np.int64)
    ix = build_index(e, e, e.astype(np.int32), 0)
    table = pl.DataFrame(schema={"start_ns": pl.Int64, "dur_ns": pl.Int64, "kind_code": pl.Int16, "name_code": pl.Int32, "row": pl.Int32, "correlation_id": pl.Int64, "rank": pl.Int32})
    return LaneLayout([], table, ix, list(S.KINDS), pl.Series([], dtype=pl.String), pl.Series([], dtype=pl.String), e, e, e, e, 0)


def _lane_keys(events: pl.DataFrame, thread_names: dict[tuple[int, int], str]) -> tuple[np.ndarray, pl.DataFrame]:
    """Each event's lane (an id in display order), and the lanes: id, type, rank, device,
    stream, pid, tid, label. Steps get a lane of their own."""
    multi_rank = events["rank"].n_unique() > 1
    is_device = pl.col("kind").is_in(list(S.DEVICE_KINDS)) | pl.col("stream").is_not_null()
    lane_type = pl.when(pl.col("kind") == S.STEP).then(pl.lit(0)).when(is_device).then(pl.lit(2)).otherwise(pl.lit(1))
    key_cols = ["lane_type", "rank", "device", "stream", "pid", "tid"]
    # Steps belong to the steps lane whichever thread marked them.
    ev = events.select(
        lane_type.alias("lane_type"),
        "rank",
        *[pl.when(pl.col("kind") == S.STEP).then(pl.lit(None)).otherwise(pl.col(c)).alias(c) for c in ("device", "stream", "pid", "tid")],
    )
    # A dense id per distinct key, from a hash grouping (a struct's rank sorts: 2.5x slower at 6M).
    groups = ev.with_row_index("_i").group_by(key_cols).agg(pl.col("_i")).with_row_index("_code")
    members = groups.select("_code", "_i").explode("_i")
    code = np.empty(ev.height, dtype=np.int64)
    code[members["_i"].to_numpy()] = members["_code"].to_numpy()
    keys = groups.drop("_i").with_columns(pl.col("_code").cast(pl.Int64))
    labels, order = [], []
    for lane_type_, rank, device, stream, pid, tid in keys.select(key_cols).iter_rows():  # one row per lane
        if lane_type_ == 0:
            label = STEPS_LANE
        elif lane_type_ == 2:
            label = f"{device} stream {stream}" if stream is not None else f"{device}"
        elif pid is None and tid is None:
            label = f"{device} (no thread)"
        else:
            label = thread_names.get((pid, tid)) or f"{pid}/{tid}"
        if multi_rank:
            label = f"rank {rank} · {label}"
        labels.append(label)
        training = 0 if "(training)" in label else 1
        # Steps lanes first (every rank's, in rank order), then each rank's threads and streams.
        order.append((rank if lane_type_ else -1, lane_type_, training, -1 if pid is None else pid, -1 if tid is None else tid, device or "", -1 if stream is None else stream, rank))
    keys = keys.with_columns(lane_label=pl.Series(labels, dtype=pl.String))
    sorted_idx = sorted(range(keys.height), key=lambda i: order[i])
    keys = keys[sorted_idx].with_row_index("lane_id")
    lane_of_code = np.empty(keys.height, dtype=np.int64)
    lane_of_code[keys["_code"].to_numpy()] = np.arange(keys.height)
    return lane_of_code[code], keys.drop("_code")


def _depths(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Nesting depth of each slice: how many slices are open when it starts.

    Input sorted by start, then longest first. Vectorised: slice i is preceded by i
    slices, of which those ending at or before its start are closed.
    """
    ends = np.maximum(ends, starts + 1)  # a zero-length slice must not close its parent early
    closed = np.searchsorted(np.sort(ends), starts, side="right")
    return np.maximum(np.arange(starts.size) - closed, 0)


def _hover_name_table(names: pl.Series) -> pl.Series:
    """Each distinct name once: HTML-escaped and shortened for hover texts."""
    return pl.Series([html.escape(n if len(n) <= HOVER_NAME_CHARS else n[: HOVER_NAME_CHARS - 1] + "…") for n in names.to_list()], dtype=pl.String)


def build_lane_layout(events: pl.DataFrame, thread_names: dict[tuple[int, int], str]) -> LaneLayout:
    if events.height == 0:
        return _empty_layout()
    lane_of_event, keys = _lane_keys(events, thread_names)
    start = events["start_ns"].to_numpy()
    dur = events["dur_ns"].to_numpy()
    order = np.lexsort((-dur, start, lane_of_event))  # by lane, start, longest first
    lane_ids = lane_of_event[order]
    starts = start[order]
    ends = starts + dur[order]
    rows = np.zeros(order.size, dtype=np.int32)
    bounds = np.flatnonzero(np.diff(lane_ids)) + 1
    lo_hi = list(zip(np.concatenate(([0], bounds)), np.concatenate((bounds, [order.size]))))
    lanes: list[Lane] = []
    lane_rows: list[int] = []
    row0 = 0
    info = {int(r[0]): r for r in keys.iter_rows()}
    for lo, hi in lo_hi:  # one vectorised pass per lane
        lane_id = int(lane_ids[lo])
        _, lane_type, rank, device, stream, _pid, _tid, label = info[lane_id]
        if lane_type == 0:
            depth = np.zeros(hi - lo, dtype=np.int64)  # steps follow one another
        else:
            depth = np.minimum(_depths(starts[lo:hi], ends[lo:hi]), MAX_DEPTH_ROWS - 1)
        n_rows = int(depth.max()) + 1
        rows[lo:hi] = row0 + depth
        lanes.append(Lane(key=(lane_id,), label=label, row0=row0, rows=n_rows, total=int(hi - lo), shown=0, lane_type=int(lane_type), rank=rank, device=device, stream=stream))
        lane_rows += [len(lanes) - 1] * n_rows
        row0 += n_rows
    # Index order: by row, then start (a stable sort keeps the lane order's start order).
    by_row = np.argsort(rows, kind="stable")
    final = order[by_row]
    kinds = list(S.KINDS) + sorted(set(events["kind"].unique().to_list()) - set(S.KINDS))
    names = events["name"].unique().sort()
    table = events.select(
        "start_ns",
        "dur_ns",
        kind_code=pl.col("kind").replace_strict(kinds, list(range(len(kinds))), return_dtype=pl.Int16),
        name_code=pl.col("name").replace_strict(names, pl.int_range(names.len(), eager=True), return_dtype=pl.Int32),
        lane=pl.Series(lane_of_event, dtype=pl.Int32),
        # Steps are numbered as the analyzer numbers them: by start time.
        step_i=pl.when(pl.col("kind") == S.STEP).then(pl.col("start_ns").rank("ordinal").over("kind").cast(pl.Int64) - 1).otherwise(-1),
        rank="rank",
        stream="stream",
        pid="pid",
        tid="tid",
        correlation_id="correlation_id",
    )[final].with_columns(row=pl.Series(rows[by_row], dtype=pl.Int32))
    index = build_index(table["start_ns"].to_numpy(), table["dur_ns"].to_numpy(), table["row"].to_numpy(), row0)
    n_steps = int((events["kind"] == S.STEP).sum())
    return LaneLayout(
        lanes=lanes,
        table=table,
        index=index,
        kinds=kinds,
        names=names,
        hover_names=_hover_name_table(names),
        kind_code=table["kind_code"].to_numpy(),
        name_code=table["name_code"].to_numpy(),
        step_i=table["step_i"].to_numpy(),
        lane_of_row=np.asarray(lane_rows, dtype=np.int64),
        n_steps=n_steps,
    )


def window_ns(origin_ns: int, span_ms: tuple[float, float]) -> tuple[int, int]:
    """A window in ms since the run's start as absolute [a_ns, b_ns)."""
    return origin_ns + int(np.floor(span_ms[0] * 1e6)), origin_ns + int(np.ceil(span_ms[1] * 1e6))


def _segments_xy(x0_ns: np.ndarray, x1_ns: np.ndarray, rows: np.ndarray, origin_ns: int) -> tuple[np.ndarray, np.ndarray]:
    """[x0, x1, NaN] per mark, in ms since the run's start, and the rows to match."""
    n = x0_ns.size
    x = np.empty(3 * n, dtype=np.float64)
    x[0::3] = (x0_ns - origin_ns) / 1e6
    x[1::3] = (x1_ns - origin_ns) / 1e6
    x[2::3] = np.nan
    y = np.empty(3 * n, dtype=np.float32)
    y[0::3] = rows
    y[1::3] = rows
    y[2::3] = np.nan
    return x, y


def _coalesce(x0_ns: np.ndarray, x1_ns: np.ndarray, rows: np.ndarray, gap_ns: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merged marks drawn as one segment where they follow each other on a row less than a
    pixel apart (the picture is the same; drawing is paid per segment). Input sorted by (row, x0).
    Hover points stay one per mark."""
    if x0_ns.size < 2:
        return x0_ns, x1_ns, rows
    brk = np.ones(x0_ns.size, dtype=bool)
    brk[1:] = (rows[1:] != rows[:-1]) | (x0_ns[1:] - x1_ns[:-1] > gap_ns)
    starts = np.flatnonzero(brk)
    return x0_ns[starts], np.maximum.reduceat(x1_ns, starts), rows[starts]


def _clip_marks(start_ns: np.ndarray, end_ns: np.ndarray, a_ns: int, b_ns: int, min_ns: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Marks drawn from their start to their end, at most one window width beyond the window
    (slices reaching far outside cost nothing extra), and at least ``min_ns`` long."""
    width = b_ns - a_ns
    x0 = np.maximum(start_ns, a_ns - width)
    x1 = np.minimum(end_ns, b_ns + width)
    if min_ns > 0:  # integer ns: absolute times in float64 would lose ~256 ns
        x1 = np.maximum(x1, x0 + int(np.ceil(min_ns)))
    return x0, x1


def _hover_points(x0_ns: np.ndarray, x1_ns: np.ndarray, a_ns: int, b_ns: int, spacing_ns: float) -> tuple[np.ndarray, np.ndarray]:
    """Hover points per mark: its visible middle, or points every ``spacing_ns`` along long ones.

    Returns (mark index, x in ns after a_ns) per point: plotly hovers points, not lines.
    """
    lo = (np.maximum(x0_ns, a_ns) - a_ns).astype(np.float64)  # relative: absolute ns overflow float64 precision
    hi = np.maximum((np.minimum(x1_ns, b_ns) - a_ns).astype(np.float64), lo)
    n = np.clip(np.ceil((hi - lo) / max(spacing_ns, 1e-9)), 1, HOVER_POINTS_PER_MARK).astype(np.int64)
    mark = np.repeat(np.arange(x0_ns.size), n)
    j = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
    return mark, lo[mark] + (hi - lo)[mark] * (j + 0.5) / n[mark]


def _hover_trace(
    name: str,
    template: str,
    x0_ns: np.ndarray,
    x1_ns: np.ndarray,
    rows: np.ndarray,
    a_ns: int,
    b_ns: int,
    spacing_ns: float,
    origin_ns: int,
    category: int,
    first: np.ndarray,
    last: np.ndarray,
    dur_ns: np.ndarray,
    count: np.ndarray,
    start_ns: np.ndarray,
    text: pl.Series | None,
    with_start: bool = True,
) -> HoverTrace:
    """Hover points for marks [x0, x1] on ``rows`` (one per mark, more along long ones).

    ``with_start``: the customdata carries each mark's start (ms, float64); merged marks
    leave it out and travel as float32.
    """
    mark, x = _hover_points(x0_ns, x1_ns, a_ns, b_ns, spacing_ns)
    # float32 (half the bytes) holds positions exactly below 2**24; the start (ms) needs float64.
    exact32 = max(int(last.max()) if last.size else 0, int(first.max()) if first.size else 0) < 2**24
    columns = len(HOVER_COLUMNS) if with_start else len(HOVER_COLUMNS) - 1
    custom = np.empty((mark.size, columns), dtype=np.float32 if exact32 and not with_start else np.float64)
    custom[:, 0] = category
    custom[:, 1] = first[mark]
    custom[:, 2] = last[mark]
    custom[:, 3] = dur_ns[mark] / 1e9
    custom[:, 4] = count[mark]
    if with_start:
        custom[:, 5] = np.round((start_ns[mark] - origin_ns) / 1e6, 6)
    return HoverTrace(
        name=name,
        template=template,
        x_ms=(a_ns - origin_ns) / 1e6 + x / 1e6,
        y=rows[mark].astype(np.int16 if rows.size == 0 or rows.max() < 2**15 else np.int32),
        text=text.gather(mark).to_list() if text is not None else None,
        custom=custom,
    )


def _slice_template(kind: str) -> str:
    return f"<b>%{{text}}</b><br>{html.escape(kind)} · %{{customdata[3]:.3~s}}s<br>at %{{customdata[5]:,.3f}} ms<extra></extra>"


def _merged_template(noun: str, busy: str, mostly: str, longest: bool) -> str:
    text = f"<b>%{{customdata[4]:,}} {noun}</b>, %{{customdata[3]:.3~s}}s {busy}<br>mostly {html.escape(mostly)}"
    if longest:
        text += "<br>longest: %{text}"
    return text + "<br>zoom in to see them one by one<extra></extra>"


def build_timeline(
    layout: LaneLayout,
    origin_ns: int,
    end_ms: float,
    window_ms: tuple[float, float] | None = None,
    width_px: int = DEFAULT_WIDTH_PX,
    max_per_lane: int = MAX_SLICES_PER_LANE,
) -> Timeline:
    """The marks of the whole run or a window of it, ``width_px`` pixels wide (see lod.py).

    Slices of at least a pixel are drawn one by one (at most ``max_per_lane`` per lane, the
    longest); shorter ones are merged per row and pixel into marks that say how many
    slices and how much busy time they stand for. Zooming in brings the slices back.
    """
    full = (0.0, max(end_ms, 1e-3))
    span = window_ms if window_ms is not None else full
    if not layout.lanes:
        return Timeline([], [], [], [], 0, 0, 0, 0, full, None, width_px)
    a_ns, b_ns = window_ns(origin_ns, span)
    det = level_of_detail(layout.index, layout.kind_code, len(layout.kinds), a_ns, b_ns, width_px, layout.lane_of_row, max_per_lane)
    ix, m = layout.index, det.merged
    spacing_ns = HOVER_SPACING_PX * det.bucket_ns

    traces: list[MarkTrace] = []
    kept = det.kept
    kept_kind = layout.kind_code[kept]
    x0, x1 = _clip_marks(ix.start_ns[kept], ix.end_ns[kept], a_ns, b_ns)
    m_x0, m_x1 = _clip_marks(m.start_ns, m.end_ns, a_ns, b_ns, det.bucket_ns)
    step_code = layout.kinds.index(S.STEP)
    for code, kind in enumerate(layout.kinds):
        sel = np.flatnonzero(kept_kind == code)
        if sel.size:
            if code == step_code:
                odd = layout.step_i[kept[sel]] % 2 == 1
                groups = [(S.STEP, sel[~odd]), (f"{S.STEP} (odd)", sel[odd])]
            else:
                groups = [(kind, sel)]
            for name, part in groups:
                if part.size:
                    x, y = _segments_xy(x0[part], x1[part], ix.row[kept[part]], origin_ns)
                    traces.append(MarkTrace(name, kind, False, x, y, int(part.size), int(part.size)))
        msel = np.flatnonzero(m.code == code)
        if msel.size:
            x, y = _segments_xy(*_coalesce(m_x0[msel], m_x1[msel], m.row[msel], det.bucket_ns), origin_ns)
            traces.append(MarkTrace(f"{kind} (merged)", kind, True, x, y, int(msel.size), int(m.count[msel].sum())))

    # Hover points: one per mark (more along long marks), per kind so the template names it.
    hover: list[HoverTrace] = []
    ones = np.ones(kept.size, dtype=np.int64)
    k_dur = layout.table["dur_ns"].to_numpy()[kept]
    warm = (layout.step_i[kept] == 0) & (layout.n_steps >= 3)
    k_names = pl.DataFrame({"n": layout.hover_names.gather(layout.name_code[kept]), "w": warm}).select(
        pl.when(pl.col("w")).then(pl.concat_str([pl.col("n"), pl.lit(" (warm-up)")])).otherwise(pl.col("n"))
    ).to_series()
    for code in np.unique(kept_kind):
        sel = np.flatnonzero(kept_kind == code)
        kind = layout.kinds[int(code)]
        hover.append(
            _hover_trace(
                f"{kind} details", _slice_template(kind), x0[sel], x1[sel], ix.row[kept[sel]], a_ns, b_ns, spacing_ns, origin_ns,
                CAT_SLICE, kept[sel], kept[sel], k_dur[sel], ones[sel], ix.start_ns[kept[sel]], k_names.gather(sel),
            )
        )
    m_names = layout.hover_names.gather(layout.name_code[m.longest])
    for code in np.unique(m.code):
        sel = np.flatnonzero(m.code == code)
        kind = layout.kinds[int(code)]
        hover.append(
            _hover_trace(
                f"{kind} merged details", _merged_template("slices", "busy", kind, True), m_x0[sel], m_x1[sel], m.row[sel], a_ns, b_ns, spacing_ns,
                origin_ns, CAT_MERGED, m.first[sel], m.last[sel], m.busy_ns[sel], m.count[sel], m.start_ns[sel], m_names.gather(sel), False,
            )
        )

    # Per lane: slices in view, marks drawn, slices merged.
    n_lanes = len(layout.lanes)
    kept_lane = np.bincount(layout.lane_of_row[ix.row[kept]], minlength=n_lanes)
    m_lane = layout.lane_of_row[m.row]
    merged_lane = np.bincount(m_lane, weights=m.count, minlength=n_lanes).astype(np.int64)
    marks_lane = np.bincount(m_lane, minlength=n_lanes)
    lanes = [
        dataclasses.replace(lane, total=int(kept_lane[i] + merged_lane[i]), shown=int(kept_lane[i] + marks_lane[i]), merged=int(merged_lane[i]))
        for i, lane in enumerate(layout.lanes)
    ]
    return Timeline(
        lanes=lanes,
        traces=traces,
        hover=hover,
        step_bands=_step_bands(layout, origin_ns, a_ns, b_ns),
        total_slices=det.in_window,
        kept_slices=int(kept.size),
        merged_slices=m.slices,
        merged_marks=m.size,
        x_range=span,
        window=window_ms,
        width_px=int(width_px),
        bucket_ns=det.bucket_ns,
    )


def _step_bands(layout: LaneLayout, origin_ns: int, a_ns: int, b_ns: int) -> list[tuple[float, float]]:
    """Every other step overlapping the window, as (start_ms, end_ms), when at most MAX_STEP_BANDS."""
    if layout.n_steps == 0:
        return []
    lane = next((lane for lane in layout.lanes if lane.lane_type == 0), None)
    if lane is None:
        return []
    ix = layout.index
    lo, hi = ix.row_bounds[lane.row0], ix.row_bounds[lane.row0 + lane.rows]
    start, end, step = ix.start_ns[lo:hi], ix.end_ns[lo:hi], layout.step_i[lo:hi]
    sel = (step % 2 == 1) & (start < b_ns) & (end > a_ns)
    if int(sel.sum()) > MAX_STEP_BANDS:
        return []
    s = (start[sel] - origin_ns) / 1e6
    e = (end[sel] - origin_ns) / 1e6
    return list(zip(s.tolist(), e.tolist()))


# -- idle gaps ------------------------------------------------------------------------------------
@dataclass
class GapLayout:
    """The analyzer's idle gaps on their device's first row, in index order (row, start)."""

    table: pl.DataFrame  # rep.gaps columns + row
    index: IntervalIndex
    cause_code: np.ndarray  # position of the gap's cause in CAUSES
    cause_ns: np.ndarray  # (gaps x CAUSES) idle time per cause


def build_gap_layout(gaps: pl.DataFrame, layout: LaneLayout) -> GapLayout | None:
    rows: dict[tuple[int, str], int] = {}
    for lane in layout.lanes:  # one entry per lane
        if lane.lane_type == 2 and lane.device is not None and lane.device != "cpu":
            rows.setdefault((int(lane.rank), lane.device), lane.row0)
    if not rows:
        return None
    lookup = pl.DataFrame(
        {"rank": [k[0] for k in rows], "device": [k[1] for k in rows], "row": list(rows.values())},
        schema={"rank": pl.Int32, "device": pl.String, "row": pl.Int32},
    )
    g = gaps.join(lookup, on=["rank", "device"], how="inner")
    if g.height == 0:
        return None
    g = g[sort_order(g["start_ns"].to_numpy(), g["dur_ns"].to_numpy(), g["row"].to_numpy())]
    index = build_index(g["start_ns"].to_numpy(), g["dur_ns"].to_numpy(), g["row"].to_numpy(), layout.index.n_rows)
    cause_code = g["cause"].replace_strict(list(CAUSES), list(range(len(CAUSES))), default=len(CAUSES) - 1, return_dtype=pl.Int16).to_numpy()
    cause_ns = g.select([f"{c}_ns" for c in CAUSES]).to_numpy()
    return GapLayout(g, index, cause_code, cause_ns)


def _gap_causes(gl: GapLayout, pos: np.ndarray) -> pl.Series:
    """'waiting for input (waiting for input 57 ms, host compute 1 ms)': a gap's cause and its top three parts."""
    ns = gl.cause_ns[pos]
    top = np.argsort(-ns, axis=1, kind="stable")[:, :3]
    val = np.take_along_axis(ns, top, axis=1)
    cause_text = pl.Series([CAUSE_TEXT[c] for c in CAUSES], dtype=pl.String)
    df = pl.DataFrame(
        {
            "cause": cause_text.gather(gl.cause_code[pos]),
            **{f"c{j}": cause_text.gather(top[:, j]) for j in range(top.shape[1])},
            **{f"v{j}": val[:, j] for j in range(top.shape[1])},
        }
    )
    detail = pl.concat_str(
        [pl.when(pl.col(f"v{j}") > 0).then(pl.concat_str([pl.col(f"c{j}"), pl.lit(" "), duration_expr(pl.col(f"v{j}"))])) for j in range(top.shape[1])],
        separator=", ",
        ignore_nulls=True,
    )
    return df.select(pl.concat_str([pl.col("cause"), pl.lit(" ("), detail, pl.lit(")")])).to_series()


GAP_TEMPLATE = (
    "<b>idle: %{text}</b><br>" + IDLE_GAP + " · %{customdata[3]:.3~s}s<br>at %{customdata[5]:,.3f} ms · click for the breakdown<extra></extra>"
)


def add_gaps(tl: Timeline, gl: GapLayout, origin_ns: int, a_ns: int, b_ns: int) -> Timeline:
    """Draw the idle gaps of the window over the device lanes, with the same level of detail."""
    det = level_of_detail(gl.index, gl.cause_code, len(CAUSES), a_ns, b_ns, tl.width_px)
    ix, m, kept = gl.index, det.merged, det.kept
    if det.in_window == 0:
        return tl
    x0, x1 = _clip_marks(ix.start_ns[kept], ix.end_ns[kept], a_ns, b_ns)
    m_x0, m_x1 = _clip_marks(m.start_ns, m.end_ns, a_ns, b_ns, det.bucket_ns)
    if kept.size:
        x, y = _segments_xy(x0, x1, ix.row[kept], origin_ns)
        tl.traces.append(MarkTrace(IDLE_GAP, IDLE_GAP, False, x, y, int(kept.size), int(kept.size)))
    if m.size:
        x, y = _segments_xy(*_coalesce(m_x0, m_x1, m.row, det.bucket_ns), origin_ns)
        tl.traces.append(MarkTrace(f"{IDLE_GAP} (merged)", IDLE_GAP, True, x, y, m.size, m.slices))
    spacing_ns = HOVER_SPACING_PX * det.bucket_ns
    if kept.size:
        tl.hover.append(
            _hover_trace(
                "idle gap details", GAP_TEMPLATE, x0, x1, ix.row[kept], a_ns, b_ns, spacing_ns, origin_ns,
                CAT_GAP, kept, kept, gl.table["dur_ns"].to_numpy()[kept], np.ones(kept.size, np.int64), ix.start_ns[kept], _gap_causes(gl, kept),
            )
        )
    for code in np.unique(m.code):
        sel = np.flatnonzero(m.code == code)
        tl.hover.append(
            _hover_trace(
                "idle gap merged details", _merged_template("idle gaps", "idle", CAUSE_TEXT[CAUSES[int(code)]], False), m_x0[sel], m_x1[sel], m.row[sel],
                a_ns, b_ns, spacing_ns, origin_ns, CAT_MERGED_GAPS, m.first[sel], m.last[sel], m.busy_ns[sel], m.count[sel], m.start_ns[sel], None, False,
            )
        )
    tl.gaps_in_view = det.in_window
    return tl


# -- click details ------------------------------------------------------------------------------------
def _fmt_ms(view: RunView, ns: int) -> str:
    return f"{(ns - view.origin_ns) / 1e6:,.3f} ms"


def slice_details(view: RunView, pos: int) -> Details:
    layout = view.lane_layout
    r = layout.table.row(pos, named=True)
    lane = layout.lanes[int(layout.lane_of_row[r["row"]])]
    kind = layout.kinds[r["kind_code"]]
    rows = [
        ("kind", kind),
        ("start", _fmt_ms(view, r["start_ns"])),
        ("duration", format_duration_ns(r["dur_ns"])),
        ("end", _fmt_ms(view, r["start_ns"] + r["dur_ns"])),
        ("stream" if lane.lane_type == 2 else "thread" if lane.lane_type == 1 else "lane", lane.label),
    ]
    if lane.lane_type == 1 and r["pid"] is not None:
        rows.append(("pid / tid", f"{r['pid']} / {r['tid']}"))
    if r["step_i"] >= 0:
        rows.append(("step", str(r["step_i"])))
    if r["correlation_id"] is not None:
        rows.append(("correlation id", str(r["correlation_id"])))
    sched = view.scheduling
    if sched is not None and kind in S.DEVICE_KINDS:
        hit = np.flatnonzero(sched.device_pos == pos)
        if hit.size:
            i = int(hit[0])
            rows.append(("launched at", _fmt_ms(view, int(sched.launch_start_ns[i]))))
            rows.append(("launch → start", format_duration_ns(int(sched.latency_ns[i]))))
    return Details(str(layout.names[int(r["name_code"])]), kind, rows)


def merged_details(view: RunView, first: int, last: int) -> Details:
    layout = view.lane_layout
    ix = layout.index
    sl = slice(first, last + 1)
    row = int(ix.row[first])
    sl_rows = ix.row[sl]
    keep = np.flatnonzero(sl_rows == row) + first
    start, end = ix.start_ns[keep], ix.end_ns[keep]
    us, ue = union(start, end)
    lane = layout.lanes[int(layout.lane_of_row[row])]
    df = pl.DataFrame({"name": layout.name_code[keep], "dur": end - start}).group_by("name").agg(pl.len().alias("n"), pl.col("dur").sum()).sort("dur", descending=True).head(MERGED_TOP_NAMES)
    table = [(str(layout.names[int(c)]), f"{n:,}", format_duration_ns(d)) for c, n, d in df.iter_rows()]
    rows = [
        ("slices", f"{keep.size:,}"),
        ("busy (union)", format_duration_ns(int((ue - us).sum()))),
        ("from", _fmt_ms(view, int(start.min()))),
        ("to", _fmt_ms(view, int(end.max()))),
        ("lane", lane.label),
    ]
    return Details(f"{keep.size:,} slices merged into one mark (zoom in to see them)", "merged", rows, ("name", "slices", "time"), table)


def gap_details(view: RunView, pos: int) -> Details:
    gl = view.gap_layout
    assert gl is not None
    r = gl.table.row(pos, named=True)
    dur = max(int(r["dur_ns"]), 1)
    rows = [
        ("device", f"rank {r['rank']} · {r['device']}" if view.lane_layout.table["rank"].n_unique() > 1 else str(r["device"])),
        ("start", _fmt_ms(view, r["start_ns"])),
        ("duration", format_duration_ns(r["dur_ns"])),
        ("step", str(r["step"])),
        ("main cause", CAUSE_TEXT[r["cause"]]),
    ]
    parts = sorted(((r[f"{c}_ns"], c) for c in CAUSES if r[f"{c}_ns"] > 0), key=lambda p: -p[0])
    table = [(CAUSE_TEXT[c], format_duration_ns(v), f"{v / dur:.0%}") for v, c in parts]
    return Details(f"idle: {CAUSE_TEXT[r['cause']]}", IDLE_GAP, rows, ("cause", "time", "share of gap"), table)


def merged_gap_details(view: RunView, first: int, last: int) -> Details:
    gl = view.gap_layout
    assert gl is not None
    sl = slice(first, last + 1)
    row = int(gl.index.row[first])
    keep = np.flatnonzero(gl.index.row[sl] == row) + first
    idle = int((gl.index.end_ns[keep] - gl.index.start_ns[keep]).sum())
    by_cause = gl.cause_ns[keep].sum(axis=0)
    order = np.argsort(-by_cause, kind="stable")
    table = [(CAUSE_TEXT[CAUSES[i]], format_duration_ns(int(by_cause[i])), f"{by_cause[i] / max(idle, 1):.0%}") for i in order if by_cause[i] > 0]
    rows = [
        ("idle gaps", f"{keep.size:,}"),
        ("idle time", format_duration_ns(idle)),
        ("from", _fmt_ms(view, int(gl.index.start_ns[keep].min()))),
        ("to", _fmt_ms(view, int(gl.index.end_ns[keep].max()))),
    ]
    return Details(f"{keep.size:,} idle gaps merged into one mark (zoom in to see them)", IDLE_GAP, rows, ("cause", "time", "share"), table)
