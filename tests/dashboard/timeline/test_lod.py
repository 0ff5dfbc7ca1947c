"""The timeline's level of detail (dashboard/lod.py): merged per pixel, never dropped."""

from __future__ import annotations

import numpy as np
import pytest

from accelscope.analysis.intervals import union
from accelscope.dashboard.timeline.lod import (
    build_index,
    clamp_width_px,
    level_of_detail,
    sort_order,
    step_envelope,
    thin_points,
    window_positions,
)


def _index(start, dur, row, n_rows):
    start, dur, row = (np.asarray(a, dtype=np.int64) for a in (start, dur, row))
    order = sort_order(start, dur, row)
    return build_index(start[order], dur[order], row[order], n_rows), order


def _union_ns(start: np.ndarray, end: np.ndarray) -> int:
    us, ue = union(start, end)
    return int((ue - us).sum())


def test_100k_tiny_slices_on_a_row_become_at_most_one_mark_per_pixel_with_their_count_and_union():
    rng = np.random.default_rng(1)
    n = 100_000
    start = np.sort(rng.integers(0, 1_000_000_000, n))  # 1 s, slices of 0.1-5 µs (a pixel is 625 µs)
    dur = rng.integers(100, 5_000, n)
    ix, order = _index(start, dur, np.zeros(n), 1)
    det = level_of_detail(ix, np.zeros(n, np.int64), 1, 0, 1_000_000_000, 1600)
    m = det.merged
    assert det.kept.size == 0 and det.in_window == n
    assert m.size <= 1600 + 1
    assert m.slices == n
    assert m.busy_ns.sum() == _union_ns(start, start + dur)  # the union, overlaps counted once
    # Each mark's members are a contiguous run of index positions and start in its pixel.
    assert (m.last - m.first + 1 == m.count).all()
    assert np.all(np.diff(m.start_ns // 625_000) > 0), "one mark per pixel"


def test_busy_time_of_merged_marks_is_the_union_where_slices_overlap():
    # One row holding overlapping slices (as the deepest nesting row can): three 300 ns slices,
    # two of them overlapping by 100 ns, inside one pixel of 10 µs.
    ix, _ = _index([0, 200, 5_000], [300, 300, 300], [0, 0, 0], 1)
    det = level_of_detail(ix, np.zeros(3, np.int64), 1, 0, 1_000_000, 100)
    assert det.merged.count.tolist() == [3]
    assert det.merged.busy_ns.tolist() == [500 + 300]


def test_zooming_in_returns_the_individual_slices_of_the_window():
    n = 100_000
    start = np.arange(n, dtype=np.int64) * 10_000  # 10 µs apart, 2 µs long
    dur = np.full(n, 2_000)
    ix, order = _index(start, dur, np.zeros(n), 1)
    whole = level_of_detail(ix, np.zeros(n, np.int64), 1, 0, n * 10_000, 1600)
    assert whole.kept.size == 0, "2 µs is far below a pixel of the whole second"
    # A 500 µs window at 1600 px: a pixel is 312 ns, every slice there is drawn as itself.
    a, b = 3_000_000, 3_500_000
    det = level_of_detail(ix, np.zeros(n, np.int64), 1, a, b, 1600)
    assert det.merged.size == 0
    expected = np.flatnonzero((start < b) & (start + dur > a))
    assert ix.start_ns[det.kept].tolist() == start[expected].tolist()
    assert (ix.end_ns[det.kept] - ix.start_ns[det.kept]).tolist() == dur[expected].tolist()


def test_slices_of_a_pixel_or_more_are_never_merged():
    rng = np.random.default_rng(2)
    tiny = np.sort(rng.integers(0, 1_000_000_000, 50_000))
    long_start = np.array([100_000_000, 400_000_000, 900_000_000])
    long_dur = np.array([625_000, 5_000_000, 90_000_000])  # 1, 8 and 144 pixels of 625 µs
    start = np.concatenate((tiny, long_start))
    dur = np.concatenate((np.full(tiny.size, 1_000), long_dur))
    row = np.concatenate((np.zeros(tiny.size), np.ones(3)))
    ix, _ = _index(start, dur, row, 2)
    det = level_of_detail(ix, np.zeros(start.size, np.int64), 1, 0, 1_000_000_000, 1600)
    assert sorted(zip(ix.start_ns[det.kept].tolist(), (ix.end_ns - ix.start_ns)[det.kept].tolist())) == sorted(zip(long_start.tolist(), long_dur.tolist()))
    assert det.merged.slices == tiny.size


def test_the_lane_cap_keeps_the_longest_and_merges_the_rest():
    n = 5_000
    rng = np.random.default_rng(3)
    start = np.arange(n, dtype=np.int64) * 1_000_000
    dur = rng.permutation(np.arange(1, n + 1)) * 100 + 4_000_000  # all at least a pixel of 3.125 ms
    ix, _ = _index(start, dur, np.zeros(n), 1)
    det = level_of_detail(ix, np.zeros(n, np.int64), 1, 0, n * 1_000_000, 1600, lane_of_row=np.zeros(1, np.int64), max_per_lane=1000)
    kept_dur = ix.end_ns[det.kept] - ix.start_ns[det.kept]
    assert det.kept.size == 1000
    assert kept_dur.min() > np.sort(dur)[-1001], "the 1000 longest"
    assert det.merged.slices == n - 1000, "the others are merged, not dropped"


def test_the_window_holds_exactly_the_slices_overlapping_it():
    rng = np.random.default_rng(4)
    n = 20_000
    start = rng.integers(0, 10_000_000, n)
    dur = rng.integers(0, 2_000_000, n)  # long ones reach far across windows
    row = rng.integers(0, 5, n)
    ix, order = _index(start, dur, row, 5)
    for a, b in [(0, 10_000_000), (4_000_000, 4_000_100), (9_999_000, 12_000_000), (1_234_567, 2_345_678)]:
        pos = window_positions(ix, a, b)
        end = start + np.maximum(dur, 1)
        expected = np.flatnonzero((start < b) & (end > a))
        assert sorted(order[pos].tolist()) == expected.tolist()


def test_counts_per_code_and_the_dominant_code_of_a_merged_mark():
    # One pixel holding 3 slices of code 0 (300 ns busy) and 1 of code 1 (900 ns busy).
    ix, order = _index([0, 400, 800, 1_200], [100, 100, 100, 900], [0, 0, 0, 0], 1)
    codes = np.array([0, 0, 0, 1])[order]
    det = level_of_detail(ix, codes, 2, 0, 1_000_000, 10)
    m = det.merged
    assert m.kind_count.tolist() == [[3, 1]] and m.kind_busy_ns.tolist() == [[300, 900]]
    assert m.code.tolist() == [1], "the code with the most busy time"
    assert (ix.end_ns - ix.start_ns)[m.longest].tolist() == [900]


def test_a_step_function_keeps_its_peaks_and_at_most_two_points_per_pixel():
    t = np.arange(0, 1_000_000, 10, dtype=np.int64)  # 100k changes
    v = (np.arange(t.size) % 50).astype(np.int64)
    v[77_777] = 999
    tt, vv = step_envelope(t, v, 0, 1_000_000, 500)
    assert tt.size <= 2 * 500 + 2
    assert vv.max() == 999 and tt[np.argmax(vv)] <= t[77_777]
    assert tt[0] == 0 and tt[-1] == 1_000_000


def test_a_step_function_window_starts_with_the_value_held_there():
    t = np.array([0, 100, 200, 300], dtype=np.int64)
    v = np.array([1, 5, 2, 0], dtype=np.int64)
    tt, vv = step_envelope(t, v, 150, 250, 100)
    assert tt.tolist() == [150, 200, 250] and vv.tolist() == [5, 2, 2]


def test_thinning_scatter_points_keeps_one_per_cell():
    x = np.array([0.0, 0.1, 0.2, 50.0, 99.9])
    y = np.array([0.0, 0.1, 0.0, 50.0, 99.9])
    keep = thin_points(x, y, 0, 100, 0, 100, 100, 100, cell_px=2)
    assert keep.tolist() == [0, 3, 4]


@pytest.mark.parametrize("value, expected", [(1200, 1200), (1e9, 4000), (3, 100), (float("nan"), 1600), ("800", 1600), (True, 1600), (None, 1600)])
def test_widths_from_the_browser_are_clamped(value, expected):
    assert clamp_width_px(value) == expected
