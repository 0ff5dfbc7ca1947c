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
    s, e = starts[order], np.maximum(ends[order], starts[order])
    reach = np.maximum.accumulate(e)
    new_group = np.empty(s.size, dtype=bool)
    new_group[0] = True
    new_group[1:] = s[1:] > reach[:-1]
    first = np.flatnonzero(new_group)
    last = np.append(first[1:] - 1, s.size - 1)
    return s[first], reach[last]


def covered_within(starts: np.ndarray, ends: np.ndarray, win_starts: np.ndarray, win_ends: np.ndarray) -> np.ndarray:
    """Length of the union of [starts, ends) inside each window [win_start, win_end)."""
    s, e = union(starts, ends)
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
