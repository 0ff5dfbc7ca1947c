"""Vectorised interval arithmetic on int64 nanosecond arrays (no Python loops per event)."""

from __future__ import annotations

import numpy as np


def union(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Merge possibly overlapping intervals into sorted, disjoint ones."""
    starts = np.asarray(starts, dtype=np.int64)
    ends = np.asarray(ends, dtype=np.int64)
    if starts.size == 0:
        return starts, ends
    order = np.argsort(starts, kind="stable")
    s = starts[order]
    e = np.maximum(ends[order], s)
    reach = np.maximum.accumulate(e)
    new_group = np.empty(s.size, dtype=bool)
    new_group[0] = True
    new_group[1:] = s[1:] > reach[:-1]
    first = np.flatnonzero(new_group)
    last = np.append(first[1:] - 1, s.size - 1)
    return s[first], reach[last]


def covered_within(starts: np.ndarray, ends: np.ndarray, win_starts: np.ndarray, win_ends: np.ndarray, merged: bool = False) -> np.ndarray:
    """Length of the union of [starts, ends) inside each window [win_start, win_end).

    ``merged=True`` says the intervals are already sorted and disjoint (from ``union``).
    """
    s, e = (np.asarray(starts, dtype=np.int64), np.asarray(ends, dtype=np.int64)) if merged else union(starts, ends)
    win_starts = np.asarray(win_starts, dtype=np.int64)
    win_ends = np.asarray(win_ends, dtype=np.int64)
    if s.size == 0:
        return np.zeros(win_starts.shape, dtype=np.int64)
    prefix = np.concatenate(([0], np.cumsum(e - s)))

    def cumulative(t: np.ndarray) -> np.ndarray:
        # Covered length in (-inf, t]: whole intervals before k, plus the part of interval k.
        k = np.searchsorted(s, t, side="right") - 1
        kk = np.clip(k, 0, None)
        partial = np.where(k >= 0, np.clip(np.minimum(t, e[kk]) - s[kk], 0, None), 0)
        return prefix[kk] * (k >= 0) + partial

    return np.maximum(cumulative(win_ends) - cumulative(win_starts), 0)


def complement(starts: np.ndarray, ends: np.ndarray, lo: int, hi: int, merged: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The gaps of the union of [starts, ends) inside [lo, hi) (``merged``: already a union)."""
    s, e = (np.asarray(starts, dtype=np.int64), np.asarray(ends, dtype=np.int64)) if merged else union(starts, ends)
    keep = (e > lo) & (s < hi)
    s, e = np.clip(s[keep], lo, hi), np.clip(e[keep], lo, hi)
    gap_s = np.concatenate(([lo], e))
    gap_e = np.concatenate((s, [hi]))
    nonempty = gap_e > gap_s
    return gap_s[nonempty], gap_e[nonempty]


def split_at(starts: np.ndarray, ends: np.ndarray, cuts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split intervals at every cut point strictly inside them (cuts sorted)."""
    starts = np.asarray(starts, dtype=np.int64)
    ends = np.asarray(ends, dtype=np.int64)
    cuts = np.unique(np.asarray(cuts, dtype=np.int64))
    lo = np.searchsorted(cuts, starts, side="right")
    hi = np.searchsorted(cuts, ends, side="left")
    n_cuts = np.maximum(hi - lo, 0)
    if not n_cuts.any():
        return starts, ends
    reps = n_cuts + 1
    out_s = np.repeat(starts, reps)
    out_e = np.repeat(ends, reps)
    # Piece k of interval i (k = 0..n_cuts[i]) runs from cut lo+k-1 (or start) to cut lo+k (or end).
    first = np.repeat(np.cumsum(reps) - reps, reps)
    k = np.arange(out_s.size) - first
    base = np.repeat(lo, reps)
    has_left = k > 0
    has_right = k < np.repeat(n_cuts, reps)
    out_s[has_left] = cuts[(base + k - 1)[has_left]]
    out_e[has_right] = cuts[(base + k)[has_right]]
    return out_s, out_e


def gaps_within(
    starts: np.ndarray, ends: np.ndarray, win_starts: np.ndarray, win_ends: np.ndarray, merged: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Uncovered pieces of each window: (starts, ends, window index), split at window edges.

    Windows are sorted by start; where they overlap, a piece belongs to the window its
    midpoint falls in last. ``merged=True`` says the intervals are already a ``union``.
    """
    win_starts = np.asarray(win_starts, dtype=np.int64)
    win_ends = np.asarray(win_ends, dtype=np.int64)
    empty = np.empty(0, dtype=np.int64)
    if win_starts.size == 0:
        return empty, empty, empty
    s, e = (np.asarray(starts, dtype=np.int64), np.asarray(ends, dtype=np.int64)) if merged else union(starts, ends)
    gs, ge = complement(s, e, int(win_starts.min()), int(win_ends.max()), merged=True)
    gs, ge = split_at(gs, ge, np.concatenate((win_starts, win_ends)))
    mid = gs + (ge - gs) // 2
    idx = np.searchsorted(win_starts, mid, side="right") - 1
    inside = (idx >= 0) & (mid < win_ends[np.clip(idx, 0, None)])
    return gs[inside], ge[inside], idx[inside]


def subtract(starts: np.ndarray, ends: np.ndarray, cut_starts: np.ndarray, cut_ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The parts of the union of [starts, ends) that no [cut_starts, cut_ends) covers."""
    s, e = union(starts, ends)
    cs, ce = union(cut_starts, cut_ends)
    if s.size == 0 or cs.size == 0:
        return s, e
    s, e = split_at(s, e, np.concatenate((cs, ce)))
    # Pieces are split at every cut edge, so each lies wholly inside or outside the cuts.
    k = np.searchsorted(cs, s, side="right") - 1
    covered = (k >= 0) & (s < ce[np.clip(k, 0, None)])
    return s[~covered], e[~covered]
