import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from accelscope.analysis.intervals import covered_within, union

intervals = st.lists(st.tuples(st.integers(0, 1000), st.integers(0, 200)), max_size=40)
windows = st.lists(st.tuples(st.integers(-50, 1100), st.integers(0, 400)), min_size=1, max_size=10)


def _brute(ivs, win):
    covered = np.zeros(1400, dtype=bool)
    for s, d in ivs:
        covered[s + 100 : s + d + 100] = True
    return [int(covered[ws + 100 : ws + wd + 100].sum()) for ws, wd in win]


@settings(max_examples=300, deadline=None)
@given(intervals, windows)
def test_covered_within_matches_brute_force(ivs, win):
    s = np.array([a for a, _ in ivs], dtype=np.int64)
    e = np.array([a + d for a, d in ivs], dtype=np.int64)
    ws = np.array([a for a, _ in win], dtype=np.int64)
    we = np.array([a + d for a, d in win], dtype=np.int64)
    assert covered_within(s, e, ws, we).tolist() == _brute(ivs, win)


def test_union_merges_overlapping_intervals():
    s, e = union(np.array([5, 0, 2, 10]), np.array([7, 3, 6, 12]))
    assert s.tolist() == [0, 10] and e.tolist() == [7, 12]


@settings(max_examples=200, deadline=None)
@given(intervals, st.integers(0, 600), st.integers(0, 600))
def test_complement_is_exactly_the_uncovered_time(ivs, lo, length):
    from accelscope.analysis.intervals import complement

    s = np.array([a for a, _ in ivs], dtype=np.int64)
    e = np.array([a + d for a, d in ivs], dtype=np.int64)
    gs, ge = complement(s, e, lo, lo + length)
    covered = set()
    for a, d in ivs:
        covered.update(range(a, a + d))
    gaps = set()
    for a, b in zip(gs.tolist(), ge.tolist()):
        gaps.update(range(a, b))
    assert gaps == set(range(lo, lo + length)) - covered
    assert (ge > gs).all()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 500), st.integers(1, 100)), max_size=20), st.lists(st.integers(0, 600), max_size=10))
def test_split_at_cuts_and_keeps_every_instant(ivs, cuts):
    from accelscope.analysis.intervals import split_at

    s = np.array([a for a, _ in ivs], dtype=np.int64)
    e = np.array([a + d for a, d in ivs], dtype=np.int64)
    ps, pe = split_at(s, e, np.array(sorted(cuts), dtype=np.int64))
    assert int((pe - ps).sum()) == int((e - s).sum())
    cutset = set(cuts)
    for a, b in zip(ps.tolist(), pe.tolist()):
        assert not any(a < c < b for c in cutset)


@settings(max_examples=200, deadline=None)
@given(intervals, st.lists(st.tuples(st.integers(0, 300), st.integers(1, 100)), min_size=1, max_size=6))
def test_gaps_within_are_the_uncovered_time_of_each_window(ivs, wins):
    from accelscope.analysis.intervals import gaps_within

    wins = sorted(wins)
    # Non-overlapping windows, as steps are.
    ws, we, last = [], [], -1
    for a, d in wins:
        a = max(a, last)
        ws.append(a)
        we.append(a + d)
        last = a + d
    s = np.array([a for a, _ in ivs], dtype=np.int64)
    e = np.array([a + d for a, d in ivs], dtype=np.int64)
    gs, ge, idx = gaps_within(s, e, np.array(ws), np.array(we))
    covered = set()
    for a, d in ivs:
        covered.update(range(a, a + d))
    for w, (a, b) in enumerate(zip(ws, we)):
        mine = set()
        for x, y in zip(gs[idx == w].tolist(), ge[idx == w].tolist()):
            mine.update(range(x, y))
        assert mine == set(range(a, b)) - covered
