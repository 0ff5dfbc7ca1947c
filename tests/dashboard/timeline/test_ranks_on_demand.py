"""A job too big to hold (``RunView.big``): the timeline shows a few ranks, each read from
disk when picked, and neither the analysis nor the first view reads every rank's events.
On the real 8-rank DLRM job, made "big" by lowering the rank limit to 4."""

from __future__ import annotations

import polars as pl
import pytest

pytest.importorskip("dash", reason="the dashboard extra is not installed")

from accelscope.dashboard import runs  # noqa: E402
from accelscope.dashboard.app import create_app  # noqa: E402
from accelscope.dashboard.timeline import view as tv  # noqa: E402
from accelscope.traces.importer import import_traces  # noqa: E402
from accelscope.traces.run import Run  # noqa: E402

DLRM = "traces/more/param-dlrm-8rank"


@pytest.fixture(scope="module")
def job(shared_dir, tmp_path_factory):
    return import_traces([shared_dir / DLRM], tmp_path_factory.mktemp("big") / "job", progress=False, workers=1)


@pytest.fixture
def big_board(job, monkeypatch):
    monkeypatch.setattr(runs, "MAX_RANKS_AT_ONCE", 4)
    return create_app([job])._accelscope


def _lane_ranks(layout) -> set[int]:
    return {int(lane.rank) for lane in layout.lanes if lane.rank is not None}


def test_a_big_jobs_first_view_reads_one_rank_and_never_all(big_board):
    view = big_board.views[0]
    assert view.big and view.default_ranks() == (0,)
    tv.prepare(view, 1200)
    assert _lane_ranks(tv.lane_layout(view)) == {0}
    assert "slices" not in view._cache and not view.run.slices_loaded, "no table of every rank's events"
    assert view.report is not None and len(view.report.run.ranks) == 8, "the analysis still covers every rank"


def test_picking_ranks_reads_those_ranks_and_draws_their_lanes(big_board, job):
    view = big_board.views[0]
    mode = tv.mode_of("main", [5, 2])
    layout = tv.lane_layout(view, mode)
    assert _lane_ranks(layout) == {2, 5}
    whole = Run.open(job).slices.filter(pl.col("rank").is_in([2, 5]))
    assert layout.table.height == whole.height
    drawn = tv.whole(view, mode)
    assert _lane_ranks(drawn) == {2, 5}


def test_the_gaps_and_launches_drawn_are_the_picked_ranks(big_board):
    view = big_board.views[0]
    mode = tv.mode_of("main", [3])
    rep = view.report
    gaps = tv.gap_layout(view, mode)
    mine = rep.gaps.filter(pl.col("rank") == 3)
    assert (gaps.table.height if gaps is not None else 0) == mine.filter(pl.col("device") != "cpu").height
    ix = tv.launch_index(view, mode)
    launched = rep.launches.latency.filter(pl.col("rank") == 3).height
    assert (len(ix.launch_start_ns) if ix is not None else 0) == launched


def test_ranks_not_in_the_run_fall_back_to_the_default(big_board):
    view = big_board.views[0]
    assert tv.checked_mode(tv.mode_of("all", [99]), view) == "all|0"
    assert tv.checked_mode("main|x,1", view) == "main|1"


def test_a_small_job_shows_every_rank_at_once(job):
    view = create_app([job])._accelscope.views[0]
    assert not view.big and view.default_ranks() is None
    assert _lane_ranks(tv.lane_layout(view)) == set(range(8))


def test_the_rank_picker_lists_a_jobs_ranks_and_its_default(big_board):
    from accelscope.dashboard.sections.timeline import Timeline

    options, value, style = Timeline(big_board).ranks_for(0)
    assert [o["value"] for o in options] == list(range(8)) and value == [0] and style == {}
