"""One run's timeline: its lane layout, step numbers, idle gaps and launch index (each built
once per run and lane mode, in ``RunView``'s cache), the view of any window, and the details
of a clicked mark.

Lane modes: ``MAIN`` (default) gives each rank's main host threads a lane and folds the
others into one; ``ALL`` gives every host thread its own lane (``lanes.build_lane_layout``).
``prepare`` builds what a first view needs, the analysis beside the lane layout in two
threads (Polars and numpy release the GIL), then the launch index and the whole run.
"""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import polars as pl

from accelscope.analysis.launches import Launches
from accelscope.dashboard.formatting import CAT_GAP, CAT_LAUNCH, CAT_MERGED, CAT_MERGED_GAPS, CAT_SLICE
from accelscope.dashboard.runs import RunView
from accelscope.dashboard.timeline.details import Details, gap_details, merged_details, merged_gap_details, slice_details
from accelscope.dashboard.timeline.gaps import GapLayout, add_gaps, build_gap_layout
from accelscope.dashboard.timeline.lanes import DEVICE, LaneLayout, build_lane_layout
from accelscope.dashboard.timeline.launches import SchedulingIndex
from accelscope.dashboard.timeline.lod import DEFAULT_WIDTH_PX, clamp_width_px
from accelscope.dashboard.timeline.marks import HOVER_COLUMNS, MAX_SLICES_PER_LANE, StepMarks, Timeline, build_timeline, window_ns
from accelscope.traces import schema as S

# A merged mark's details cover at most this many positions (a real one holds far fewer).
MAX_MERGED_DETAILS = 2_000_000
MAIN, ALL = "main", "all"  # lane modes
MODES = (MAIN, ALL)


def mode_of(lanes: object, ranks: object = None) -> str:
    """The key of what a timeline shows: the host-lanes mode, and the ranks when only some are
    shown ("main", "all|3" or "main|0,5"); anything malformed is left out."""
    lanes = lanes if lanes in MODES else MAIN
    if isinstance(ranks, (list, tuple)) and ranks and all(isinstance(r, int) and not isinstance(r, bool) and 0 <= r < 2**31 for r in ranks):
        return f"{lanes}|{','.join(map(str, sorted(set(ranks))))}"
    return lanes


def split_mode(mode: str) -> tuple[str, tuple[int, ...] | None]:
    """(lanes mode, ranks or None for every rank) of a ``mode_of`` key."""
    lanes, _, ranks = mode.partition("|")
    return lanes, tuple(int(r) for r in ranks.split(",")) if ranks else None


def checked_mode(mode: object, view: RunView | None = None) -> str:
    """``mode`` checked; without ranks, a big job's default ranks (``RunView.default_ranks``)."""
    if not isinstance(mode, str):
        mode = MAIN
    lanes, _, ranks = mode.partition("|")
    picked = [int(r) for r in ranks.split(",") if r.isdigit()] if ranks else None
    if picked is None and view is not None:
        default = view.default_ranks()
        picked = list(default) if default is not None else None
    if picked is not None and view is not None:
        picked = [r for r in picked if r in set(view.run.rank_ids())] or list(view.default_ranks() or []) or None
    return mode_of(lanes, picked)


def _key(name: str, mode: str) -> str:
    return name if mode == MAIN else f"{name}@{mode}"


def lane_layout(view: RunView, mode: str = MAIN) -> LaneLayout:
    """Every slice of the run on its lane and row (``mode``: fold minor host threads or not)."""
    mode = checked_mode(mode, view)
    lanes, ranks = split_mode(mode)
    multi = len(view.run.rank_ids()) > 1
    return view.cached(_key("lanes", mode), lambda: build_lane_layout(view.slices_of(ranks), view.run.thread_names(), view.run.stream_names(),
                                                                        fold=lanes == MAIN, multi_rank=multi))


def step_marks(view: RunView, mode: str = MAIN) -> StepMarks:
    """The analyzer's step numbers and warm-up flags for the layout's step slices."""

    def build() -> StepMarks:
        layout = lane_layout(view, mode)
        out = StepMarks.none(layout.table.height)
        rep = view.report
        if rep is None or S.STEP not in layout.kinds or rep.steps.height == 0:
            return out
        pos = np.flatnonzero(layout.kind_code == layout.kinds.index(S.STEP))
        rows = pl.DataFrame({"pos": pos, "rank": layout.table["rank"].to_numpy()[pos], "start_ns": layout.table["start_ns"].to_numpy()[pos]})
        numbered = rows.join(rep.steps.select("rank", "start_ns", "step", "warmup").unique(["rank", "start_ns"], keep="first"), on=["rank", "start_ns"], how="inner")
        out.number[numbered["pos"].to_numpy()] = numbered["step"].to_numpy()
        out.warmup[numbered["pos"].to_numpy()] = numbered["warmup"].to_numpy()
        return out

    mode = checked_mode(mode, view)
    return view.cached(_key("steps", mode), build)


def gap_layout(view: RunView, mode: str = MAIN) -> GapLayout | None:
    """The analyzer's idle gaps of each device, placed on the device's first lane row."""

    def build() -> GapLayout | None:
        rep = view.report
        if rep is None or not rep.has_device or rep.gaps.height == 0:
            return None
        return build_gap_layout(rep.gaps, lane_layout(view, mode))

    mode = checked_mode(mode, view)
    return view.cached(_key("gaps", mode), build)


def launch_index(view: RunView, mode: str = MAIN) -> SchedulingIndex | None:
    """The report's launches indexed for drawing; None without matched launches."""

    def build() -> SchedulingIndex | None:
        layout = lane_layout(view, mode)
        rep = view.report
        if rep is None or not layout.lanes or not any(lane.lane_type == DEVICE for lane in layout.lanes):
            return None
        ix = SchedulingIndex.build(_of_ranks(rep.launches, split_mode(mode)[1]), layout.table, layout.kinds, len(rep.run.ranks) > 1)
        return ix if ix.launches or ix.depth else None

    mode = checked_mode(mode, view)
    return view.cached(_key("scheduling", mode), build)


def _of_ranks(launches: Launches, ranks: tuple[int, ...] | None) -> Launches:
    """The launch tables of ``ranks`` only (all when None)."""
    if ranks is None:
        return launches
    keep = pl.col("rank").is_in(list(ranks))
    return dataclasses.replace(launches, latency=launches.latency.filter(keep),
                               depth=launches.depth.filter(keep) if "rank" in launches.depth.columns else launches.depth)


def prepare(view: RunView, width_px: int | None = DEFAULT_WIDTH_PX, mode: str = MAIN) -> None:
    """Compute what the first view needs: the events (of the ranks shown; not when the lane
    layout was kept inside the run), then the analysis beside the lane layout, then the launch
    index and the whole-run timeline ``width_px`` wide (not when None: the width is not known yet)."""
    mode = checked_mode(mode, view)
    if view.kept(_key("lanes", mode)) is None:  # a reopened run's kept layout needs no event read
        view.slices_of(split_mode(mode)[1])
    with ThreadPoolExecutor(2, thread_name_prefix="accelscope-prepare") as pool:
        jobs = [pool.submit(lambda: view.report), pool.submit(lambda: lane_layout(view, mode))]
        for job in jobs:
            job.result()
    launch_index(view, mode)
    if width_px is not None:
        window(view, 0.0, view.end_ms, width_px, mode)


def _draw(view: RunView, window_ms: tuple[float, float] | None, width_px: int, mode: str) -> Timeline:
    layout, origin = lane_layout(view, mode), view.origin_ns
    tl = build_timeline(layout, step_marks(view, mode), origin, view.end_ms, window_ms, width_px, MAX_SLICES_PER_LANE)
    tl.folded_threads = layout.folded_threads
    tl.ranks_shown = split_mode(mode)[1]
    if not tl.lanes:
        return tl
    a_ns, b_ns = window_ns(origin, tl.x_range)
    gaps = gap_layout(view, mode)
    if gaps is not None:
        tl = add_gaps(tl, gaps, origin, a_ns, b_ns)
    sched = launch_index(view, mode)
    if sched is not None:
        tl.flows = sched.flows(a_ns, b_ns, origin)
        tl.queue = sched.queue(a_ns, b_ns, origin, tl.width_px)
        tl.latency = sched.latency(a_ns, b_ns, origin, tl.width_px, layout.hover_names, layout.name_code)
    return tl


def window(view: RunView, start_ms: float, end_ms: float, width_px: float | None = None, mode: str = MAIN) -> Timeline:
    """The view of [start_ms, end_ms] (ms since run start) drawn ``width_px`` pixels wide.

    A window covering the run gives the whole-run view (computed once per width and mode).
    """
    mode = checked_mode(mode, view)
    width = clamp_width_px(width_px) if width_px is not None else DEFAULT_WIDTH_PX
    lo, hi = max(0.0, float(start_ms)), min(view.end_ms, float(end_ms))
    if hi <= lo:
        hi = lo + 1e-6
    if lo <= 0.0 and hi >= view.end_ms:
        key = "timeline" if width == DEFAULT_WIDTH_PX and mode == MAIN else f"timeline@{width}@{mode}"
        return view.cached(key, lambda: _draw(view, None, width, mode))
    return _draw(view, (lo, hi), width, mode)


def kept_whole(view: RunView, width_px: float | None = None, mode: str = MAIN) -> Timeline | None:
    """The whole run ``width_px`` wide as ``window`` gives it, when it is already in memory or
    kept inside the run from an earlier opening; None (nothing built) otherwise. A reopened
    big run's first view needs nothing else."""
    mode = checked_mode(mode, view)
    width = clamp_width_px(width_px) if width_px is not None else DEFAULT_WIDTH_PX
    key = "timeline" if width == DEFAULT_WIDTH_PX and mode == MAIN else f"timeline@{width}@{mode}"
    return view.kept(key)


def whole(view: RunView, mode: str = MAIN) -> Timeline:
    """The whole run, at the default width."""
    return window(view, 0.0, view.end_ms, DEFAULT_WIDTH_PX, mode)


def details(view: RunView, custom: Any, mode: str = MAIN) -> Details | None:
    """The details of a clicked mark from its ids (category, first, last position: the first
    three customdata columns); None for anything that names no mark of this run."""
    if not (isinstance(custom, (list, tuple)) and 3 <= len(custom) <= len(HOVER_COLUMNS)):
        return None
    ids = custom[:3]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and float(v).is_integer() for v in ids):
        return None
    cat, a, b = (int(v) for v in ids)
    layout = lane_layout(view, mode)
    n = layout.table.height
    if cat in (CAT_SLICE, CAT_LAUNCH) and 0 <= a < n:
        return slice_details(layout, step_marks(view, mode), launch_index(view, mode), view.origin_ns, a)
    if cat == CAT_MERGED and 0 <= a <= b < n and b - a < MAX_MERGED_DETAILS:
        return merged_details(layout, view.origin_ns, a, b)
    gaps = gap_layout(view, mode)
    if gaps is None:
        return None
    if cat == CAT_GAP and 0 <= a < gaps.table.height:
        return gap_details(gaps, bool(np.unique(layout.table["rank"].to_numpy()).size > 1), view.origin_ns, a)
    if cat == CAT_MERGED_GAPS and 0 <= a <= b < gaps.table.height and b - a < MAX_MERGED_DETAILS:
        return merged_gap_details(gaps, view.origin_ns, a, b)
    return None
