"""The Memory section's tables: memory by op (``Report.memory_ops``) on the real V100 ResNet-50
nw0 trace and in the HTML report, the leaks on a real CPU torch run that keeps 1 MiB per step
(recorded here), and the click on a curve: which device and instant it names, and what the
panel says for a trace without addresses."""

from __future__ import annotations

import dataclasses
import warnings

import polars as pl
import pytest

pytest.importorskip("dash", reason="the dashboard extra is not installed")

from accelscope.analysis.memory_live import summarised  # noqa: E402
from accelscope.dashboard.app import create_app  # noqa: E402
from accelscope.dashboard.report import build_report  # noqa: E402
from accelscope.dashboard.sections import memory  # noqa: E402
from accelscope.dashboard.sections import memory_tables as mt  # noqa: E402
from accelscope.traces.importer import import_traces  # noqa: E402
from tests.dashboard.sections.test_memory import NW0  # noqa: E402

KEPT_BYTES = 2**20  # what the leaking loop keeps per step: torch.ones(262144), float32


def record_leaking_run(out):
    """A real CPU torch run recorded by ``accelscope.profile`` (full mode, allocator events with
    addresses): 11 steps of a small matmul, each keeping a new 1 MiB tensor made by
    ``torch.ones``; steps 2-9 traced. Its run directory."""
    torch = pytest.importorskip("torch", reason="the torch extra is needed to record allocator events")
    import accelscope
    from accelscope.schedule import Schedule

    x = torch.randn(64, 64)
    kept = []
    with warnings.catch_warnings(), accelscope.profile(out, framework="torch", live=False,
                                                       schedule=Schedule(skip_first=1, wait=0, warmup=1, active=8, repeat=1)) as prof:
        for _ in prof.iter(range(11)):
            (x @ x).relu().sum()
            kept.append(torch.ones(KEPT_BYTES // 4))
            prof.step()
    return prof.run_dir


@pytest.fixture(scope="module")
def nw0(shared_dir, tmp_path_factory):
    return import_traces([shared_dir / NW0], tmp_path_factory.mktemp("memt") / "nw0", progress=False, workers=1)


@pytest.fixture(scope="module")
def board(nw0):
    return create_app([nw0])._accelscope


@pytest.fixture(scope="module")
def leaking(tmp_path_factory):
    return record_leaking_run(tmp_path_factory.mktemp("memt") / "leak")


@pytest.fixture(scope="module")
def leak_board(leaking):
    return create_app([leaking])._accelscope


def test_sizes_are_in_the_largest_unit_under_them():
    assert [mt.size_text(n) for n in (512, -120, 1536, 3 * 2**20 // 2, 115606272, 2**31, None)] == [
        "512 B", "-120 B", "1.50 KiB", "1.50 MiB", "110 MiB", "2.00 GiB", "—"]


def test_the_grid_lists_every_row_of_memory_by_op_accelerators_first(board):
    report = board.views[0].report
    rows = mt.op_rows(report)
    assert len(rows) == report.memory_ops.height > 0
    assert {r["device"] for r in rows} == {"cuda:0", "cpu"}
    first_cpu = next(i for i, r in enumerate(rows) if r["device"] == "cpu")
    assert all(r["device"] == "cpu" for r in rows[first_cpu:]), "the host allocator after the accelerator"
    top = report.memory_ops.filter(pl.col("device") == "cuda:0").row(0, named=True)
    assert rows[0] == {k: top[k] for k in rows[0]}, "bytes as bytes: the grid sorts by them"


def test_the_grid_sorts_and_shows_bytes_in_human_units(board):
    g = mt.ops_grid(mt.op_rows(board.views[0].report))
    cols = {c["field"]: c for c in g.columnDefs}
    assert [c["headerName"] for c in g.columnDefs] == [h for _, h, _ in mt.OP_COLUMNS]
    assert {f for f, c in cols.items() if c.get("valueFormatter") == mt.BYTES_FORMAT} == {
        "allocated_bytes", "self_increase_bytes", "total_allocated_bytes", "total_increase_bytes"}
    assert g.defaultColDef["sortable"] and cols["allocations"]["type"] == "numericColumn"


def test_the_section_renders_the_grid_and_no_leaks_for_nw0(board):
    style, _, leaks, ops = memory.render(board, {"run": 0, "n": 1})
    assert style == {} and leaks == []
    assert ops[0].id == "memory-ops-table" and len(ops) == 1, "nothing left out: no line saying so"


def test_the_ops_left_out_are_counted_under_the_grid(board):
    report = dataclasses.replace(board.views[0].report, memory_ops_more=7)
    part = mt.ops_part(report)
    assert part[-1].children.startswith("7 more ops held memory and are not listed")
    assert mt.more_text(dataclasses.replace(report, memory_ops_more=1)).startswith("1 more op held")


def test_the_html_report_lists_memory_by_op_per_device(nw0):
    page = build_report(nw0)
    section = page.split("<h2>Memory</h2>", 1)[1]
    assert "<h3>Memory by op</h3>" in section and "Leaks" not in section
    assert section.index("<h4>cuda:0</h4>") < section.index("<h4>cpu</h4>")
    report = create_app([nw0])._accelscope.views[0].report
    top = report.memory_ops.filter(pl.col("device") == "cuda:0").row(0, named=True)
    cuda = section.split("<h4>cuda:0</h4>", 1)[1].split("<h4>", 1)[0]
    assert f"<td>{top['name']}</td><td>{top['allocations']:,}</td><td>{mt.size_text(top['allocated_bytes'])}</td>" in cuda


def test_a_leak_is_listed_with_its_growth_and_op(leak_board):
    report = leak_board.views[0].report
    assert report.memory_leaks.height == 1
    assert mt.leak_rows(report) == [["cpu", f"{report.memory_leaks['bytes_per_step'][0] / 2**20:,.1f} MiB", "7", "aten::ones", "8.00 MiB"]]
    assert mt.leak_rows(report)[0][1] == "1.0 MiB"
    _, _, leaks, _ = memory.render(leak_board, {"run": 0, "n": 1})
    assert "Leaks" in leaks[0].children and "aten::ones" in str(leaks[1])


def test_the_html_report_lists_the_leak(leaking):
    section = build_report(leaking).split("<h2>Memory</h2>", 1)[1]
    assert "<h3>Leaks: memory growing step over step</h3>" in section and "<td>aten::ones</td>" in section


def test_a_click_names_the_device_of_the_curve_the_figure_drew(board):
    fig = board.figure(0, memory.NAME, memory.figure_of)
    roles = {(t.meta["role"], t.meta["device"]): i for i, t in enumerate(fig.data)}
    on_cuda = {"points": [{"curveNumber": roles[("allocated", "cuda:0")], "x": 12.5, "y": 1.0}]}
    assert memory.clicked(fig, on_cuda) == (0, "cuda:0", 12.5)
    assert memory.clicked(fig, {"points": [{"curveNumber": roles[("peak", "cpu")], "x": 3.0}]}) == (0, "cpu", 3.0)
    assert memory.clicked(fig, {"points": [{"curveNumber": roles[("total", "cuda:0")], "x": 3.0}]}) is None
    near_peak = {"points": [{"curveNumber": roles[("allocated", "cpu")], "x": 2.9}, {"curveNumber": roles[("peak", "cpu")], "x": 3.0}]}
    assert memory.clicked(fig, near_peak) == (0, "cpu", 3.0), "a click at a peak is at the peak, not at the curve's nearest drawn point"
    for junk in (None, {}, {"points": "x"}, {"points": [{"curveNumber": 99, "x": 1}]}, {"points": [{"curveNumber": True, "x": "a"}]}):
        assert memory.clicked(fig, junk) is None


def test_a_trace_without_addresses_says_what_was_live_is_unknown(board):
    fig = board.figure(0, memory.NAME, memory.figure_of)
    n = next(i for i, t in enumerate(fig.data) if t.meta["role"] == "allocated" and t.meta["device"] == "cuda:0")
    assert not memory.has_addresses(board.views[0], 0, "cuda:0")
    got = str(memory.live(board, {"points": [{"curveNumber": n, "x": 100.0}]}, 0))
    assert mt.NO_ADDRESSES in got and "cuda:0 at 100.000 ms" in got


def test_without_a_click_or_on_another_run_the_panel_is_the_hint(board):
    fig = board.figure(0, memory.NAME, memory.figure_of)
    assert mt.LIVE_HINT in str(memory.live(board, None, 0))
    assert mt.LIVE_HINT in str(memory.live(board, {"points": [{"curveNumber": 2, "x": 1.0}]}, 0, run_changed=True))
    assert mt.LIVE_HINT in str(memory.live(board, {"points": [{"curveNumber": len(fig.data), "x": 1.0}]}, 0))


def test_a_click_at_the_peak_lists_what_was_live_then(leak_board):
    """At the leaking run's peak, the eight kept 1 MiB tensors of the traced steps, all made by aten::ones."""
    view = leak_board.views[0]
    peak = view.report.memory.row(0, named=True)
    fig = leak_board.figure(0, memory.NAME, memory.figure_of)
    n = next(i for i, t in enumerate(fig.data) if t.meta["role"] == "allocated")
    assert memory.has_addresses(view, 0, "cpu")
    panel = memory.live(leak_board, {"points": [{"curveNumber": n, "x": (peak["peak_time_ns"] - view.origin_ns) / 1e6}]}, 0)
    cells = [[td.children for td in tr.children] for tr in panel.children[1].children[1].children]
    assert ["aten::ones", "8.00 MiB", "8"] in [[c[0], *c[2:]] for c in cells], cells  # above or below what the process held before the trace
    assert cells[-1][0] == "total" and cells[-1][2] == mt.size_text(peak["peak_allocated_bytes"])


def test_the_live_panel_lists_the_largest_and_totals_them_all():
    live = pl.DataFrame({"op": [f"op{i}" for i in range(25)], "category": ["activation"] * 24 + ["before_trace"],
                         "live_bytes": [2**20 * (30 - i) for i in range(25)], "allocations": [1] * 25})
    rows = [[td.children for td in tr.children] for tr in mt.live_part(summarised(live, mt.LIVE_ROWS), "cuda:0", 1.0).children[1].children[1].children]
    assert len(rows) == mt.LIVE_ROWS + 2 and rows[0] == ["op0", "activation", "30.0 MiB", "1"]
    assert rows[-2] == ["5 more (op, category) pairs", "", mt.size_text(2**20 * sum(range(6, 11))), "5"]
    assert rows[-1] == ["total", "", mt.size_text(2**20 * sum(range(6, 31))), "25"]
    assert "Nothing" in str(mt.live_part(summarised(live.clear(), mt.LIVE_ROWS), "cuda:0", 1.0))


def test_a_jobs_rows_name_the_rank_with_the_device():
    from types import SimpleNamespace

    from accelscope.analysis.memory_ops import MEMORY_OPS_SCHEMA

    ops = pl.DataFrame({"rank": [0, 0, 1], "device": ["cpu", "cuda:0", "cuda:0"], "name": ["a", "b", "c"], "allocations": [1, 2, 3],
                        "allocated_bytes": [10, 20, 30], "self_increase_bytes": [10, 20, 30], "total_allocated_bytes": [10, 20, 30],
                        "total_increase_bytes": [10, 20, 30]}, schema=MEMORY_OPS_SCHEMA)
    rows = mt.op_rows(SimpleNamespace(memory_ops=ops))
    assert [(r["device"], r["name"]) for r in rows] == [("rank 0 · cuda:0", "b"), ("rank 1 · cuda:0", "c"), ("rank 0 · cpu", "a")]
