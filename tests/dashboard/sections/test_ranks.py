"""The Ranks section on a real 3-rank torchrun job (gloo, CPU) whose rank 2 waits at least 30 ms a step
for its batch (``tests/jobs/launch.LOADER_3``), and its absence on a single-rank run."""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl
import pytest

pytest.importorskip("dash", reason="the dashboard extra is not installed")

from accelscope.analysis import analyze  # noqa: E402
from accelscope.dashboard import plotlyjs  # noqa: E402
from accelscope.dashboard import rank_figures as rf  # noqa: E402
from accelscope.dashboard.app import create_app  # noqa: E402
from accelscope.dashboard.report import build_report  # noqa: E402
from accelscope.dashboard.sections import overview, ranks  # noqa: E402
from accelscope.traces.run import Run  # noqa: E402
from tests.jobs.launch import LOADER_3  # noqa: E402

STRAGGLER = 2


@pytest.fixture(scope="module")
def job(ddp_job):
    return ddp_job(*LOADER_3) / "ddp"


@pytest.fixture(scope="module")
def report(job):
    return analyze(Run.open(job))


@pytest.fixture(scope="module")
def board(job):
    return create_app([job])._accelscope


def _ids(component) -> set[str]:
    """Every component id in a Dash layout tree."""
    out = set()
    stack = [component]
    while stack:
        c = stack.pop()
        if isinstance(c, (list, tuple)):
            stack.extend(c)
            continue
        if getattr(c, "id", None):
            out.add(c.id)
        children = getattr(c, "children", None)
        if children is not None and not isinstance(children, str):
            stack.append(children)
    return out


def _texts(component) -> str:
    """The text of a Dash component tree."""
    if isinstance(component, str):
        return component
    if isinstance(component, (list, tuple)):
        return "".join(_texts(c) for c in component)
    children = getattr(component, "children", None)
    return "" if children is None else _texts(children)


def test_the_report_names_rank_2_the_straggler(report):
    assert report.ranks is not None and report.ranks.height == 3
    assert [s.rank for s in report.stragglers] == [STRAGGLER], "the job's injected straggler (the analyzer's finding this section renders)"


def test_the_summary_shows_the_straggler_and_the_projected_step(board, report):
    style, summary, table, collectives, fig = ranks.render(board, {"run": 0, "n": 1})
    assert style == {}, "shown for a run of several ranks"
    s = report.stragglers[0]
    lines = ranks.summary(report)
    assert [kind for kind, _ in lines] == ["straggler"]
    assert lines[0][1].startswith(s.text) and f"rank {STRAGGLER} were not late" in lines[0][1]
    assert ranks.format_duration_ns(s.projected_step_ns) in lines[0][1]
    assert "Straggler: " + s.text in _texts(summary)
    # The per-rank table is rank_rows, the straggler's row tinted.
    rows = table.children[1].children
    assert [_texts(r.children[0]) for r in rows] == ["0", "1", f"{STRAGGLER} (straggler)"]
    assert [r.className for r in rows] == [None, None, "straggler-row"]
    assert "all_reduce" in _texts(collectives)


def test_the_overview_names_the_straggler(board, report):
    out = dict(zip((f"{cid}.{prop}" for cid, prop in overview.OUTPUTS), overview.render(board, 0)))
    text = _texts(out["overview-ranks.children"])
    assert text.startswith("Straggler: " + report.stragglers[0].text) and "See Ranks." in text


def test_the_heatmap_has_a_row_per_rank_and_a_column_per_analysed_step(board, report):
    fig = ranks.render_heatmap(board, {"run": 0, "n": 1}, rf.STEP)
    (tiles,) = fig.data
    assert tiles.type == "bar"
    analysed = report.steps.filter(pl.col("analysed")).sort("rank", "step")
    assert sorted({round(b + 0.46) for b in tiles.base}) == [0, 1, 2], "3 rows: one per rank"
    assert list(fig.layout.yaxis.tickvals) == [0, 1, 2]
    assert fig.layout.yaxis.range[0] > fig.layout.yaxis.range[1], "rank 0 on top"
    assert f">{STRAGGLER}<" in fig.layout.yaxis.ticktext[STRAGGLER] and "C62828" in fig.layout.yaxis.ticktext[STRAGGLER], "the straggler's tick in red"
    assert list(tiles.x) == analysed["step"].to_list()
    assert fig.layout.xaxis.tickformat == "d" and fig.layout.xaxis.dtick == 1, "integer step ticks"
    np.testing.assert_allclose(tiles.marker.color, analysed["dur_ns"].to_numpy() / 1e6)
    wait = ranks.render_heatmap(board, {"run": 0, "n": 1}, rf.WAIT).data[0]
    np.testing.assert_allclose(wait.marker.color, analysed["rank_wait_ns"].to_numpy() / 1e6)
    # The others waited for rank 2, not rank 2 for them.
    by_rank = analysed.group_by("rank").agg(pl.col("rank_wait_ns").sum()).sort("rank")["rank_wait_ns"].to_list()
    assert by_rank[STRAGGLER] < min(by_rank[:STRAGGLER])


def test_many_steps_share_columns(report):
    """A long run: consecutive steps share a column, their mean, so the map stays small."""
    st = report.steps
    many = pl.concat([st.with_columns(step=pl.col("step") + k * 100) for k in range(40)])  # 640 steps per rank
    fig = rf.heatmap_figure(dataclasses.replace(report, steps=many), rf.STEP)
    columns = len(set(fig.data[0].x))
    assert columns <= rf.MAX_STEP_COLUMNS and len(fig.data[0].x) == 3 * columns
    assert "consecutive steps per column" in fig.layout.title.text


def test_the_collectives_figure_draws_a_few_steps_rank_by_rank(board, report):
    _, _, _, _, fig = ranks.render(board, {"run": 0, "n": 1})
    steps, inst, arr = rf.collective_window(report)
    analysed = set(report.steps.filter(pl.col("analysed"))["step"].to_list())
    assert len(steps) == rf.WINDOW_STEPS and set(steps) <= analysed
    assert inst.height and set(inst["step"].to_list()) == set(steps) and arr.height == inst.height * 3
    by_name = {t.name: t for t in fig.data}
    waits = by_name["waiting for the last rank"]
    assert sorted(set(waits.y)) == [r for r in (0, 1, 2) if arr.filter((pl.col("rank") == r) & (pl.col("wait_ns") > 0)).height]
    np.testing.assert_allclose(sorted(waits.x), sorted(arr.filter(pl.col("wait_ns") > 0)["wait_ns"].to_numpy() / 1e6))
    last = by_name["last arrival"]
    assert len(last.x) == inst.height and sorted(round(y + 0.36) for y in last.y) == sorted(inst["last_rank"].to_list())
    assert len(fig.layout.shapes) == inst.height, "a band per collective, first to last arrival"
    assert list(fig.layout.yaxis.tickvals) == [0, 1, 2]
    view = board.views[0]
    lo, hi = fig.layout.meta["window_ms"]
    assert 0 <= lo < hi <= view.end_ms + 1, "on the timeline's axis (ms since the run's start), for the zoom button"
    assert (arr["start_ns"].min() - view.origin_ns) / 1e6 >= lo


def test_the_collectives_figure_keeps_its_arrivals_bounded(report, monkeypatch):
    monkeypatch.setattr(rf, "MAX_ARRIVALS", 4)
    steps, inst, arr = rf.collective_window(report)
    assert len(steps) == 1 and arr.height <= 4 and inst.height == 1, "one step, then its first collectives only"


def test_every_ranks_figure_is_one_the_bundle_draws(report, board):
    figs = [rf.heatmap_figure(report, rf.STEP), rf.heatmap_figure(report, rf.WAIT), rf.collectives_figure(report, board.views[0].origin_ns)]
    types = {t.type for f in figs for t in f.data}
    assert types <= plotlyjs.TRACE_TYPES


def test_a_single_rank_run_has_no_ranks_section(recorded_run):
    app = create_app([recorded_run])
    ids = _ids(app.layout)
    assert "overview-ranks" in ids and not ids & {"section-ranks", "ranks-heatmap", "ranks-collectives", "ranks-table-box"}
    board = app._accelscope
    assert "ranks" in board.sections and board.sections["ranks"] is None
    out = dict(zip((f"{cid}.{prop}" for cid, prop in overview.OUTPUTS), overview.render(board, 0)))
    assert out["overview-ranks.children"] == [], "the Overview looks as before"
    assert ranks.summary(board.views[0].report) == []


def test_with_runs_of_one_and_of_several_ranks_the_section_shows_for_the_latter(recorded_run, job):
    app = create_app([recorded_run, job])
    board = app._accelscope
    section = next(c for c in app.layout.children[1].children if getattr(c, "id", None) == "section-ranks")
    assert section.style == ranks.HIDDEN, "hidden while the first run (one rank) is shown"
    assert ranks.render(board, {"run": 0, "n": 1})[0] == ranks.HIDDEN
    assert ranks.render(board, {"run": 1, "n": 2})[0] == {}


def test_the_html_report_has_the_ranks_section(job, report):
    text = build_report(job)
    assert "<h2>Ranks</h2>" in text and "<b>Straggler:</b> " + report.stragglers[0].text.replace("'", "&#x27;") in text
    assert f"<tr class='straggler'><td>{STRAGGLER} (straggler)</td>" in text
    assert "<h2>Collectives by kind</h2>" in text
