"""The dashboard app and its figures, on a real recorded run (no browser here)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

pytest.importorskip("dash", reason="the dashboard extra is not installed")

from accelscope.analysis import analyze  # noqa: E402
from accelscope.dashboard import app as app_mod  # noqa: E402
from accelscope.dashboard.app import Dashboard, create_app  # noqa: E402
from accelscope.dashboard.runs import RunView, run_labels  # noqa: E402
from accelscope.dashboard.sections import kernels, metrics, overview  # noqa: E402
from accelscope.dashboard.sections.timeline import Timeline  # noqa: E402
from accelscope.dashboard.timeline import view as tv  # noqa: E402
from accelscope.errors import RunFormatError  # noqa: E402
from accelscope.traces import schema as S  # noqa: E402
from accelscope.traces.run import Run, write_run  # noqa: E402
from accelscope.verdicts import VERDICT_TEXT  # noqa: E402
from tests.builders import DEVICE_SLICE, event_table  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


# -- helpers ------------------------------------------------------------------------------
def _events(rows: list[tuple]) -> pl.DataFrame:
    """rows: (start_ns, dur_ns, kind, name, device, stream, pid, tid)."""
    return event_table(rows, (*DEVICE_SLICE, "pid", "tid"))


def _marks(fig, kind: str, merged: bool | None = False) -> list[tuple[float, float, float]]:
    """(x0_ms, x1_ms, row) of each segment drawn for a kind: line traces hold [x0, x1, NaN] triplets."""
    out: list[tuple[float, float, float]] = []
    for tr in fig.data:
        meta = tr.meta if isinstance(tr.meta, dict) else {}
        if "merged" not in meta or tr.legendgroup != kind or (merged is not None and meta["merged"] != merged):
            continue
        x, y = np.asarray(tr.x, dtype=float), np.asarray(tr.y, dtype=float)
        assert np.isnan(x[2::3]).all() and np.isnan(y[2::3]).all()
        out += list(zip(x[0::3].tolist(), x[1::3].tolist(), y[0::3].tolist()))
    return out


def _hover(fig, name: str):
    """The hover/click trace of that name ("kernel details", "idle gap details", ...)."""
    return next(t for t in fig.data if t.name == name)


def _lane_rows(fig, label: str) -> tuple[float, float]:
    """The row range of the lane with this tick label (lanes are centred on their rows)."""
    ticks = list(fig.layout.yaxis.ticktext)
    vals = list(fig.layout.yaxis.tickvals)
    i = next(k for k, t in enumerate(ticks) if t.split("<br>")[0] == label)
    lo = vals[i - 1] if i else -1
    hi = vals[i + 1] if i + 1 < len(vals) else float("inf")
    return lo, hi


@pytest.fixture(scope="module")
def board(recorded_run):
    return create_app([recorded_run])._accelscope


def _rest(board, request: dict) -> dict:
    """What the sections below the timeline show for a rest-request: {"id.prop": value}."""
    m = metrics.render(board, request)
    k = kernels.render(board, request)
    return {"metrics-graph.figure": m, "kernels-table-box.children": k[0], "ops-table-box.children": k[1]}


@pytest.fixture(scope="module")
def report(recorded_run):
    return analyze(Run.open(recorded_run))


@pytest.fixture(scope="module")
def figs(board):
    return board.figures(0)


# -- overview -------------------------------------------------------------------------------
def test_step_graph_stacks_the_analyzers_breakdown_per_step(figs, report):
    from accelscope.analysis.breakdown import BREAKDOWN

    fig = figs["step"]
    assert fig.layout.barmode == "stack" and {t.type for t in fig.data} == {"bar"}
    present = [c.replace("_", " ") for c in BREAKDOWN if report.steps[f"{c}_ns"].sum() > 0]
    assert [t.name for t in fig.data] == present
    assert "input wait" in present and "host compute" in present, "a CPU demo run: waiting and computing"
    assert report.n_steps == 14
    assert all(list(t.x) == list(range(14)) for t in fig.data)
    expected_total = report.steps["dur_ns"].to_numpy() / 1e6
    np.testing.assert_allclose(np.sum([t.y for t in fig.data], axis=0), expected_total, rtol=1e-9)
    wait = next(t for t in fig.data if t.name == "input wait")
    np.testing.assert_allclose(wait.y, report.steps["input_wait_ns"].to_numpy() / 1e6, rtol=1e-9)
    assert (np.array(wait.y) > 0).all(), "every step of the demo waits for its batch"
    # The warm-up step is marked: hatched and labelled.
    assert wait.marker.pattern.shape[0] == "/" and set(wait.marker.pattern.shape[1:]) == {""}
    assert any(a.text == "warm-up" and a.x == 0 for a in fig.layout.annotations)


def test_overview_shows_the_analyzers_numbers(board, report):
    out = dict(zip((f"{cid}.{prop}" for cid, prop in overview.OUTPUTS), overview.render(board, 0)))
    assert out["overview-steps.children"] == "14"
    assert out["overview-mean-step.children"] == f"{report.mean_step_ns / 1e6:,.1f} ms"
    assert out["overview-input-share.children"] == f"{report.input_wait_share * 100:.1f}%"
    assert out["overview-verdict.children"] == VERDICT_TEXT[report.verdict]
    assert out["overview-verdict-card.className"] == f"card verdict-{report.verdict}"
    notes = [li.children for li in out["overview-notes.children"]]
    assert notes == report.notes
    recs = [li.children for li in out["overview-recommendations.children"]]
    assert recs == (report.recommendations or [overview.NO_RECOMMENDATION])
    assert board.header(0)[0].children == "recorded"


def test_callbacks_serve_only_the_given_runs(board):
    dash = pytest.importorskip("dash")
    for bad in (1, -1, "0", "../recorded", "/etc", None, True, 0.0, {"path": "/"}):
        with pytest.raises(dash.exceptions.PreventUpdate):
            overview.render(board, bad)
        with pytest.raises(dash.exceptions.PreventUpdate):
            board.header(bad)
        for section in (metrics, kernels):
            with pytest.raises(dash.exceptions.PreventUpdate):
                section.render(board, {"run": bad, "n": 1})
    for bad in (None, 0, "0", [0], {"n": 1}):
        for section in (metrics, kernels):
            with pytest.raises(dash.exceptions.PreventUpdate):
                section.render(board, bad)


# -- timeline -----------------------------------------------------------------------------------
def test_zooming_asks_for_that_window_only(board):
    dash = pytest.importorskip("dash")
    full = board.figures(0)["timeline"]
    assert full.layout.uirevision == "run-0"
    zoom = board.sections["timeline"].zoom
    zoomed = zoom({"xaxis.range[0]": 100.0, "xaxis.range[1]": 300.0}, 0)
    assert list(zoomed.layout.xaxis.range) == [100.0, 300.0]
    assert "in this view" in zoomed.layout.title.text and zoomed.layout.uirevision == "run-0"
    xs = np.concatenate([np.asarray(t.x, dtype=float) for t in zoomed.data if isinstance(t.meta, dict) and "merged" in t.meta])
    xs = xs[~np.isnan(xs)]
    assert xs.min() >= 100.0 - 200.0 and xs.max() <= 300.0 + 200.0  # marks reach at most one view width beyond
    assert zoom({"xaxis.range": [100, 300]}, 0).layout.xaxis.range == zoomed.layout.xaxis.range
    assert zoom({"xaxis.autorange": True}, 0) is full
    assert zoom({"xaxis.range": [-1e9, 1e12]}, 0) is full
    for bad in ({"autosize": True}, {"xaxis.range[0]": "0", "xaxis.range[1]": "1"}, {"xaxis.range": [5, 1]},
                {"xaxis.range": [float("nan"), 1]}, "/etc/passwd", None):
        with pytest.raises(dash.exceptions.PreventUpdate):
            zoom(bad, 0)
    with pytest.raises(dash.exceptions.PreventUpdate):
        zoom({"xaxis.range": [0, 10]}, 3)


def test_timeline_lanes_include_the_training_thread_and_steps(figs, recorded_run):
    fig = figs["timeline"]
    run = Run.open(recorded_run)
    training = [n for n in run.thread_names().values() if "(training)" in n]
    assert training, "the recorder names the training thread"
    ticks = [t.split("<br>")[0] for t in fig.layout.yaxis.ticktext]
    assert ticks[0] == "<b>steps</b>"
    assert training[0] in ticks
    assert {t.type for t in fig.data} == {"scatter"}
    assert fig.layout.xaxis.title.text == "time since run start (ms)"
    assert fig.layout.template.layout.to_plotly_json() == __import__("plotly.io").io.templates["plotly_white"].layout.to_plotly_json()


def test_timeline_draws_every_input_wait_in_red_on_the_training_thread(figs, recorded_run):
    fig = figs["timeline"]
    run = Run.open(recorded_run)
    waits = run.events.filter(pl.col("kind") == S.INPUT_WAIT).sort("start_ns")
    pixel_ns = fig.layout.meta["bucket_ns"]
    long = waits.filter(pl.col("dur_ns") >= pixel_ns)
    assert long.height >= waits.height - 1, "at most the last wait (StopIteration) is under a pixel"
    drawn = {t.meta["merged"]: t for t in fig.data if t.legendgroup == S.INPUT_WAIT and t.mode == "lines"}
    expected = {False: long.height, True: waits.height - long.height}
    assert {m: t.meta["slices"] for m, t in drawn.items()} == {m: n for m, n in expected.items() if n}
    assert {t.line.color.upper() for t in drawn.values()} == {"#D62728"}
    marks = sorted(_marks(fig, S.INPUT_WAIT))
    waits = long
    assert len(marks) == waits.height
    label = next(n for n in run.thread_names().values() if "(training)" in n)
    lo, hi = _lane_rows(fig, label)
    assert all(lo < row < hi for _, _, row in marks)
    # The x values are ms from the run's start, each mark spanning its wait.
    origin = min(run.meta["start_ns"], int(run.events["start_ns"].min()))
    np.testing.assert_allclose([m[0] for m in marks], (waits["start_ns"].to_numpy() - origin) / 1e6, atol=1e-6)
    np.testing.assert_allclose([m[1] - m[0] for m in marks], waits["dur_ns"].to_numpy() / 1e6, atol=1e-6)
    # Hover says what the slice is and how long it took (the template formats the seconds).
    hover = _hover(fig, "input_wait details")
    # The last wait ends the loop (StopIteration): drawn too when it lasted a pixel or more.
    names = list(hover.text)
    assert set(names) <= {"next(DataLoader)", "next(DataLoader) [exhausted]"} and names.count("next(DataLoader) [exhausted]") <= 1
    assert "input_wait · %{customdata[3]:.3~s}s" in hover.hovertemplate
    np.testing.assert_allclose(sorted(set(np.asarray(hover.customdata)[:, 3])), sorted(set(waits["dur_ns"].to_numpy() / 1e9)), rtol=1e-9)


def test_timeline_kinds_and_steps(figs, recorded_run):
    fig = figs["timeline"]
    run = Run.open(recorded_run)
    kinds = {t.legendgroup for t in fig.data if isinstance(t.meta, dict) and "merged" in t.meta}
    assert {S.STEP, S.INPUT_WAIT, S.ANNOTATION, S.CPU_OP} <= kinds
    assert len(_marks(fig, S.STEP)) == run.events.filter(pl.col("kind") == S.STEP).height
    # A legend entry per kind, not per trace.
    assert sorted(t.legendgroup for t in fig.data if t.showlegend is not False) == sorted(kinds)
    # Nested slices on one thread are spread over several rows.
    label = next(n for n in run.thread_names().values() if "(training)" in n)
    lo, hi = _lane_rows(fig, label)
    rows = {row for kind in kinds for _, _, row in _marks(fig, kind, None) if lo < row < hi}
    assert len(rows) >= 3



# -- device and host metrics ---------------------------------------------------------------------------------
def test_metrics_graph_has_cpu_and_memory_subplots(figs, recorded_run):
    fig = figs["metrics"]
    run = Run.open(recorded_run)
    by_name = {t.name: t for t in fig.data}
    assert {"this process", "whole system", "process RSS", "system used"} <= set(by_name)
    assert by_name["this process"].yaxis == "y" and by_name["process RSS"].yaxis == "y2"
    rss = run.counters.filter(pl.col("name") == "process_rss_bytes").sort("time_ns")
    divisor = 2**30 if fig.layout.yaxis2.title.text.endswith("(GiB)") else 2**20
    np.testing.assert_allclose(by_name["process RSS"].y, rss["value"].to_numpy() / divisor, rtol=1e-5, atol=1e-3)
    xs = np.array(by_name["process RSS"].x)
    assert xs.min() >= 0 and np.all(np.diff(xs) > 0)
    assert list(fig.layout.xaxis.range) == list(figs["timeline"].layout.xaxis.range)


# -- errors and inputs ----------------------------------------------------------------------------
def test_a_missing_path_raises_run_format_error(tmp_path, recorded_run):
    with pytest.raises(RunFormatError, match="no such file"):
        create_app([recorded_run, tmp_path / "missing"])
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(RunFormatError):
        create_app([tmp_path / "file.txt"])


def test_runs_with_the_same_name_get_distinct_labels(tmp_path, recorded_run):
    a = shutil.copytree(recorded_run, tmp_path / "a" / "recorded")
    b = shutil.copytree(recorded_run, tmp_path / "b" / "recorded")
    board = create_app([a, b, a])._accelscope
    labels = [v.label for v in board.views]
    assert labels == ["a/recorded", "b/recorded", "a/recorded (2)"]
    assert run_labels([Path("x/one"), Path("y/two")]) == ["one", "two"]


def test_a_run_without_steps_is_analysed_in_fixed_windows(tmp_path):
    ev = _events([(1_000_000, 5_000_000, S.CPU_OP, "aten::mm", "cpu", None, 1, 1)])
    path = write_run(tmp_path / "nosteps", ev, None, {"start_ns": 0, "complete": True})
    board = create_app([path])._accelscope
    out = dict(zip((cid for cid, _ in overview.OUTPUTS), overview.render(board, 0)))
    out.update({k.split(".")[0]: v for k, v in _rest(board, {"run": 0, "n": 1}).items()})
    assert out["overview-steps"] == "10"
    assert out["overview-verdict"] == "not input-bound"
    assert "no step markers" in str(out)
    assert board.figures(0)["timeline"].data[0].name == S.CPU_OP
    assert "No host or device metrics" in out["metrics-graph"].layout.annotations[0].text


def test_a_run_that_ran_out_of_memory_says_so_above_the_overview_and_in_the_report(tmp_path):
    from accelscope.dashboard.report import build_report

    ev = _events([(i * 10_000_000, 10_000_000, S.STEP, S.step_name(i), "cpu", None, 1, 1) for i in range(4)])
    oom = {"step": 4, "time_ns": 45_000_000, "rank": 0, "device": "cuda:0", "error_type": "torch.OutOfMemoryError", "kind": "torch",
           "message": "CUDA out of memory.", "requested_bytes": 2**31}
    path = write_run(tmp_path / "oom", ev, None, {"start_ns": 0, "complete": True, "oom": oom})
    board = create_app([path])._accelscope
    out = dict(zip((cid for cid, _ in overview.OUTPUTS), overview.render(board, 0)))
    banner = out["overview-ranks"][0]
    assert banner.id == "overview-oom" and banner.children[1] == "at step 4 on cuda:0: tried to allocate 2.0 GiB"
    assert "<b>Out of memory:</b> at step 4 on cuda:0: tried to allocate 2.0 GiB</div>" in build_report(path)


def test_device_streams_get_their_own_lanes(tmp_path):
    rows = [(0, 10_000_000, S.STEP, "ProfilerStep#0", "cpu", None, 1, 1)]
    rows += [(i * 100_000, 50_000, S.KERNEL, f"k{i}", "cuda:0", 7, 1, 99) for i in range(20)]
    rows += [(i * 100_000, 20_000, S.MEMCPY, "Memcpy HtoD", "cuda:0", 13, 1, 99) for i in range(5)]
    rows += [(0, 9_000_000, S.RUNTIME, "cudaLaunchKernel", "cpu", None, 1, 1)]
    path = write_run(tmp_path / "gpu", _events(rows), None, {"start_ns": 0, "threads": [{"pid": 1, "tid": 1, "name": "main"}]})
    fig = create_app([path])._accelscope.figures(0)["timeline"]
    ticks = [t.split("<br>")[0] for t in fig.layout.yaxis.ticktext]
    assert ticks == ["<b>steps</b>", "cuda:0 stream 7", "cuda:0 stream 13", "main"]  # device lanes above host threads
    kernels = _marks(fig, S.KERNEL)
    lo, hi = _lane_rows(fig, "cuda:0 stream 7")
    assert len(kernels) == 20 and all(lo < row < hi for _, _, row in kernels)
    np.testing.assert_allclose([x0 for x0, _, _ in sorted(kernels)], [i * 0.1 for i in range(20)], atol=1e-9)


def test_a_thread_of_100k_short_ops_is_drawn_as_a_few_thousand_marks_that_account_for_all(tmp_path):
    n = 100_000
    starts = np.arange(n, dtype=np.int64) * 1_000  # 1 µs apart, 500 ns long: 100 ms in all
    rows = [(int(s), 500, S.CPU_OP, f"op{i % 7}", "cpu", None, 1, 1) for i, s in enumerate(starts)]
    path = write_run(tmp_path / "dense", _events(rows), None, {"start_ns": 0})
    board = create_app([path])._accelscope
    fig = board.figures(0)["timeline"]
    merged = _hover(fig, "cpu_op merged details")
    custom = np.asarray(merged.customdata)
    marks = np.unique(custom[:, 1])  # one hover point per merged mark here (each under a pixel)
    assert marks.size == custom.shape[0] <= 1600
    assert _marks(fig, S.CPU_OP, merged=False) == [], "no op is a pixel long in the whole run"
    assert custom[:, 4].sum() == n, "every op is in exactly one merged mark"
    np.testing.assert_allclose(custom[:, 3].sum(), n * 500 / 1e9, rtol=1e-6)  # busy: the union (no overlap here)
    assert "100000 slices in the run" in fig.layout.title.text.replace(",", "")
    assert "1/1" in fig.layout.yaxis.ticktext  # a one-row lane: no room for a second line under its label
    assert "100,000 shorter than a pixel" in fig.layout.title.text


def test_overlapping_slices_on_one_thread_are_spread_by_depth(tmp_path):
    rows = [
        (0, 1000, S.ANNOTATION, "forward", "cpu", None, 1, 1),
        (100, 500, S.CPU_OP, "aten::conv2d", "cpu", None, 1, 1),
        (150, 300, S.CPU_OP, "aten::convolution", "cpu", None, 1, 1),
        (600, 100, S.CPU_OP, "aten::relu", "cpu", None, 1, 1),
        (2000, 100, S.CPU_OP, "aten::add", "cpu", None, 1, 1),
    ]
    path = write_run(tmp_path / "nest", _events(rows), None, {"start_ns": 0})
    tl = tv.whole(RunView(Run.open(path), "nest"))
    rows_by_name = {name: int(y) for h in tl.hover for name, y in zip(h.text, h.y)}
    assert rows_by_name == {"forward": 0, "aten::conv2d": 1, "aten::convolution": 2, "aten::relu": 1, "aten::add": 0}



# -- packaging rules (the one-way import rule for every module: tests/test_architecture.py) ----------
def _run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120, cwd=REPO)


def test_the_sections_below_the_timeline_load_in_a_fresh_interpreter(recorded_run):
    """The grids are created by a callback; Dash refuses that when their library was first
    imported inside it, which only a fresh interpreter shows."""
    res = _run_python(
        f"""
        import json
        from accelscope.dashboard.app import create_app
        app = create_app([{str(recorded_run)!r}])
        body = {{
            "output": "..kernels-table-box.children...ops-table-box.children..",
            "outputs": [{{"id": i, "property": p}} for i, p in (("kernels-table-box", "children"), ("ops-table-box", "children"))],
            "inputs": [{{"id": "rest-request", "property": "data", "value": {{"run": 0, "n": 1}}}}],
            "changedPropIds": ["rest-request.data"], "state": [],
        }}
        r = app.server.test_client().post("/_dash-update-component", json=body)
        out = r.get_json()["response"]
        print(r.status_code, len(out["ops-table-box"]["children"]["props"]["rowData"]))
        """
    )
    assert res.returncode == 0, res.stderr
    status, rows = res.stdout.split()
    assert status == "200" and int(rows) > 0


def test_a_page_request_starts_the_first_runs_analysis(recorded_run):
    import time

    app = create_app([recorded_run])
    view = app._accelscope.views[0]
    assert "report" not in view._cache, "creating the app analyses nothing"
    assert app.server.test_client().get("/").status_code == 200
    deadline = time.monotonic() + 60
    while not {"report", "lanes", "scheduling"} <= set(view._cache) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert {"report", "lanes", "scheduling"} <= set(view._cache)
    assert app._accelscope.prepare_in_background(0) is None, "once per run"


def test_building_the_dashboard_loads_no_collector(recorded_run):
    """In a fresh interpreter: creating the app and rendering a run imports no collector
    beyond what ``import accelscope`` itself pulls in."""
    res = _run_python(
        f"""
        import sys
        import accelscope
        before = sorted(m for m in sys.modules if m.startswith("accelscope.collectors"))
        from accelscope.dashboard.app import create_app
        board = create_app([{str(recorded_run)!r}])._accelscope
        from accelscope.dashboard.sections import overview
        board.figures(0); overview.render(board, 0)
        after = sorted(m for m in sys.modules if m.startswith("accelscope.collectors"))
        print(repr((before, after, "torch" in sys.modules)))
        """
    )
    assert res.returncode == 0, res.stderr
    before, after, torch_loaded = eval(res.stdout.strip().splitlines()[-1])
    assert after == before, f"the dashboard imported {set(after) - set(before)}"
    assert not torch_loaded, "the dashboard must not need the framework the run was recorded with"


def test_importing_the_dashboard_does_not_import_collectors():
    res = _run_python(
        """
        import sys
        import accelscope.dashboard, accelscope.dashboard.app, accelscope.dashboard.timeline.figure, accelscope.dashboard.report
        print(repr(sorted(m for m in sys.modules if m.startswith("accelscope.collectors"))))
        print("accelscope.api" in sys.modules)
        """
    )
    assert res.returncode == 0, res.stderr
    loaded, api_loaded = res.stdout.strip().splitlines()[-2:]
    assert api_loaded == "False", "the recorder API must not load with the dashboard"
    assert loaded == "[]"


def test_without_dash_import_works_and_create_app_names_the_extra(recorded_run):
    res = _run_python(
        f"""
        import sys
        sys.modules["dash"] = None  # as if dash were not installed
        import accelscope.dashboard
        from accelscope.dashboard.app import create_app
        try:
            create_app([{str(recorded_run)!r}])
        except ImportError as exc:
            print(type(exc).__name__, exc)
        """
    )
    assert res.returncode == 0, res.stderr
    assert "MissingExtraError" in res.stdout and "accelscope[dashboard]" in res.stdout


# -- serving ------------------------------------------------------------------------------
def test_serve_binds_localhost_without_debug_by_default(monkeypatch, recorded_run):
    from accelscope.dashboard import server

    asked, served, urls = [], [], []
    real_listen = server.listen
    monkeypatch.setattr(server, "listen", lambda host, port: (asked.append((host, port)), real_listen(host, 0))[1])
    monkeypatch.setattr(server, "serve_on", lambda app, sock, host: served.append((sock.getsockname()[0], app._dev_tools.ui)))
    app_mod.serve([recorded_run], on_listening=urls.append)
    assert asked == [("127.0.0.1", 8050)] and served == [("127.0.0.1", False)]
    app_mod.serve([recorded_run], host="0.0.0.0", port=9000, debug=True, on_listening=urls.append)
    assert asked[1] == ("0.0.0.0", 9000) and served[1] == ("0.0.0.0", True)
    assert urls[0].startswith("http://127.0.0.1:") and not urls[0].startswith("http://127.0.0.1:0/")


def test_serve_says_where_it_listens_only_once_it_does(recorded_run):
    import socket

    from accelscope.dashboard.server import ServeError

    urls = []
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(ServeError, match="cannot serve on 127.0.0.1:"):
            app_mod.serve([recorded_run], port=busy.getsockname()[1], on_listening=urls.append)
    with pytest.raises(ServeError, match="99999"):
        app_mod.serve([recorded_run], port=99999, on_listening=urls.append)
    assert urls == []


def test_a_run_imported_from_a_directory_is_labelled_after_it(shared_dir, tmp_path, monkeypatch):
    from accelscope.traces.importer import resolve_run

    monkeypatch.setenv("ACCELSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    src = shutil.copytree(shared_dir / "traces/HolisticTraceAnalysis/tests/data/trace_filter", tmp_path / "trace_filter")
    run_dir = resolve_run(src, progress=False)
    assert run_dir.name != "trace_filter", "the run lives in a cache directory"
    assert Dashboard([run_dir]).views[0].label == "trace_filter"


def test_the_app_serves_the_page_and_no_files(recorded_run):
    app = create_app([recorded_run])
    client = app.server.test_client()
    page = client.get("/")
    assert page.status_code == 200 and b"accelscope" in page.data
    app.server.logger.disabled = True  # Dash answers bad component paths with a logged 500
    urls = [
        "/assets/../meta.json",
        f"/assets/{recorded_run}/meta.json",
        f"/{recorded_run}/meta.json",
        "/assets/%2e%2e/%2e%2e/pyproject.toml",
        "/_dash-component-suites/dash/../../../../../etc/passwd",
    ]
    for url in urls:
        res = client.get(url)
        # Unknown paths get an error or the page itself (Dash routes them to the app), never a file.
        assert res.status_code != 200 or res.data.startswith(b"<!DOCTYPE html>"), url
        assert b"schema_version" not in res.data and b"[project]" not in res.data and b"root:" not in res.data


def test_every_kind_of_slice_has_its_own_colour():
    from accelscope.dashboard.theme import KIND_COLORS

    assert set(S.KINDS) <= set(KIND_COLORS)
    assert len({KIND_COLORS[k] for k in S.KINDS}) == len(S.KINDS)
    assert KIND_COLORS[S.INPUT_WAIT].upper() == "#D62728"


def test_idle_gaps_are_drawn_on_the_device_lane_with_their_cause(shared_dir, tmp_path):
    from accelscope.traces.importer import import_traces

    nw0 = shared_dir / "traces/kineto/tb_plugin/samples/resnet50_num_workers_0/worker0.1623143089861.pt.trace.json.gz"
    run_dir = import_traces([nw0], tmp_path / "nw0", progress=False)
    board = create_app([run_dir])._accelscope
    fig = board.figures(0)["timeline"]
    device_row = next(v for v, label in zip(fig.layout.yaxis.tickvals, fig.layout.yaxis.ticktext) if label.startswith("cuda:0"))
    assert {row for _, _, row in _marks(fig, "idle gap", None)} == {device_row}
    hover = _hover(fig, "idle gap details")
    assert any(t.startswith("waiting for input (waiting for input ") for t in hover.text), "nw0's large gaps are the DataLoader"
    assert "<b>idle: %{text}</b>" in hover.hovertemplate
    # Every gap of the run is drawn, one by one or inside a merged mark.
    report = analyze(Run.open(run_dir))
    view = board.views[0]
    assert tv.whole(view).gaps_in_view == report.gaps.height
    # Zoomed views get the gaps of their window only.
    zoomed = tv.window(view, 0.0, 50.0)
    in_window = report.gaps.filter((pl.col("start_ns") < view.origin_ns + 50_000_000) & (pl.col("end_ns") > view.origin_ns)).height
    assert 0 < zoomed.gaps_in_view == in_window < report.gaps.height


def test_kernel_and_op_tables_hold_the_runs_time_per_name(board, report):
    out = _rest(board, {"run": 0, "n": 1})
    ops = out["ops-table-box.children"].rowData
    assert ops and out["kernels-table-box.children"].id == "kernels-table-none", "a CPU run: host ops, no device work"
    totals = [r["total_ms"] for r in ops]
    assert totals == sorted(totals, reverse=True)
    ev = Run.open(board.views[0].run.path).slices
    mm = ev.filter((ev["kind"] == "cpu_op") & (ev["name"] == ops[0]["name"]))
    assert ops[0]["count"] == mm.height and ops[0]["total_ms"] == round(mm["dur_ns"].sum() / 1e6, 3)


# -- zoom width and click details ------------------------------------------------------------------
def test_a_zoom_is_drawn_for_the_width_the_browser_sent_clamped(board):
    fig = board.sections["timeline"].zoom({"xaxis.range[0]": 100.0, "xaxis.range[1]": 300.0}, 0, 800)
    assert fig.layout.meta["width_px"] == 800
    assert fig.layout.meta["bucket_ns"] == pytest.approx(200e6 / 800)
    zoom = board.sections["timeline"].zoom
    assert zoom({"xaxis.range[0]": 100.0, "xaxis.range[1]": 300.0}, 0, 1e12).layout.meta["width_px"] == 4000
    assert zoom({"xaxis.range[0]": 100.0, "xaxis.range[1]": 300.0}, 0, "wide").layout.meta["width_px"] == 1600


def test_a_zoom_on_a_panels_axis_zooms_the_timeline(board):
    fig = board.sections["timeline"].zoom({"xaxis2.range[0]": 50.0, "xaxis2.range[1]": 80.0}, 0)
    assert list(fig.layout.xaxis.range) == [50.0, 80.0] and "in this view" in fig.layout.title.text


def test_the_whole_run_is_drawn_once_per_width_and_reset_returns_it(board):
    t = board.sections["timeline"]
    a = t.whole(0, 1093)
    assert a is t.whole(0, 1081), "widths are rounded to 20 px"
    assert a.layout.meta["width_px"] == 1080 and a.layout.meta["window"] is None
    assert t.zoom({"xaxis.autorange": True}, 0, 1090) is a


def test_clicking_a_slice_shows_its_details_from_three_integers(board, recorded_run):
    view = board.views[0]
    table = tv.lane_layout(view).table
    pos = int(np.flatnonzero(table["kind_code"].to_numpy() == tv.lane_layout(view).kinds.index(S.INPUT_WAIT))[0])
    panel = board.sections["timeline"].details({"points": [{"hovertext": f"0,{pos},{pos}", "customdata": "ignored"}]}, 0)
    text = str(panel)
    start_ms = (table["start_ns"][pos] - view.origin_ns) / 1e6
    assert "next(DataLoader)" in text and "input_wait" in text and f"{start_ms:,.3f} ms" in text
    assert "MainThread (training)" in text


@pytest.mark.parametrize("hovertext", [None, "", "0,1", "0,1,2,3", "0,-1,0", "a,b,c", "0,1e9,1", "9,0,0", "1,5,2", "0," + "9" * 70 + ",0", 5])
def test_clicks_with_anything_but_three_valid_integers_show_the_hint(board, hovertext):
    panel = board.sections["timeline"].details({"points": [{"hovertext": hovertext}]}, 0)
    assert panel.className == "details-hint"


def test_every_figure_draws_only_traces_the_vendored_plotly_bundle_holds(board, report):
    from accelscope.dashboard import plotlyjs
    from accelscope.dashboard.sections.compare import breakdown_figure, comparison
    from accelscope.dashboard.sections.steps import steps_figure

    figures = [*board.figures(0).values(), steps_figure(report), breakdown_figure(comparison(report, report))]
    types = {trace.type for fig in figures for trace in fig.data}
    assert {"scatter", "bar"} <= types
    assert types <= plotlyjs.TRACE_TYPES, f"{types - plotlyjs.TRACE_TYPES} are not in plotly.js's basic bundle"


def test_the_page_loads_the_vendored_plotly_bundle_which_matches_plotly_py():
    from plotly.offline import get_plotlyjs_version

    from accelscope.dashboard import plotlyjs

    # The figures come from plotly.py: its plotly.js is the one they are written for.
    assert plotlyjs.bundle_version().split(".")[0] == get_plotlyjs_version().split(".")[0], (
        f"plotly.py {get_plotlyjs_version()} vs the vendored {plotlyjs.bundle_version()}: update assets/ (docs/dashboard.md)"
    )


def test_the_vendored_plotly_bundle_is_the_file_npm_ships():
    import hashlib

    from accelscope.dashboard import plotlyjs

    assert hashlib.sha256(plotlyjs.BUNDLE.read_bytes()).hexdigest() == plotlyjs.BUNDLE_SHA256
    assert plotlyjs.bundle_version() == "4.1.1"


def test_the_page_serves_the_vendored_plotly_bundle(recorded_run):
    from accelscope.dashboard import plotlyjs

    client = create_app([recorded_run]).server.test_client()
    page = client.get("/").get_data(as_text=True)
    src = re.search(r'<script src="(/assets/plotly-basic\.min\.js[^"]*)"', page)
    assert src, "the page loads plotly.js's basic bundle from the assets folder"
    # The browser's own string functions are kept before Dash's polyfill and put back after it (restore-natives.js).
    assert page.index("__accelscopeNative") < page.index("polyfill") < page.index("/assets/restore-natives.js") < page.index("DashRenderer")
    assert "__accelscopeNative" in client.get("/assets/restore-natives.js").get_data(as_text=True)
    assert client.get(src.group(1)).get_data(as_text=True) == plotlyjs.bundle_text()


def test_a_run_view_records_each_stage_of_its_first_view(fresh_run):
    from accelscope.dashboard.runs import STAGES

    view = RunView(Run.open(fresh_run), "r")
    assert view.progress() == [] and view.slice_count() is None
    tv.prepare(view, 1000)
    stages = view.progress()
    assert [st.label for st in stages] == list(STAGES.values())
    assert all(st.state == "done" and st.seconds >= 0 and not st.error for st in stages)
    assert view.slice_count() == Run.open(fresh_run).slices.height


def _blocked_lane_layout(monkeypatch, release: threading.Event, error: Exception | None = None):
    """Make the lane layout wait for ``release`` (then raise ``error``, when given): the
    page's progress is observed while it waits."""
    real = tv.build_lane_layout

    def slow(*args, **kwargs):
        release.wait(60)
        if error is not None:
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(tv, "build_lane_layout", slow)


def _text(children) -> str:
    if isinstance(children, str):
        return children
    if isinstance(children, list):
        return "".join(_text(c) for c in children)
    return _text(getattr(children, "children", "") or "")


def _wait_for(predicate, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)


def test_loading_status_says_what_a_slow_first_view_is_doing_then_stops(monkeypatch, fresh_run):
    release = threading.Event()
    _blocked_lane_layout(monkeypatch, release)
    board = Dashboard([fresh_run])
    t = Timeline(board)
    t.progress_after_s = 0.0
    worker = threading.Thread(target=t.request, args=({"run": 0, "width_px": 1000},))
    worker.start()
    try:
        _wait_for(lambda: "laying out the lanes …" in _text(t.loading_status(0, 0)[0]))
        children, stop = t.loading_status(0, 0)
        text = _text(children)
        assert text.startswith(f"Preparing {board.views[0].label} ({Run.open(fresh_run).slices.height:,} slices): reading the events ✓")
        assert "laying out the lanes …" in text and not stop
    finally:
        release.set()
        worker.join(60)
    assert t.loading_status(0, 0) == ("", True)  # the whole-run timeline is built: polling stops


def test_loading_status_shows_nothing_while_the_wait_is_short(monkeypatch, fresh_run):
    release = threading.Event()
    _blocked_lane_layout(monkeypatch, release)
    board = Dashboard([fresh_run])
    t = Timeline(board)  # progress after 1 s
    worker = threading.Thread(target=t.request, args=({"run": 0, "width_px": 1000},))
    worker.start()
    try:
        _wait_for(lambda: any(st.state == "running" for st in board.views[0].progress()))
        assert t.loading_status(0, 0) == ("", False)  # under way, but asked for under a second ago
    finally:
        release.set()
        worker.join(60)


def test_loading_status_reports_a_failed_stage_in_one_line_and_stops(monkeypatch, fresh_run):
    release = threading.Event()
    release.set()
    _blocked_lane_layout(monkeypatch, release, error=ValueError("lane table is corrupt\nsecond line"))
    t = Timeline(Dashboard([fresh_run]))
    with pytest.raises(ValueError):
        t.whole(0, 1000)
    children, stop = t.loading_status(0, 0)
    assert stop and "laying out the lanes ✗" in _text(children)
    assert _text(children).endswith("failed: ValueError: lane table is corrupt")


def test_loading_status_stops_when_the_timeline_fails_outside_a_stage(monkeypatch, fresh_run):
    from accelscope.dashboard.sections import timeline as section

    def broken(*args, **kwargs):
        raise RuntimeError("cannot draw")

    monkeypatch.setattr(section, "timeline_figure", broken)
    t = Timeline(Dashboard([fresh_run]))
    with pytest.raises(RuntimeError):
        t.request({"run": 0, "width_px": 1000})
    children, stop = t.loading_status(0, 0)
    assert stop and _text(children).endswith("failed: RuntimeError: cannot draw")
    assert "drawing the whole run ✓" in _text(children)  # every stage ran; the figure did not


def test_a_stage_that_failed_in_the_background_is_retried_by_the_page(monkeypatch, fresh_run):
    real, calls = tv.build_lane_layout, []

    def fails_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise OSError("run still being written")
        return real(*args, **kwargs)

    monkeypatch.setattr(tv, "build_lane_layout", fails_once)
    board = Dashboard([fresh_run])
    t = Timeline(board)
    t.progress_after_s = 0.0
    board.prepare_in_background(0).join(60)  # as `accelscope dashboard` does at launch: it fails
    assert [st.state for st in board.views[0].progress() if st.label == "laying out the lanes"] == ["failed"]
    assert t.loading_status(0, 0) == ("", False)  # the page has not asked yet: keep waiting
    t.request({"run": 0, "width_px": 1000})  # the page's own request succeeds
    assert t.loading_status(0, 0) == ("", True) and len(calls) == 2


def test_loading_status_stays_quiet_for_unknown_runs(recorded_run):
    t = Timeline(Dashboard([recorded_run]))
    assert t.loading_status(None, 0) == ("", False)  # nothing asked for yet: keep polling, show nothing
    assert t.loading_status(None, 7) == ("", True)
    assert t.loading_status(None, "../x") == ("", True)


def test_each_ranks_steps_lane_comes_in_rank_order(shared_dir, tmp_path):
    from accelscope.dashboard.timeline.lanes import STEPS_LANE
    from accelscope.traces.importer import import_traces

    run = Run.open(import_traces([shared_dir / "traces/HolisticTraceAnalysis/tests/data/trace_filter"], tmp_path / "two", progress=False))
    for _ in range(5):  # the lanes' order must not depend on hash order
        labels = [lane.label for lane in tv.lane_layout(RunView(run, "two")).lanes]
        assert [label for label in labels if label.endswith(STEPS_LANE)] == [f"rank 0 · {STEPS_LANE}", f"rank 1 · {STEPS_LANE}"]
        # Each rank's lanes together, in rank order, its steps lane first, its device streams above its host threads.
        ranks = [int(label.split()[1]) for label in labels]
        assert ranks == sorted(ranks) and labels[0] == f"rank 0 · {STEPS_LANE}" and labels[ranks.index(1)] == f"rank 1 · {STEPS_LANE}"
        for r in (0, 1):
            kinds = ["device" if "cuda" in label else "steps" if label.endswith(STEPS_LANE) else "host" for label, k in zip(labels, ranks) if k == r]
            assert kinds == sorted(kinds, key=["steps", "device", "host"].index)


def test_a_new_request_clears_the_last_failure_while_it_runs(monkeypatch, fresh_run):
    real, release, calls = tv.build_lane_layout, threading.Event(), []

    def fails_then_waits(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise OSError("run still being written")
        release.wait(60)
        return real(*args, **kwargs)

    monkeypatch.setattr(tv, "build_lane_layout", fails_then_waits)
    t = Timeline(Dashboard([fresh_run]))
    with pytest.raises(OSError):
        t.request({"run": 0, "width_px": 1000})
    assert t.loading_status(0, 0)[1] is True  # failed: the page stops waiting and says why
    retry = threading.Thread(target=t.request, args=({"run": 0, "width_px": 1000},))
    retry.start()  # the page asks again (a reload, or picking the run again)
    try:
        _wait_for(lambda: len(calls) == 2)
        children, stop = t.loading_status(0, 0)
        assert not stop and "failed" not in _text(children)  # the old failure is not this request's
    finally:
        release.set()
        retry.join(60)
    assert t.loading_status(0, 0) == ("", True)
