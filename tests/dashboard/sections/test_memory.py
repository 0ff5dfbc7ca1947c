"""The Memory section on the real V100 ResNet-50 nw0 trace (8,220 allocator events on cuda:0,
4,618 on the CPU, no recorded totals: relative peaks), on the H100 Qwen inference trace
(recorded totals, reserved memory, addresses: what it held stacked by category), and its absence on a real trace without allocator events."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

pytest.importorskip("dash", reason="the dashboard extra is not installed")

from accelscope.analysis.memory_categories import CATEGORIES, run_timeline  # noqa: E402
from accelscope.dashboard.app import create_app  # noqa: E402
from accelscope.dashboard.report import build_report  # noqa: E402
from accelscope.dashboard.sections import memory  # noqa: E402
from accelscope.traces.importer import import_traces  # noqa: E402

NW0 = "traces/kineto/tb_plugin/samples/resnet50_num_workers_0/worker0.1623143089861.pt.trace.json.gz"
NO_MEMORY = "traces/kineto/_history/00a807b7/docs/traces/after_fix_trace.json"  # a real trace with steps, without [memory] events
QWEN = "traces/more/tracelens/h100__Qwen_Qwen1.5-0.5B-Chat__1016005.json.gz"  # torch 2.x: Total Allocated / Total Reserved recorded
UNITS = {"GiB": memory.GIB, "MiB": memory.MIB}


@pytest.fixture(scope="module")
def nw0(shared_dir, tmp_path_factory):
    return import_traces([shared_dir / NW0], tmp_path_factory.mktemp("mem") / "nw0", progress=False, workers=1)


@pytest.fixture(scope="module")
def board(nw0):
    return create_app([nw0])._accelscope


@pytest.fixture(scope="module")
def shown(board):
    """(style, figure, leaks, memory by op) as the section renders them for the nw0 run."""
    return memory.render(board, {"run": 0, "n": 1})


@pytest.fixture(scope="module")
def qwen(shared_dir, tmp_path_factory):
    path = import_traces([shared_dir / QWEN], tmp_path_factory.mktemp("mem") / "qwen", progress=False, workers=1)
    return create_app([path])._accelscope


@pytest.fixture(scope="module")
def bare(shared_dir, tmp_path_factory):
    path = import_traces([shared_dir / NO_MEMORY], tmp_path_factory.mktemp("mem") / "bare", progress=False, workers=1)
    return create_app([path])._accelscope


def _traces(fig, role: str) -> dict[str, object]:
    return {t.meta["device"]: t for t in fig.data if t.meta["role"] == role}


def _divisor(fig, device: str) -> float:
    """Bytes per unit of the panel drawing ``device`` (from its y axis title, "... (GiB)")."""
    trace = _traces(fig, "peak")[device]
    axis = fig.layout["yaxis" + trace.yaxis[1:]]
    return UNITS[axis.title.text.rsplit("(", 1)[1].rstrip(")")]


def test_the_section_is_shown_for_a_run_with_allocator_events(shown):
    style, fig = shown[:2]
    assert style == {} and fig.data


def test_each_peak_marker_is_at_the_reports_peak(board, shown):
    fig = shown[1]
    view = board.views[0]
    peaks = _traces(fig, "peak")
    for p in view.report.memory.iter_rows(named=True):
        marker = peaks[p["device"]]
        assert marker.x[0] == pytest.approx((p["peak_time_ns"] - view.origin_ns) / 1e6, abs=1e-9)
        assert marker.y[0] * _divisor(fig, p["device"]) == pytest.approx(p["peak_allocated_bytes"], rel=1e-12)
        assert f"{p['peak_allocated_bytes']:,} B" in marker.hovertext[0] and f"step {p['peak_step']}" in marker.hovertext[0]


def test_thinning_keeps_the_peak_in_the_drawn_series(board, shown):
    fig = shown[1]
    report = board.views[0].report
    drawn = _traces(fig, "allocated")
    assert board.views[0].run.memory.height > sum(len(t.x) for t in drawn.values()), "the series are thinned"
    for p in report.memory.iter_rows(named=True):
        y = np.asarray(drawn[p["device"]].y) * _divisor(fig, p["device"])
        assert y.max() == pytest.approx(p["peak_allocated_bytes"], rel=1e-12)


def test_thinning_to_a_few_buckets_keeps_each_peak(board):
    view = board.views[0]
    got = memory.thin(view.run.memory, view.origin_ns, int(view.end_ms * 1e6), buckets=20)
    most = dict(got.group_by("device").agg(pl.col("allocated_bytes").max()).iter_rows())
    assert most == dict(view.report.memory.select("device", "peak_allocated_bytes").iter_rows())
    assert got.group_by("device").len()["len"].max() <= 3 * 20, "at most three rows a bucket"


def test_one_allocated_series_per_device_of_the_report(board, shown):
    fig = shown[1]
    report = board.views[0].report
    assert sorted(_traces(fig, "allocated")) == sorted(report.memory["device"].to_list()) == ["cpu", "cuda:0"]
    assert len([t for t in fig.data if t.meta["role"] == "allocated"]) == report.memory.height


def test_the_relative_peak_is_said_and_its_device_total_hidden(board, shown):
    fig = shown[1]
    assert board.views[0].report.memory["relative"].all()
    assert memory.RELATIVE in _traces(fig, "peak")["cuda:0"].hovertext[0]
    total = _traces(fig, "total")["cuda:0"]
    assert total.visible == "legendonly" and total.y[0] * _divisor(fig, "cuda:0") == 34084028416  # the V100's, from the trace's deviceProperties


def test_reserved_memory_is_drawn_where_the_trace_records_it(qwen):
    fig = memory.render(qwen, {"run": 0, "n": 1})[1]
    peak = qwen.views[0].report.memory.filter(pl.col("device") == "cuda:0").row(0, named=True)
    assert not peak["relative"] and peak["peak_reserved_bytes"] == 2_629_828_608
    reserved = np.asarray(_traces(fig, "reserved")["cuda:0"].y) * _divisor(fig, "cuda:0")
    assert reserved.max() == pytest.approx(peak["peak_reserved_bytes"], rel=1e-12)
    assert "cpu" not in _traces(fig, "reserved"), "the CPU allocator's Total Reserved is a constant 0: nothing to draw"


def test_a_device_total_far_above_the_peak_is_left_in_the_legend(qwen):
    fig = memory.render(qwen, {"run": 0, "n": 1})[1]
    total = _traces(fig, "total")["cuda:0"]
    assert total.y[0] * _divisor(fig, "cuda:0") == pytest.approx(85018279936, rel=1e-12)  # the H100's, from the trace
    assert total.visible == "legendonly", "a 2.6 GiB peak against 79 GiB: drawn, the curve would be flattened"


def test_a_device_total_the_peak_comes_near_is_drawn(qwen):
    view = qwen.views[0]
    rows = memory.thin(view.run.memory, view.origin_ns, int(view.end_ms * 1e6))
    fig = memory.memory_figure(view.report.memory, rows, {(None, "cuda:0"): 4 * memory.GIB}, view.origin_ns, (0.0, view.end_ms))
    assert _traces(fig, "total")["cuda:0"].visible is True  # the same peaks on a device of 4 GiB


def test_a_run_without_allocator_events_has_no_memory_card(bare):
    assert bare.views[0].run.memory.height == 0
    assert memory.layout(bare) == []
    assert memory.render(bare, {"run": 0, "n": 1})[0] == memory.HIDDEN


def test_the_html_report_draws_the_memory_figure(nw0, shared_dir, tmp_path):
    assert "<h2>Memory</h2>" in build_report(nw0)
    bare = import_traces([shared_dir / NO_MEMORY], tmp_path / "bare", progress=False, workers=1)
    assert "<h2>Memory</h2>" not in build_report(bare)


def test_every_category_has_a_place_in_the_stack_and_a_colour():
    assert sorted(memory.STACK) == sorted(CATEGORIES) == sorted(memory.CATEGORY_COLORS)


def test_what_a_device_held_is_stacked_by_category_up_to_its_peak(qwen):
    """Qwen's trace records addresses: cuda:0's blocks by category (memory_categories.timeline),
    stacked beneath its allocated curve; where the areas reach highest is its peak."""
    view = qwen.views[0]
    fig = memory.render(qwen, {"run": 0, "n": 1})[1]
    areas = [t for t in fig.data if t.meta["role"] == "category" and t.meta["device"] == "cuda:0"]
    assert areas and {t.stackgroup for t in areas} == {"categories"}
    assert [t.meta["category"] for t in areas] == [c for c in memory.STACK if c in {t.meta["category"] for t in areas}], "in STACK order"
    stacked = np.sum([np.asarray(t.y) for t in areas], axis=0) * _divisor(fig, "cuda:0")
    peak = view.report.memory.filter(pl.col("device") == "cuda:0")["peak_allocated_bytes"][0]
    assert stacked.max() == pytest.approx(peak, rel=1e-12)
    order = [t.meta["role"] for t in fig.data if t.meta["device"] == "cuda:0"]
    assert order.index("allocated") > max(i for i, r in enumerate(order) if r == "category"), "the curve drawn over its areas"


def test_a_trace_without_addresses_draws_no_categories(shown):
    assert not [t for t in shown[1].data if t.meta["role"] == "category"]


def test_a_panel_of_several_devices_stacks_none(qwen):
    view = qwen.views[0]
    peaks = view.report.memory.filter(pl.col("device") == "cuda:0")
    two = pl.concat([peaks, peaks.with_columns(rank=pl.lit(1, pl.Int32))])
    rows = memory.thin(view.run.memory, view.origin_ns, int(view.end_ms * 1e6))
    cats = memory.thin_categories(run_timeline(view.run), view.origin_ns, int(view.end_ms * 1e6))
    one = [t.meta["role"] for t in memory.memory_figure(peaks, rows, {}, view.origin_ns, (0.0, view.end_ms), cats).data]
    both = [t.meta["role"] for t in memory.memory_figure(two, rows, {}, view.origin_ns, (0.0, view.end_ms), cats).data]
    assert "category" in one and "category" not in both, "the areas of two devices would hide each other"


def test_the_peaks_hover_says_what_it_held_by_category(qwen):
    report = qwen.views[0].report
    held = report.categories_at_peak(0, "cuda:0")
    assert held, "Qwen's trace records addresses"
    text = _traces(memory.render(qwen, {"run": 0, "n": 1})[1], "peak")["cuda:0"].hovertext[0]
    most = max(held, key=held.get)
    assert f"held: {most.replace('_', ' ')} {memory._size(held[most])}" in text
