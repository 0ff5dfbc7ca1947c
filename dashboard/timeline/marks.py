"""The timeline's marks for the whole run or a window of it, with Perfetto-style level of
detail: slices of at least a pixel one by one, shorter ones merged per row and pixel, and
invisible hover points that carry each mark's ids for the click panel.

No Dash, no Plotly here: ``build_timeline`` turns a ``LaneLayout`` and a window into a
``Timeline`` of line segments that ``figure.timeline_figure`` draws.
"""

from __future__ import annotations

import dataclasses
import html
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from accelscope.dashboard.formatting import CAT_MERGED, CAT_SLICE
from accelscope.dashboard.timeline.lanes import STEPS, Lane, LaneLayout
from accelscope.dashboard.timeline.launches import DepthSeries, Flows, Latency
from accelscope.dashboard.timeline.lod import DEFAULT_WIDTH_PX, level_of_detail
from accelscope.traces import schema as S

# Slices of at least one pixel drawn one by one per lane, at most (the longest; the rest are merged).
MAX_SLICES_PER_LANE = 4000
# Every other step in view is drawn as a shaded band across all lanes, up to this many bands.
MAX_STEP_BANDS = 400
# Hover points are spaced this many pixels apart along long marks, at most this many per mark.
HOVER_SPACING_PX = 24
HOVER_POINTS_PER_MARK = 200
# customdata columns of the hover points (see HoverTrace); the first three identify the mark.
HOVER_COLUMNS = ("category", "first", "last", "seconds", "count", "start_ms")


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
class StepMarks:
    """The analyzer's numbering of the step slices of a lane layout, row by row of its table."""

    number: np.ndarray  # the step's own number (ProfilerStep#N is N), -1 for other slices
    warmup: np.ndarray  # a warm-up step (the analyzer leaves it out of every summary)

    @classmethod
    def none(cls, n: int) -> StepMarks:
        return cls(np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=bool))


@dataclass
class Band:
    """A shaded band behind the lanes: an odd-numbered step, over its rank's lanes."""

    x0_ms: float
    x1_ms: float
    row_lo: int | None  # first and last row it covers; None: every lane
    row_hi: int | None


@dataclass
class Timeline:
    lanes: list[Lane]
    traces: list[MarkTrace]
    hover: list[HoverTrace]
    step_bands: list[Band]  # every odd-numbered step in view, over its rank's lanes
    total_slices: int  # slices overlapping the window
    kept_slices: int  # drawn one by one
    merged_slices: int  # drawn inside merged marks
    merged_marks: int
    x_range: tuple[float, float]
    window: tuple[float, float] | None = None  # None: the whole run
    width_px: int = DEFAULT_WIDTH_PX
    bucket_ns: float = 0.0  # one pixel
    gaps_in_view: int = 0
    folded_threads: int = 0  # host threads drawn folded into "other host threads" lanes
    ranks_shown: tuple[int, ...] | None = None  # the ranks drawn when not every rank is
    flows: Flows | None = None
    queue: list[DepthSeries] = field(default_factory=list)
    latency: Latency | None = None

    @property
    def rows(self) -> int:
        return sum(lane.rows for lane in self.lanes)

    @property
    def marks(self) -> int:
        return self.kept_slices + self.merged_marks



def window_ns(origin_ns: int, span_ms: tuple[float, float]) -> tuple[int, int]:
    """A window in ms since the run's start as absolute [a_ns, b_ns)."""
    return origin_ns + int(np.floor(span_ms[0] * 1e6)), origin_ns + int(np.ceil(span_ms[1] * 1e6))


def segments_xy(x0_ns: np.ndarray, x1_ns: np.ndarray, rows: np.ndarray, origin_ns: int) -> tuple[np.ndarray, np.ndarray]:
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


def coalesce(x0_ns: np.ndarray, x1_ns: np.ndarray, rows: np.ndarray, gap_ns: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merged marks drawn as one segment where they follow each other on a row less than a
    pixel apart (the picture is the same; drawing is paid per segment). Input sorted by (row, x0).
    Hover points stay one per mark."""
    if x0_ns.size < 2:
        return x0_ns, x1_ns, rows
    brk = np.ones(x0_ns.size, dtype=bool)
    brk[1:] = (rows[1:] != rows[:-1]) | (x0_ns[1:] - x1_ns[:-1] > gap_ns)
    starts = np.flatnonzero(brk)
    return x0_ns[starts], np.maximum.reduceat(x1_ns, starts), rows[starts]


def clip_marks(start_ns: np.ndarray, end_ns: np.ndarray, a_ns: int, b_ns: int, min_ns: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
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


def hover_trace(
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


def merged_template(noun: str, busy: str, mostly: str, longest: bool) -> str:
    text = f"<b>%{{customdata[4]:,}} {noun}</b>, %{{customdata[3]:.3~s}}s {busy}<br>mostly {html.escape(mostly)}"
    if longest:
        text += "<br>longest: %{text}"
    return text + "<br>zoom in to see them one by one<extra></extra>"


def build_timeline(
    layout: LaneLayout,
    steps: StepMarks,
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
    ``steps`` numbers the step slices as the analyzer does (odd steps are drawn lighter).
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
    x0, x1 = clip_marks(ix.start_ns[kept], ix.end_ns[kept], a_ns, b_ns)
    m_x0, m_x1 = clip_marks(m.start_ns, m.end_ns, a_ns, b_ns, det.bucket_ns)
    step_code = layout.kinds.index(S.STEP)
    for code, kind in enumerate(layout.kinds):
        sel = np.flatnonzero(kept_kind == code)
        if sel.size:
            if code == step_code:
                odd = steps.number[kept[sel]] % 2 == 1
                groups = [(S.STEP, sel[~odd]), (f"{S.STEP} (odd)", sel[odd])]
            else:
                groups = [(kind, sel)]
            for name, part in groups:
                if part.size:
                    x, y = segments_xy(x0[part], x1[part], ix.row[kept[part]], origin_ns)
                    traces.append(MarkTrace(name, kind, False, x, y, int(part.size), int(part.size)))
        msel = np.flatnonzero(m.code == code)
        if msel.size:
            x, y = segments_xy(*coalesce(m_x0[msel], m_x1[msel], m.row[msel], det.bucket_ns), origin_ns)
            traces.append(MarkTrace(f"{kind} (merged)", kind, True, x, y, int(msel.size), int(m.count[msel].sum())))

    # Hover points: one per mark (more along long marks), per kind so the template names it.
    hover: list[HoverTrace] = []
    ones = np.ones(kept.size, dtype=np.int64)
    k_dur = layout.table["dur_ns"].to_numpy()[kept]
    warm = steps.warmup[kept]
    k_names = pl.DataFrame({"n": layout.hover_names.gather(layout.name_code[kept]), "w": warm}).select(
        pl.when(pl.col("w")).then(pl.concat_str([pl.col("n"), pl.lit(" (warm-up)")])).otherwise(pl.col("n"))
    ).to_series()
    for code in np.unique(kept_kind):
        sel = np.flatnonzero(kept_kind == code)
        kind = layout.kinds[int(code)]
        hover.append(
            hover_trace(
                f"{kind} details", _slice_template(kind), x0[sel], x1[sel], ix.row[kept[sel]], a_ns, b_ns, spacing_ns, origin_ns,
                CAT_SLICE, kept[sel], kept[sel], k_dur[sel], ones[sel], ix.start_ns[kept[sel]], k_names.gather(sel),
            )
        )
    m_names = layout.hover_names.gather(layout.name_code[m.longest])
    for code in np.unique(m.code):
        sel = np.flatnonzero(m.code == code)
        kind = layout.kinds[int(code)]
        hover.append(
            hover_trace(
                f"{kind} merged details", merged_template("slices", "busy", kind, True), m_x0[sel], m_x1[sel], m.row[sel], a_ns, b_ns, spacing_ns,
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
        step_bands=_step_bands(layout, steps, origin_ns, a_ns, b_ns),
        total_slices=det.in_window,
        kept_slices=int(kept.size),
        merged_slices=m.slices,
        merged_marks=m.size,
        x_range=span,
        window=window_ms,
        width_px=int(width_px),
        bucket_ns=det.bucket_ns,
    )


def _step_bands(layout: LaneLayout, steps: StepMarks, origin_ns: int, a_ns: int, b_ns: int) -> list[Band]:
    """Every odd-numbered step overlapping the window, over the lanes of its rank (every lane
    in a single-rank run), when at most MAX_STEP_BANDS in all."""
    ix = layout.index
    multi = layout.multi_rank
    bands: list[Band] = []
    for lane in layout.lanes:
        if lane.lane_type != STEPS:
            continue
        lo, hi = ix.row_bounds[lane.row0], ix.row_bounds[lane.row0 + lane.rows]
        start, end, number = ix.start_ns[lo:hi], ix.end_ns[lo:hi], steps.number[lo:hi]
        sel = (number % 2 == 1) & (start < b_ns) & (end > a_ns)
        rows = [x for x in layout.lanes if x.rank == lane.rank]
        row_lo, row_hi = (rows[0].row0, rows[-1].row0 + rows[-1].rows - 1) if multi else (None, None)
        s = (start[sel] - origin_ns) / 1e6
        e = (end[sel] - origin_ns) / 1e6
        bands += [Band(x0, x1, row_lo, row_hi) for x0, x1 in zip(s.tolist(), e.tolist())]
        if len(bands) > MAX_STEP_BANDS:
            return []
    return bands
