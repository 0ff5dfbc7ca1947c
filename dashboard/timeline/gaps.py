"""The analyzer's idle gaps on the timeline: each device's gaps on its first lane row, drawn
with the same level of detail as slices, with their causes in the hover text."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from accelscope.analysis.causes import CAUSE_TEXT, CAUSES
from accelscope.dashboard.formatting import CAT_GAP, CAT_MERGED_GAPS, duration_expr
from accelscope.dashboard.timeline.lanes import DEVICE, LaneLayout
from accelscope.dashboard.timeline.lod import IntervalIndex, build_index, level_of_detail, sort_order
from accelscope.dashboard.timeline.marks import HOVER_SPACING_PX, MarkTrace, Timeline, clip_marks, coalesce, hover_trace, merged_template, segments_xy

IDLE_GAP = "idle gap"


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
        if lane.lane_type == DEVICE and lane.device is not None and lane.device != "cpu":
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
    x0, x1 = clip_marks(ix.start_ns[kept], ix.end_ns[kept], a_ns, b_ns)
    m_x0, m_x1 = clip_marks(m.start_ns, m.end_ns, a_ns, b_ns, det.bucket_ns)
    if kept.size:
        x, y = segments_xy(x0, x1, ix.row[kept], origin_ns)
        tl.traces.append(MarkTrace(IDLE_GAP, IDLE_GAP, False, x, y, int(kept.size), int(kept.size)))
    if m.size:
        x, y = segments_xy(*coalesce(m_x0, m_x1, m.row, det.bucket_ns), origin_ns)
        tl.traces.append(MarkTrace(f"{IDLE_GAP} (merged)", IDLE_GAP, True, x, y, m.size, m.slices))
    spacing_ns = HOVER_SPACING_PX * det.bucket_ns
    if kept.size:
        tl.hover.append(
            hover_trace(
                "idle gap details", GAP_TEMPLATE, x0, x1, ix.row[kept], a_ns, b_ns, spacing_ns, origin_ns,
                CAT_GAP, kept, kept, gl.table["dur_ns"].to_numpy()[kept], np.ones(kept.size, np.int64), ix.start_ns[kept], _gap_causes(gl, kept),
            )
        )
    for code in np.unique(m.code):
        sel = np.flatnonzero(m.code == code)
        tl.hover.append(
            hover_trace(
                "idle gap merged details", merged_template("idle gaps", "idle", CAUSE_TEXT[CAUSES[int(code)]], False), m_x0[sel], m_x1[sel], m.row[sel],
                a_ns, b_ns, spacing_ns, origin_ns, CAT_MERGED_GAPS, m.first[sel], m.last[sel], m.busy_ns[sel], m.count[sel], m.start_ns[sel], None, False,
            )
        )
    tl.gaps_in_view = det.in_window
    return tl


