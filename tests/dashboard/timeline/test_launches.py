"""The timeline's scheduling panels and click details on a real trace (nw0, V100), checked
against ``accelscope.scheduling`` and the analyzer."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import polars as pl
import pytest

pytest.importorskip("dash", reason="the dashboard extra is not installed")

from accelscope.analysis import launches as scheduling  # noqa: E402
from accelscope.analysis.causes import CAUSE_TEXT, CAUSES  # noqa: E402
from accelscope.dashboard.app import create_app  # noqa: E402
from accelscope.dashboard.formatting import CAT_GAP, CAT_LAUNCH, CAT_MERGED, CAT_SLICE, format_duration_ns  # noqa: E402
from accelscope.dashboard.timeline import view as tv  # noqa: E402
from accelscope.dashboard.timeline.launches import MAX_FLOWS, MAX_LATENCY_POINTS  # noqa: E402
from accelscope.traces.run import Run  # noqa: E402

NW0 = "traces/kineto/tb_plugin/samples/resnet50_num_workers_0/worker0.1623143089861.pt.trace.json.gz"


@pytest.fixture(scope="module")
def nw0_run(shared_dir, tmp_path_factory) -> Path:
    from accelscope.traces.importer import import_traces

    return import_traces([shared_dir / NW0], tmp_path_factory.mktemp("sched") / "nw0", progress=False)


@pytest.fixture(scope="module")
def board(nw0_run):
    return create_app([nw0_run])._accelscope


@pytest.fixture(scope="module")
def launches(nw0_run) -> pl.DataFrame:
    return scheduling.launch_latency(Run.open(nw0_run).slices)


def test_the_latency_panel_titles_the_runs_median_and_p90(board, launches):
    fig = board.figures(0)["timeline"]
    lat = launches["latency_ns"].to_numpy()
    median, p90 = np.percentile(lat, [50, 90])
    title = next(a.text for a in fig.layout.annotations if a.text.startswith("launch → start latency"))
    assert f"of {launches.height:,} device ops" in title
    assert f"median {format_duration_ns(median)}, p90 {format_duration_ns(p90)}" in title
    assert (format_duration_ns(median), format_duration_ns(p90)) == ("9.5 ms", "26.1 ms"), "docs/analysis.md: 9.50 / 26.08 ms"


def test_the_latency_plot_shows_every_launch_when_few_and_their_latencies(board, launches, nw0_run):
    view = board.views[0]
    tl = tv.window(view, 300.0, 320.0)
    o = view.origin_ns
    sel = launches.filter((pl.col("start_ns") >= o + 300_000_000) & (pl.col("start_ns") < o + 320_000_000))
    assert 0 < sel.height == tl.latency.in_view and not tl.latency.thinned
    shown = np.sort(np.concatenate([s.latency_us for s in tl.latency.series]))
    np.testing.assert_allclose(shown, np.sort(sel["latency_ns"].to_numpy() / 1e3))
    fig = board.sections["timeline"].zoom({"xaxis.range": [300.0, 320.0]}, 0)
    points = next(t for t in fig.data if t.yaxis == "y3" and t.mode == "none")
    assert np.asarray(points.customdata)[:, 0].tolist() == [CAT_LAUNCH] * sel.height
    names = set(sel["name"].to_list())
    # Hover names are HTML-escaped and cut to 80 characters.
    assert all(any(n.startswith(html.unescape(t).rstrip("…")) for n in names) for t in points.text)


def test_the_whole_run_latency_plot_is_thinned_but_its_figures_are_of_every_launch(board, launches):
    tl = tv.whole(board.views[0])
    assert tl.latency.in_view == launches.height
    assert tl.latency.thinned and 0 < tl.latency.shown <= MAX_LATENCY_POINTS and tl.latency.cell_px >= 3
    assert tl.latency.median_ns == pytest.approx(float(np.percentile(launches["latency_ns"].to_numpy(), 50)))


def test_the_queue_track_shows_each_streams_depth_and_its_peak(board, nw0_run):
    depth = scheduling.queue_depth(Run.open(nw0_run).slices)
    fig = board.figures(0)["timeline"]
    track = [t for t in fig.data if t.yaxis == "y2"]
    assert [t.name for t in track] == [f"cuda:0 stream {s}" for s in depth["stream"].unique(maintain_order=True).to_list()]
    peak = int(depth.filter(pl.col("stream") == 7)["depth"].max())
    assert peak == 570, "docs/analysis.md: max 570 on stream 7"
    stream7 = next(t for t in track if t.name == "cuda:0 stream 7")
    assert int(np.max(stream7.y)) == peak and stream7.line.shape == "hv"
    assert any(f"max {peak:,} in view" in a.text for a in fig.layout.annotations)


def test_a_zoomed_queue_track_follows_the_step_function_exactly(board, nw0_run):
    depth = scheduling.queue_depth(Run.open(nw0_run).slices).filter(pl.col("stream") == 7)
    view = board.views[0]
    o = view.origin_ns
    tl = tv.window(view, 400.0, 401.0)
    q = next(s for s in tl.queue if s.label == "cuda:0 stream 7")
    t_ns = depth["time_ns"].to_numpy()
    inside = (t_ns > o + 400_000_000) & (t_ns < o + 401_000_000)
    assert q.x_ms.size == int(inside.sum()) + 2  # the value held at the window's start, the changes, its end
    np.testing.assert_array_equal(q.depth[1:-1], depth["depth"].to_numpy()[inside])
    held = depth["depth"].to_numpy()[np.searchsorted(t_ns, o + 400_000_000, side="right") - 1]
    assert q.depth[0] == held


def test_flows_join_each_launch_of_a_zoomed_window_to_its_kernel(board, launches):
    view = board.views[0]
    o = view.origin_ns
    a, b = 600.0, 603.0
    tl = tv.window(view, a, b)
    crossing = launches.filter((pl.col("launch_start_ns") < o + int(b * 1e6)) & (pl.col("launch_start_ns") >= o + int(a * 1e6)))
    assert 0 < crossing.height <= MAX_FLOWS
    assert tl.flows.in_view == tl.flows.shown == crossing.height
    starts = np.sort(tl.flows.x_ms[0::3])
    np.testing.assert_allclose(starts, np.sort((crossing["launch_start_ns"].to_numpy() - o) / 1e6), atol=1e-9)
    ends = np.sort(tl.flows.x_ms[1::3])
    np.testing.assert_allclose(ends, np.sort((crossing["start_ns"].to_numpy() - o) / 1e6), atol=1e-9)
    device_row = next(lane.row0 for lane in tl.lanes if lane.label == "cuda:0 stream 7")
    assert set(tl.flows.y[1::3].tolist()) == {float(device_row)}


def test_no_flows_are_drawn_for_the_whole_run_only_counted(board, launches):
    tl = tv.whole(board.views[0])
    assert tl.flows.shown == 0 and tl.flows.in_view == launches.height > MAX_FLOWS
    assert f"launch → kernel arrows below {MAX_FLOWS} launches in view ({launches.height:,} now)" in board.figures(0)["timeline"].layout.title.text


def test_clicking_a_kernel_shows_its_name_stream_and_launch(board, launches):
    fig = board.sections["timeline"].zoom({"xaxis.range": [600.0, 603.0]}, 0)
    hover = next(t for t in fig.data if t.name == "kernel details")
    custom = [float(v) for v in np.asarray(hover.customdata)[0]]
    assert custom[0] == CAT_SLICE
    d = tv.details(board.views[0], custom)
    rows = dict(d.rows)
    assert d.kind == "kernel" and d.title.startswith(hover.text[0].rstrip("…")[:60])
    assert rows["stream"] == "cuda:0 stream 7"
    k = launches.filter(pl.col("correlation_id") == int(rows["correlation id"]))
    assert rows["launch → start"] == format_duration_ns(int(k["latency_ns"][0]))
    assert rows["duration"] == format_duration_ns(int(k["end_ns"][0] - k["start_ns"][0]))


def test_clicking_a_gap_shows_its_cause_breakdown(board, nw0_run):
    from accelscope.analysis import analyze

    gaps = analyze(Run.open(nw0_run)).gaps
    fig = board.figures(0)["timeline"]
    hover = next(t for t in fig.data if t.name == "idle gap details")
    custom = np.asarray(hover.customdata)
    longest = int(np.argmax(custom[:, 3]))
    d = tv.details(board.views[0], [float(v) for v in custom[longest]])
    gap = gaps.sort("dur_ns", descending=True).row(0, named=True)
    assert dict(d.rows)["duration"] == format_duration_ns(gap["dur_ns"])
    assert d.title == f"idle: {CAUSE_TEXT[gap['cause']]}"
    expected = sorted(((gap[f"{c}_ns"], CAUSE_TEXT[c]) for c in CAUSES if gap[f"{c}_ns"] > 0), reverse=True)
    assert [(row[0], row[1]) for row in d.table] == [(text, format_duration_ns(ns)) for ns, text in expected]


def test_clicking_a_merged_mark_lists_what_it_stands_for(board):
    fig = board.figures(0)["timeline"]
    hover = next(t for t in fig.data if t.name == "kernel merged details")
    custom = np.asarray(hover.customdata)
    i = int(np.argmax(custom[:, 4]))
    assert custom[i, 0] == CAT_MERGED
    d = tv.details(board.views[0], [float(v) for v in custom[i]])
    assert dict(d.rows)["slices"] == f"{int(custom[i, 4]):,}"
    assert sum(int(row[1].replace(",", "")) for row in d.table) <= int(custom[i, 4]) and d.table


@pytest.mark.parametrize("custom", [None, [], [0, 1], [9, 0, 0], [0, -1, 0], [0, 10**9, 0], [1, 5, 2], [CAT_GAP, 10**8, 0], ["0", 1, 1], [True, 1, 1], [0.5, 1, 1], [0, 1, 1, 2, 3, 4, 5, 6]])
def test_hostile_click_data_shows_nothing(board, custom):
    assert tv.details(board.views[0], custom) is None
