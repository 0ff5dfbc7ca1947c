"""What the dashboard prepares, kept inside the run (dashboard/prepared.py): a reopened run's
lane layout, launch index and whole-run timeline come from the run's cache, the same as
built; a changed run, other code or a live run builds them again."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("dash", reason="the dashboard extra is not installed")

from accelscope.analysis.cache import CACHE_DIR  # noqa: E402
from accelscope.dashboard import prepared  # noqa: E402
from accelscope.dashboard.runs import RunView  # noqa: E402
from accelscope.dashboard.timeline import view as tv  # noqa: E402
from accelscope.traces.run import META_FILE, Run  # noqa: E402


@pytest.fixture
def run_dir(fresh_run, tmp_path, monkeypatch):
    monkeypatch.setenv("ACCELSCOPE_CACHE_DIR", str(tmp_path / "user-cache"))
    return fresh_run


def _view(path) -> RunView:
    return RunView(Run.open(path), "r")


def _no_building(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("built again")

    monkeypatch.setattr(tv, "build_lane_layout", fail)
    monkeypatch.setattr(tv.SchedulingIndex, "build", fail)


def _count_drawing(monkeypatch) -> list[int]:
    calls, real = [], tv.build_timeline
    monkeypatch.setattr(tv, "build_timeline", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    return calls


def _kept(run_dir) -> list[str]:
    return sorted(p.name.split("-")[0] for p in (run_dir / CACHE_DIR).glob("dash.*.pkl")) if (run_dir / CACHE_DIR).is_dir() else []


def test_a_reopened_run_draws_from_what_was_kept(run_dir, monkeypatch):
    first = _view(run_dir)
    built = tv.whole(first)
    layout = tv.lane_layout(first)
    assert _kept(run_dir) == ["dash.lanes", "dash.scheduling", "dash.timeline"]
    _no_building(monkeypatch)
    drawing = _count_drawing(monkeypatch)
    again = _view(run_dir)
    kept = tv.whole(again)
    assert drawing == [], "the whole run's marks were kept"
    assert kept.lanes == built.lanes and kept.total_slices == built.total_slices and kept.marks == built.marks
    assert tv.lane_layout(again).table.equals(layout.table)
    assert tv.window(again, 0.0, again.end_ms / 2).total_slices > 0 and drawing == [1], "zooms draw from the kept layout"


def test_a_changed_run_is_prepared_again(run_dir, monkeypatch):
    tv.whole(_view(run_dir))
    meta = json.loads((run_dir / META_FILE).read_text())
    meta["note"] = "edited"
    (run_dir / META_FILE).write_text(json.dumps(meta))
    _no_building(monkeypatch)
    with pytest.raises(AssertionError, match="built again"):
        tv.whole(_view(run_dir))


def test_other_code_prepares_again(run_dir, monkeypatch):
    tv.whole(_view(run_dir))
    monkeypatch.setattr(prepared, "source_digest", lambda *packages: "other-code")
    _no_building(monkeypatch)
    with pytest.raises(AssertionError, match="built again"):
        tv.whole(_view(run_dir))


def test_a_live_run_keeps_nothing(run_dir):
    meta = json.loads((run_dir / META_FILE).read_text())
    meta["complete"] = False
    (run_dir / META_FILE).write_text(json.dumps(meta))
    view = _view(run_dir)
    assert view.run.live and prepared.run_key(view.run) is None
    tv.whole(view)
    assert _kept(run_dir) == []


def test_a_run_that_cannot_hold_a_cache_is_still_drawn(run_dir):
    (run_dir / CACHE_DIR).mkdir(exist_ok=True)
    (run_dir / CACHE_DIR).chmod(0o500)
    try:
        drawn = tv.whole(_view(run_dir))
    finally:
        (run_dir / CACHE_DIR).chmod(0o700)
    assert drawn.total_slices > 0


def test_a_reopened_runs_first_view_reads_no_event(run_dir, monkeypatch):
    from accelscope.dashboard.app import Dashboard
    from accelscope.dashboard.sections.timeline import Timeline

    first = Timeline(Dashboard([run_dir])).whole(0, 1240)
    board = Dashboard([run_dir])
    started = []
    monkeypatch.setattr(board, "prepare_in_background", lambda index=0: started.append(index))
    _no_building(monkeypatch)
    again = Timeline(board).whole(0, 1240)
    view = board.views[0]
    assert again.to_json() == first.to_json()
    assert not view.run.slices_loaded and "report" not in view._cache, "drawn from what was kept, nothing read"
    assert started == [0], "zooms and clicks are prepared in the background meanwhile"
