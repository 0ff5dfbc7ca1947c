"""What the panel under the timeline says about a clicked mark: a slice, a merged mark, an
idle gap or merged gaps, from the three integers its hover point carries."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from accelscope.analysis.causes import CAUSE_TEXT, CAUSES
from accelscope.analysis.intervals import union
from accelscope.dashboard.formatting import format_duration_ns
from accelscope.dashboard.timeline.gaps import IDLE_GAP
from accelscope.dashboard.timeline.lanes import DEVICE, FOLDED, HOST
from accelscope.traces import schema as S

if TYPE_CHECKING:
    from accelscope.dashboard.timeline.gaps import GapLayout
    from accelscope.dashboard.timeline.lanes import LaneLayout
    from accelscope.dashboard.timeline.launches import SchedulingIndex
    from accelscope.dashboard.timeline.marks import StepMarks

# A merged mark's click panel lists its members' names with the most time, this many.
MERGED_TOP_NAMES = 8


@dataclass
class Details:
    """What the panel under the timeline says about a clicked mark."""

    title: str
    kind: str
    rows: list[tuple[str, str]]  # (label, value)
    table_header: tuple[str, ...] = ()
    table: list[tuple[str, ...]] = field(default_factory=list)  # a gap's causes, a merged mark's names


def _fmt_ms(origin_ns: int, ns: int) -> str:
    return f"{(ns - origin_ns) / 1e6:,.3f} ms"


def slice_details(layout: LaneLayout, steps: StepMarks, sched: SchedulingIndex | None, origin_ns: int, pos: int) -> Details:
    """A slice: its kind, times, lane, step, correlation id, and its launch when it is device work."""
    r = layout.table.row(pos, named=True)
    lane = layout.lanes[int(layout.lane_of_row[r["row"]])]
    kind = layout.kinds[r["kind_code"]]
    rows = [
        ("kind", kind),
        ("start", _fmt_ms(origin_ns, r["start_ns"])),
        ("duration", format_duration_ns(r["dur_ns"])),
        ("end", _fmt_ms(origin_ns, r["start_ns"] + r["dur_ns"])),
        ("stream" if lane.lane_type == DEVICE else "thread" if lane.lane_type in (HOST, FOLDED) else "lane", lane.label),
    ]
    if lane.lane_type in (HOST, FOLDED) and r["pid"] is not None:
        rows.append(("pid / tid", f"{r['pid']} / {r['tid']}"))
    if steps.number[pos] >= 0:
        rows.append(("step", str(int(steps.number[pos])) + (" (warm-up)" if steps.warmup[pos] else "")))
    if r["correlation_id"] is not None:
        rows.append(("correlation id", str(r["correlation_id"])))
    if sched is not None and kind in S.DEVICE_KINDS:
        hit = np.flatnonzero(sched.device_pos == pos)
        if hit.size:
            i = int(hit[0])
            rows.append(("launched at", _fmt_ms(origin_ns, int(sched.launch_start_ns[i]))))
            rows.append(("launch → start", format_duration_ns(int(sched.latency_ns[i]))))
    return Details(str(layout.names[int(r["name_code"])]), kind, rows)


def merged_details(layout: LaneLayout, origin_ns: int, first: int, last: int) -> Details:
    """A merged mark: how many slices of one row it stands for, their union, and their top names."""
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
        ("from", _fmt_ms(origin_ns, int(start.min()))),
        ("to", _fmt_ms(origin_ns, int(end.max()))),
        ("lane", lane.label),
    ]
    return Details(f"{keep.size:,} slices merged into one mark (zoom in to see them)", "merged", rows, ("name", "slices", "time"), table)


def gap_details(gl: GapLayout, multi_rank: bool, origin_ns: int, pos: int) -> Details:
    """An idle gap: its device, times, step, main cause and the time per cause."""
    r = gl.table.row(pos, named=True)
    dur = max(int(r["dur_ns"]), 1)
    rows = [
        ("device", f"rank {r['rank']} · {r['device']}" if multi_rank else str(r["device"])),
        ("start", _fmt_ms(origin_ns, r["start_ns"])),
        ("duration", format_duration_ns(r["dur_ns"])),
        ("step", str(r["step"])),
        ("main cause", CAUSE_TEXT[r["cause"]]),
    ]
    if r.get("host_op"):  # the op the device-driving threads were in (gap_ops.py)
        rows.append(("host was in", f"{r['host_op']} ({format_duration_ns(r['host_op_ns'])} of the gap)"))
    parts = sorted(((r[f"{c}_ns"], c) for c in CAUSES if r[f"{c}_ns"] > 0), key=lambda p: -p[0])
    table = [(CAUSE_TEXT[c], format_duration_ns(v), f"{v / dur:.0%}") for v, c in parts]
    return Details(f"idle: {CAUSE_TEXT[r['cause']]}", IDLE_GAP, rows, ("cause", "time", "share of gap"), table)


def merged_gap_details(gl: GapLayout, origin_ns: int, first: int, last: int) -> Details:
    """Merged idle gaps of one row: how many, their idle time and the time per cause."""
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
        ("from", _fmt_ms(origin_ns, int(gl.index.start_ns[keep].min()))),
        ("to", _fmt_ms(origin_ns, int(gl.index.end_ns[keep].max()))),
    ]
    return Details(f"{keep.size:,} idle gaps merged into one mark (zoom in to see them)", IDLE_GAP, rows, ("cause", "time", "share"), table)

