"""Level of detail for the timeline, computed on the server (as Perfetto does).

A view is a time window ``[a_ns, b_ns)`` drawn ``width_px`` pixels wide, so one pixel
stands for ``bucket_ns = (b_ns - a_ns) / width_px``. On each timeline row:

* intervals at least one pixel long are drawn one by one (the longest first when a lane
  still has more than a cap of them);
* shorter ones are merged into one mark per pixel bucket (a bucket starting where the
  first of them starts), which says how many intervals it stands for and how much time
  they cover (the union of the intervals, within the window).

A row of non-overlapping intervals therefore never yields more than about two marks per
pixel, whatever the number of events. Everything here is numpy over arrays sorted once
per run by (row, start): a window is found with ``searchsorted`` per row, merging is
``reduceat`` over pixel-bucket keys; the only Python loops are over rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Pixel width assumed when the browser has not said how wide the graph is.
DEFAULT_WIDTH_PX = 1600
MIN_WIDTH_PX, MAX_WIDTH_PX = 100, 4000


def clamp_width_px(width_px: object) -> int:
    """A pixel width from the browser, clamped to a sane range (DEFAULT_WIDTH_PX if unusable)."""
    if isinstance(width_px, bool) or not isinstance(width_px, (int, float)) or not np.isfinite(width_px):
        return DEFAULT_WIDTH_PX
    return int(min(max(width_px, MIN_WIDTH_PX), MAX_WIDTH_PX))


@dataclass(frozen=True)
class IntervalIndex:
    """Intervals sorted by (row, start_ns, longest first), with per-row bounds; built once per run.

    ``end_ns`` is at least ``start_ns + 1`` so that zero-length slices stay visible;
    ``run_end_ns`` is the running maximum of ``end_ns`` within each row, which makes the
    first interval of a row that can reach into a window a binary search away.
    """

    start_ns: np.ndarray  # int64
    end_ns: np.ndarray  # int64
    row: np.ndarray  # int32
    row_bounds: np.ndarray  # int64, n_rows + 1: row r holds positions [row_bounds[r], row_bounds[r + 1])
    run_end_ns: np.ndarray  # int64

    @property
    def n_rows(self) -> int:
        return int(self.row_bounds.size - 1)

    @property
    def size(self) -> int:
        return int(self.start_ns.size)


def sort_order(start_ns: np.ndarray, dur_ns: np.ndarray, row: np.ndarray) -> np.ndarray:
    """The permutation that sorts intervals by (row, start, longest first)."""
    return np.lexsort((-np.asarray(dur_ns), np.asarray(start_ns), np.asarray(row)))


def build_index(start_ns: np.ndarray, dur_ns: np.ndarray, row: np.ndarray, n_rows: int) -> IntervalIndex:
    """An index over intervals already sorted by ``sort_order``."""
    start = np.ascontiguousarray(start_ns, dtype=np.int64)
    end = start + np.maximum(np.asarray(dur_ns, dtype=np.int64), 1)
    rows = np.ascontiguousarray(row, dtype=np.int32)
    if rows.size > 1 and np.any(np.diff(rows) < 0):
        raise ValueError("intervals must be sorted by row (use sort_order)")
    bounds = np.searchsorted(rows, np.arange(n_rows + 1), side="left").astype(np.int64)
    run_end = np.empty_like(end)
    for lo, hi in zip(bounds[:-1], bounds[1:]):  # one vectorised pass per row
        if hi > lo:
            np.maximum.accumulate(end[lo:hi], out=run_end[lo:hi])
    return IntervalIndex(start, end, rows, bounds, run_end)


def window_positions(ix: IntervalIndex, a_ns: int, b_ns: int) -> np.ndarray:
    """Positions of the intervals overlapping [a_ns, b_ns), in index order (row, then start)."""
    n_rows = ix.n_rows
    lo = np.empty(n_rows, dtype=np.int64)
    hi = np.empty(n_rows, dtype=np.int64)
    for r in range(n_rows):
        r0, r1 = ix.row_bounds[r], ix.row_bounds[r + 1]
        lo[r] = r0 + np.searchsorted(ix.run_end_ns[r0:r1], a_ns, side="right")
        hi[r] = r0 + np.searchsorted(ix.start_ns[r0:r1], b_ns, side="left")
    lengths = np.maximum(hi - lo, 0)
    total = int(lengths.sum())
    if total == 0:
        return np.empty(0, dtype=np.int64)
    offsets = np.cumsum(lengths) - lengths
    pos = np.repeat(lo - offsets, lengths) + np.arange(total, dtype=np.int64)
    return pos[ix.end_ns[pos] > a_ns]


@dataclass
class Merged:
    """Marks standing for several intervals shorter than a pixel, one per (row, pixel bucket).

    ``first``/``last``/``longest`` are index positions of members; ``kind_count`` and
    ``kind_busy_ns`` are (marks x codes) matrices; ``code`` is the code with the most busy time.
    """

    row: np.ndarray
    first: np.ndarray
    last: np.ndarray
    longest: np.ndarray
    count: np.ndarray
    start_ns: np.ndarray  # start of the first member
    end_ns: np.ndarray  # latest end of a member
    busy_ns: np.ndarray  # union of the members, within the window
    code: np.ndarray
    kind_count: np.ndarray
    kind_busy_ns: np.ndarray

    @property
    def size(self) -> int:
        return int(self.row.size)

    @property
    def slices(self) -> int:
        return int(self.count.sum())


@dataclass
class Detail:
    """What one window shows: positions drawn one by one, and the merged marks."""

    kept: np.ndarray  # index positions drawn individually, in index order
    merged: Merged
    bucket_ns: float
    in_window: int  # intervals overlapping the window


def level_of_detail(
    ix: IntervalIndex,
    codes: np.ndarray,
    n_codes: int,
    a_ns: int,
    b_ns: int,
    width_px: int,
    lane_of_row: np.ndarray | None = None,
    max_per_lane: int | None = None,
) -> Detail:
    """Split the intervals overlapping [a_ns, b_ns) into kept ones and per-pixel merged marks.

    ``codes`` (one small int per interval, < n_codes: its kind, or a gap's cause) are
    counted per merged mark. ``max_per_lane`` caps the intervals kept per lane (rows
    grouped by ``lane_of_row``); the shortest of those over the cap are merged too.
    """
    width_px = max(int(width_px), 1)
    bucket_ns = max((b_ns - a_ns) / width_px, 1e-9)
    pos = window_positions(ix, a_ns, b_ns)
    start, end = ix.start_ns[pos], ix.end_ns[pos]
    long = (end - start) >= bucket_ns
    kept = pos[long]
    short_mask = ~long
    if max_per_lane is not None and lane_of_row is not None and kept.size > max_per_lane:
        lanes = lane_of_row[ix.row[kept]]
        counts = np.bincount(lanes)
        if counts.max() > max_per_lane:
            dur = ix.end_ns[kept] - ix.start_ns[kept]
            order = np.lexsort((-dur, lanes))  # per lane, longest first
            lane_sorted = lanes[order]
            first_of_lane = np.searchsorted(lane_sorted, lane_sorted, side="left")
            rank = np.arange(order.size) - first_of_lane
            demote = np.zeros(kept.size, dtype=bool)
            demote[order[rank >= max_per_lane]] = True
            short_mask = short_mask.copy()
            short_mask[np.flatnonzero(long)[demote]] = True
            kept = kept[~demote]
    short = pos[short_mask]
    return Detail(kept=kept, merged=_merge(ix, short, codes, n_codes, a_ns, b_ns, width_px, bucket_ns), bucket_ns=bucket_ns, in_window=int(pos.size))


def _merge(ix: IntervalIndex, short: np.ndarray, codes: np.ndarray, n_codes: int, a_ns: int, b_ns: int, width_px: int, bucket_ns: float) -> Merged:
    n = short.size
    if n == 0:
        e = np.empty(0, dtype=np.int64)
        return Merged(e, e, e, e, e, e, e, e, e, np.empty((0, n_codes), np.int64), np.empty((0, n_codes), np.int64))
    row = ix.row[short].astype(np.int64)
    start, end = ix.start_ns[short], ix.end_ns[short]
    s_w = np.maximum(start, a_ns) - a_ns  # window-relative, clipped
    e_w = np.minimum(end, b_ns) - a_ns
    bucket = np.minimum((s_w / bucket_ns).astype(np.int64), width_px)
    key = row * (width_px + 1) + bucket  # non-decreasing: positions are sorted by (row, start)
    starts = np.concatenate(([0], np.flatnonzero(np.diff(key)) + 1))
    count = np.diff(np.concatenate((starts, [n])))
    group = np.repeat(np.arange(starts.size), count)
    # Union length: each interval adds what lies beyond the latest end before it on its row.
    # Rows are offset by a span larger than the window so the running maximum never crosses rows.
    span = int(b_ns - a_ns) + 1
    shifted = e_w + row * span
    prev = np.concatenate(([np.iinfo(np.int64).min // 2], np.maximum.accumulate(shifted)[:-1])) - row * span
    cover = np.clip(e_w - np.maximum(s_w, prev), 0, None)
    busy = np.add.reduceat(cover, starts)
    code = np.asarray(codes)[short].astype(np.int64)
    flat = group * n_codes + code
    kind_count = np.bincount(flat, minlength=starts.size * n_codes).reshape(starts.size, n_codes)
    kind_busy = np.bincount(flat, weights=cover, minlength=starts.size * n_codes).reshape(starts.size, n_codes).astype(np.int64)
    dominant = np.argmax(kind_busy * (n + 1) + kind_count, axis=1)  # most busy time, then most members
    dur = end - start
    max_dur = np.maximum.reduceat(dur, starts)
    at_max = np.flatnonzero(dur == max_dur[group])
    first_at_max = at_max[np.concatenate(([True], np.diff(group[at_max]) != 0))]
    return Merged(
        row=row[starts],
        first=short[starts],
        last=short[starts + count - 1],
        longest=short[first_at_max],
        count=count,
        start_ns=start[starts],
        end_ns=np.maximum.reduceat(end, starts),
        busy_ns=busy,
        code=dominant,
        kind_count=kind_count,
        kind_busy_ns=kind_busy,
    )


# -- step functions and scatter points ---------------------------------------------------
def step_envelope(time_ns: np.ndarray, value: np.ndarray, a_ns: int, b_ns: int, width_px: int) -> tuple[np.ndarray, np.ndarray]:
    """A step function (value holds from time_ns[i] to time_ns[i+1]) reduced for [a_ns, b_ns).

    Returns points for an "hv" line: the value held at ``a_ns``, then the change points
    inside the window; where a pixel holds more than two changes, only its maximum (at
    its first change) and the value it ends on (at its last change) are kept, so peaks
    are never lost. At most about two points per pixel, plus the end point at ``b_ns``.
    """
    time_ns = np.asarray(time_ns, dtype=np.int64)
    value = np.asarray(value)
    if time_ns.size == 0:
        return np.empty(0, np.int64), np.empty(0, value.dtype)
    lo = int(np.searchsorted(time_ns, a_ns, side="right"))
    hi = int(np.searchsorted(time_ns, b_ns, side="left"))
    carried = value[lo - 1] if lo > 0 else value.dtype.type(0)
    t, v = time_ns[lo:hi], value[lo:hi]
    width_px = max(int(width_px), 1)
    if t.size > 2 * width_px:
        bucket_ns = max((b_ns - a_ns) / width_px, 1e-9)
        bucket = ((t - a_ns) / bucket_ns).astype(np.int64)
        starts = np.concatenate(([0], np.flatnonzero(np.diff(bucket)) + 1))
        ends = np.concatenate((starts[1:], [t.size])) - 1
        peak = np.maximum.reduceat(v, starts)
        tt = np.stack((t[starts], t[ends]), axis=1).ravel()
        vv = np.stack((peak, v[ends]), axis=1).ravel()
        t, v = tt, vv
    tail_v = v[-1] if v.size else carried
    return np.concatenate(([a_ns], t, [b_ns])), np.concatenate(([carried], v, [tail_v]))


def thin_points(x: np.ndarray, y: np.ndarray, x_lo: float, x_hi: float, y_lo: float, y_hi: float, width_px: int, height_px: int, cell_px: float = 2.0) -> np.ndarray:
    """Indices of points to draw so that each cell of ``cell_px`` square pixels keeps one (its first)."""
    if x.size == 0:
        return np.empty(0, dtype=np.int64)
    nx = max(int(width_px / cell_px), 1)
    ny = max(int(height_px / cell_px), 1)
    cx = np.clip(((x - x_lo) / max(x_hi - x_lo, 1e-12) * nx).astype(np.int64), 0, nx)
    cy = np.clip(((y - y_lo) / max(y_hi - y_lo, 1e-12) * ny).astype(np.int64), 0, ny)
    _, first = np.unique(cx * (ny + 1) + cy, return_index=True)
    return np.sort(first)
