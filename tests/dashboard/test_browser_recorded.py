"""The dashboard in a real browser (headless Chromium through Playwright) on runs recorded
from a real CPU training loop: the Steps, Compare, and Kernels and ops sections show the
analyzer's numbers, rows and names."""

from __future__ import annotations

import time
from pathlib import Path

import polars as pl
import pytest

pytestmark = pytest.mark.browser


TIMEOUT_MS = 60_000
SLOW_STEP = 6  # the step whose batch takes 80 ms to load instead of 10 ms

from tests.dashboard.browser import open_dashboard, require_browser  # noqa: E402

require_browser()
from playwright.sync_api import TimeoutError as PlaywrightTimeout  # noqa: E402

pytest.importorskip("torch", reason="the torch extra is needed to record a run")

import accelscope  # noqa: E402
from accelscope.analysis import analyze
from accelscope.analysis.compare import compare  # noqa: E402
from accelscope.dashboard.app import create_app  # noqa: E402
from accelscope.dashboard.sections.steps import OUTLIER_COLOR  # noqa: E402
from accelscope.demo import run_demo  # noqa: E402
from accelscope.traces import schema as S  # noqa: E402
from accelscope.traces.run import Run  # noqa: E402
from accelscope.verdicts import VERDICT_TEXT  # noqa: E402

# A grid's rendered rows in display order, each as the text of the cells named by `cols`.
GRID_ROWS = """
([id, cols]) => Array.from(document.querySelectorAll(`#${id} .ag-center-cols-container .ag-row`))
    .sort((a, b) => (+a.getAttribute('row-index')) - (+b.getAttribute('row-index')))
    .map(r => cols.map(c => { const e = r.querySelector(`.ag-cell[col-id="${c}"]`); return e ? e.textContent.trim() : null; }))
"""


def _train_with_one_slow_batch(path: Path) -> Path:
    """A real CPU training loop (an MLP and SGD) whose loader takes 10 ms a batch, and 300 ms
    once: the injected slow step of tests/dashboard/test_pages.py, with real training. The
    slow batch is far slower than a busy machine's scatter of step times (an 80 ms one was
    not an outlier when the other steps took 15-60 ms under load)."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = torch.randn(64, 256), torch.randint(0, 10, (64,))
    with accelscope.profile(path, mode="light", live=False) as prof:
        for i in range(12):
            t0 = prof.input_wait_started()
            time.sleep(0.3 if i == SLOW_STEP else 0.01)
            prof.input_wait_ended("next(batch)", t0)
            with prof.region("train_step"):
                loss = torch.nn.functional.cross_entropy(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            prof.step()
    return prof.run_dir


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory) -> Path:
    """The demo again with no loader delay: run B of the comparison. As many steps as
    ``recorded_run``, so both trace ops in the same profiler windows."""
    return run_demo(tmp_path_factory.mktemp("fast"), steps=14, loader_delay_ms=0, workers=0, name="fast", progress=False)


@pytest.fixture(scope="module")
def slow_step_run(tmp_path_factory) -> Path:
    return _train_with_one_slow_batch(tmp_path_factory.mktemp("slow") / "slow-step")


@pytest.fixture(scope="module")
def reports(recorded_run, fast_run, slow_step_run) -> dict[str, object]:
    """The analyzer's report of each served run, by the run's label on the page."""
    return {p.name: analyze(Run.open(p)) for p in (recorded_run, fast_run, slow_step_run)}


@pytest.fixture(scope="module")
def page(recorded_run, fast_run, slow_step_run):
    with open_dashboard(create_app([recorded_run, fast_run, slow_step_run])) as pg:
        yield pg


def _shown(x) -> str:
    """A number as AG Grid shows it (JavaScript's String(x)); None as an empty cell."""
    if x is None:
        return ""
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return str(x)


def _grid(pg, grid_id: str, cols: list[str]) -> list[list[str]]:
    return pg.evaluate(GRID_ROWS, [grid_id, cols])


def _wait_grid(pg, grid_id: str, cols: list[str], expected: list[list[str]], timeout: int = TIMEOUT_MS, first: bool = False) -> list[list[str]]:
    """Wait until the grid shows exactly ``expected`` in ``cols`` (``first``: as its first
    rows); return what it shows (its first rows), for the caller to assert on, so that a
    mismatch fails with both sides."""
    n = len(expected) if first else -1
    try:
        pg.wait_for_function(
            f"([id, cols, want, n]) => {{ const rows = ({GRID_ROWS})([id, cols]); return JSON.stringify(n < 0 ? rows : rows.slice(0, n)) === JSON.stringify(want); }}",
            arg=[grid_id, cols, expected, n],
            timeout=timeout,
        )
    except PlaywrightTimeout:
        pass
    rows = _grid(pg, grid_id, cols)
    return rows[:n] if first else rows


def _wait_summary(pg, grid_id: str, want: str, timeout: int = TIMEOUT_MS) -> str:
    """Wait until a grid's paging summary reads ``want`` ("1 to 20 of N"); return what it reads."""
    read = f"() => {{ const e = document.querySelector('#{grid_id} .ag-paging-row-summary-panel'); return e ? e.textContent.split(/\\s+/).join(' ').trim() : null; }}"
    try:
        pg.wait_for_function(f"want => ({read})() === want", arg=want, timeout=timeout)
    except PlaywrightTimeout:
        pass  # the caller's assertion says what the grid reads instead
    return pg.evaluate(read)


def _step_rows(report, cols=("step", "dur_ms")) -> list[list[str]]:
    """The analyzer's steps as the Steps grid formats them (ms rounded to 3 decimals)."""
    out = []
    steps = report.steps.sort("rank", "step").with_columns(dur_ms=(pl.col("dur_ns") / 1e6).round(3))
    for r in steps.iter_rows(named=True):
        flag = "warm-up" if r["warmup"] else "outlier" if r["outlier"] else ""
        cells = {"step": _shown(r["step"]), "dur_ms": _shown(r["dur_ms"]), "flag": flag, "outlier_reason": r["outlier_reason"] or ""}
        out.append([cells[c] for c in cols])
    return out


def _show_run(pg, label: str, report) -> None:
    """Pick a run in the run selector (when another is shown) and wait until the sections
    below the timeline show it: the Steps grid's first row is its step 0."""
    if pg.text_content("#run-info b") != label:
        pg.click("#run-select")
        pg.get_by_role("option", name=label, exact=True).click()
    pg.wait_for_function("l => { const b = document.querySelector('#run-info b'); return b && b.textContent === l; }", arg=label, timeout=TIMEOUT_MS)
    first = _step_rows(report)[:1]
    assert _wait_grid(pg, "steps-table", ["step", "dur_ms"], first, first=True) == first


def _scroll_to(pg, grid_id: str) -> None:
    """Bring a grid on screen: AG Grid keeps a grid hidden (visibility) until it has drawn
    it, which it does once the grid is in view, and the mouse only reaches what is shown."""
    pg.eval_on_selector(f"#{grid_id}", "e => e.scrollIntoView({block: 'start'})")
    pg.wait_for_selector(f"#{grid_id} .ag-header-cell", state="visible", timeout=TIMEOUT_MS)


def _pick_compare(pg, reports, a: str, b: str) -> None:
    """Show run ``a`` and pick ``b`` in "Compare with"; wait for the summary of that pair."""
    _show_run(pg, a, reports[a])
    shows = (
        "([a, b]) => { const t = document.querySelector('#compare-summary table'); if (!t) return false;"
        " const run = Array.from(t.querySelectorAll('tbody tr')).find(r => r.cells[0].textContent === 'run');"
        " return !!run && run.cells[1].textContent === a && run.cells[2].textContent === b; }"
    )
    if not pg.evaluate(shows, [a, b]):
        pg.eval_on_selector("#compare-select", "e => e.scrollIntoView({block: 'center'})")
        pg.click("#compare-select")
        pg.get_by_role("option", name=b, exact=True).click()
    pg.wait_for_function(shows, arg=[a, b], timeout=TIMEOUT_MS)


def _plot(pg, gid: str, expr: str):
    return pg.evaluate(f"() => {{ const gd = document.querySelector('#{gid} .js-plotly-plot'); return {expr}; }}")


def _traced_steady_ns(run_path: Path, report) -> int:
    """Step time of the steady steps the run's profiler schedule traced (its ops exist only there)."""
    from accelscope.schedule import Schedule

    schedule = Run.open(run_path).meta.get("schedule")
    steady = report.steps.filter(~pl.col("warmup"))
    if not schedule:
        return int(steady["dur_ns"].sum())
    traced = {s for a, b in Schedule(**schedule).windows(int(report.steps["step"].max()) + 1) for s in range(a, b + 1)}
    return int(steady.filter(pl.col("step").is_in(sorted(traced)))["dur_ns"].sum())


def _expected_ops(run_path: Path, report) -> pl.DataFrame:
    """The run's host ops grouped by name, as the ops grid formats them, longest total first;
    "% of step time" is of the steady steps the profiler traced (warm-up left out)."""
    steady_ns = _traced_steady_ns(run_path, report)
    return (
        Run.open(run_path).slices.filter(pl.col("kind") == S.CPU_OP)
        .group_by("name").agg(pl.len().alias("count"), pl.col("dur_ns").sum().alias("total_ns"))
        .with_columns(share=pl.col("total_ns") / steady_ns)
        # Rounded as the grid rounds (Polars: half away from zero; Python's round() differs on a tie).
        .with_columns(total_ms=(pl.col("total_ns") / 1e6).round(3), share_pct=(pl.col("share") * 100).round(2))
        .sort("total_ns", descending=True)
    )


def _ops_cells(df: pl.DataFrame) -> dict[str, list[str]]:
    return {
        r["name"]: [r["name"], _shown(r["count"]), _shown(r["total_ms"]), _shown(r["share_pct"])]
        for r in df.iter_rows(named=True)
    }


# -- Steps --------------------------------------------------------------------------------
def test_steps_grid_rows_are_the_analyzers_steps(page, slow_step_run, reports):
    report = reports[slow_step_run.name]
    _show_run(page, slow_step_run.name, report)
    expected = _step_rows(report)
    assert len(expected) == 12
    assert _wait_grid(page, "steps-table", ["step", "dur_ms"], expected) == expected


def test_steps_grid_flags_warm_up_and_the_slow_step_with_its_reason(page, slow_step_run, reports):
    report = reports[slow_step_run.name]
    _show_run(page, slow_step_run.name, report)
    cols = ["step", "flag", "outlier_reason"]
    expected = _step_rows(report, cols)
    rows = _wait_grid(page, "steps-table", cols, expected)
    assert rows == expected
    assert rows[0][1] == "warm-up"
    slow = rows[SLOW_STEP]
    assert slow[:2] == [str(SLOW_STEP), "outlier"]
    assert slow[2].endswith("ms input wait") and "x the median step" in slow[2]
    # The outlier rows are tinted.
    tinted = page.eval_on_selector_all("#steps-table .ag-center-cols-container .ag-row.step-outlier .ag-cell[col-id='step']", "els => els.map(e => e.textContent)")
    assert str(SLOW_STEP) in tinted and sorted(tinted, key=int) == [r[0] for r in expected if r[1] == "outlier"]


def test_steps_graph_marks_the_slow_step_red(page, slow_step_run, reports):
    report = reports[slow_step_run.name]
    _show_run(page, slow_step_run.name, report)
    steps = report.steps.sort("step")
    want_y = [round(d / 1e6, 6) for d in steps["dur_ns"]]
    page.wait_for_function(
        "want => { const gd = document.querySelector('#steps-graph .js-plotly-plot'); const t = gd && gd._fullData && gd._fullData[0];"
        " return t && t.y && t.y.length === want.length && Array.from(t.y).every((y, i) => Math.abs(y - want[i]) < 1e-3); }",
        arg=want_y,
        timeout=TIMEOUT_MS,
    )
    colors = _plot(page, "steps-graph", "Array.from(gd._fullData[0].marker.color)")
    assert colors[SLOW_STEP] == OUTLIER_COLOR
    assert [i for i, c in enumerate(colors) if c == OUTLIER_COLOR] == steps.filter(pl.col("outlier"))["step"].to_list()
    n_out = int(steps["outlier"].sum())
    title = _plot(page, "steps-graph", "gd._fullLayout.title.text")
    assert title == f"{n_out} outlier step{'s' if n_out != 1 else ''}"


def test_steps_grid_sorts_by_a_clicked_header(page, slow_step_run, reports):
    report = reports[slow_step_run.name]
    _show_run(page, slow_step_run.name, report)
    expected = _step_rows(report)
    header = "#steps-table .ag-header-cell[col-id='dur_ms']"
    _scroll_to(page, "steps-table")
    try:
        for direction in ("ascending", "descending"):
            page.click(f"{header} .ag-header-cell-label")
            page.wait_for_function(f"() => document.querySelector(\"{header}\").getAttribute('aria-sort') === '{direction}'", timeout=TIMEOUT_MS)
            key = lambda r: float(r[1])  # noqa: E731
            want = sorted(expected, key=key, reverse=direction == "descending")
            rows = _wait_grid(page, "steps-table", ["step", "dur_ms"], want, timeout=5000)
            # Steps of the same rounded duration may come in either order: the durations are sorted, the rows are the steps.
            assert [key(r) for r in rows] == [key(r) for r in want]
            assert sorted(rows) == sorted(expected)
            slowest = str(report.steps.sort("dur_ns")["step"][-1])  # the slow step, unless the machine stalled longer
            assert rows[-1 if direction == "ascending" else 0][0] == slowest
            assert rows != expected  # reordered: the slow step is not the last step
    finally:  # back to step order for the other tests
        for _ in range(3):
            if page.get_attribute(header, "aria-sort") == "none":
                break
            page.click(f"{header} .ag-header-cell-label")
            page.wait_for_timeout(200)


def test_steps_grid_filters_on_typed_text(page, slow_step_run, reports):
    report = reports[slow_step_run.name]
    _show_run(page, slow_step_run.name, report)
    cols = ["step", "flag"]
    box = "#steps-table .ag-floating-filter[col-id='flag'] input"
    _scroll_to(page, "steps-table")
    try:
        page.fill(box, "outlier")
        want = [r for r in _step_rows(report, cols) if r[1] == "outlier"]
        assert [str(SLOW_STEP), "outlier"] in want
        assert _wait_grid(page, "steps-table", cols, want) == want
        page.fill(box, "warm")
        assert _wait_grid(page, "steps-table", cols, [["0", "warm-up"]]) == [["0", "warm-up"]]
    finally:
        page.fill(box, "")
    everything = _step_rows(report, cols)
    assert _wait_grid(page, "steps-table", cols, everything) == everything


# -- Compare ------------------------------------------------------------------------------
def test_compare_summary_shows_compares_differences(page, recorded_run, fast_run, reports):
    a, b = recorded_run.name, fast_run.name
    _pick_compare(page, reports, a, b)
    cmp = compare(reports[a], reports[b])
    (ma, mb), (ia, ib), (na, nb) = cmp.summary["mean_step_ms"], cmp.summary["input_wait_share"], cmp.summary["steps"]
    rows = page.eval_on_selector_all("#compare-summary table tbody tr", "trs => trs.map(r => Array.from(r.cells, c => c.textContent))")
    table = {r[0]: r[1:] for r in rows}
    assert table["verdict"] == [VERDICT_TEXT[reports[a].verdict], VERDICT_TEXT[reports[b].verdict], ""]
    assert table["steps"] == [f"{na:.0f}", f"{nb:.0f}", f"{nb - na:+.0f}"] == ["14", "14", "+0"]
    assert table["mean step"] == [f"{ma:,.2f} ms", f"{mb:,.2f} ms", f"{mb - ma:+,.2f} ms ({(mb - ma) / ma:+.0%})"]
    assert table["input wait"] == [f"{ia:.1%}", f"{ib:.1%}", f"{(ib - ia) * 100:+.1f} pp"]
    assert ib < ia  # A waited 20 ms a batch for its loader, B did not


def test_compare_graph_has_both_runs_breakdowns(page, recorded_run, fast_run, reports):
    a, b = recorded_run.name, fast_run.name
    _pick_compare(page, reports, a, b)
    cmp = compare(reports[a], reports[b])
    names = [f"A: {a}", f"B: {b}"]
    page.wait_for_function(
        "names => { const gd = document.querySelector('#compare-graph .js-plotly-plot');"
        " return gd && gd._fullData && JSON.stringify(gd._fullData.map(t => t.name)) === JSON.stringify(names); }",
        arg=names,
        timeout=TIMEOUT_MS,
    )
    traces = _plot(page, "compare-graph", "gd._fullData.map(t => [t.type, Array.from(t.x), Array.from(t.y)])")
    labels = [c.replace("_", " ") for c in cmp.breakdown_ms]
    assert "input wait" in labels and "host compute" in labels
    for side, (kind, x, y) in enumerate(traces):
        assert kind == "bar" and x == labels
        assert y == pytest.approx([cmp.breakdown_ms[c][side] for c in cmp.breakdown_ms], abs=1e-6)


def test_compare_grid_lists_the_ops_that_changed(page, recorded_run, fast_run, reports):
    a, b = recorded_run.name, fast_run.name
    _pick_compare(page, reports, a, b)
    cmp = compare(reports[a], reports[b])
    assert cmp.kernels.height == 0 and cmp.ops.height > 0  # a CPU-only pair: ops changed, no kernels
    cols = ["name", "what", "a_ms", "b_ms", "delta_ms"]
    shown = cmp.ops.with_columns(pl.col("a_ms", "b_ms", "delta_ms").round(3))  # ms per step, as the grid rounds them
    want = {r["name"]: [r["name"], "op", _shown(r["a_ms"]), _shown(r["b_ms"]), _shown(r["delta_ms"])] for r in shown.iter_rows(named=True)}
    page.wait_for_function("n => document.querySelectorAll('#compare-table .ag-center-cols-container .ag-row').length === n", arg=min(len(want), 15), timeout=TIMEOUT_MS)
    rows = _grid(page, "compare-table", cols)
    assert {r[0]: r for r in rows} == want
    # Biggest change first.
    deltas = [abs(float(r[4])) for r in rows]
    assert deltas == sorted(deltas, reverse=True)
    assert any(r[0].startswith("aten::") for r in rows)


# -- Kernels and ops ----------------------------------------------------------------------
def test_ops_grid_filters_on_typed_name(page, recorded_run, reports):
    _show_run(page, recorded_run.name, reports[recorded_run.name])
    cols = ["name", "count", "total_ms", "share_pct"]
    ops = _expected_ops(recorded_run, reports[recorded_run.name])
    aten = ops.filter(pl.col("name").str.contains("aten::", literal=True))
    assert 20 < aten.height < ops.height  # more than a page of aten:: ops, and other ops besides
    cells = _ops_cells(aten)
    box = "#ops-table .ag-floating-filter[col-id='name'] input"
    _scroll_to(page, "ops-table")
    try:
        page.fill(box, "aten::")
        summary = f"1 to 20 of {aten.height}"
        assert _wait_summary(page, "ops-table", summary) == summary
        rows = _grid(page, "ops-table", cols)
        assert len(rows) == 20  # the first page
        assert all(r == cells.get(r[0]) for r in rows), [(r, cells.get(r[0])) for r in rows if r != cells.get(r[0])]
        # Longest total first: the page holds the 20 longest aten:: ops (names of equal total may swap).
        assert [float(r[2]) for r in rows] == [float(cells[n][2]) for n in aten["name"][:20]]
    finally:
        # The grid applies typed filters after a debounce: wait until every op is back, so
        # that the next test does not read the filtered grid.
        page.fill(box, "")
        _wait_summary(page, "ops-table", f"1 to 20 of {ops.height}")


def test_ops_grid_share_is_of_the_traced_steps_time(page, recorded_run, reports):
    _show_run(page, recorded_run.name, reports[recorded_run.name])
    cols = ["name", "count", "total_ms", "share_pct"]
    ops = _expected_ops(recorded_run, reports[recorded_run.name])
    cells = _ops_cells(ops)
    top = [cells[n] for n in ops["name"][:20]]
    summary = f"1 to 20 of {ops.height}"
    assert _wait_summary(page, "ops-table", summary) == summary  # every op, unfiltered
    assert _wait_grid(page, "ops-table", cols, top[:1], first=True) == top[:1]
    rows = _grid(page, "ops-table", cols)
    assert len(rows) == 20  # the first page
    assert all(r == cells.get(r[0]) for r in rows), [(r, cells.get(r[0])) for r in rows if r != cells.get(r[0])]
    assert [float(r[2]) for r in rows] == [float(r[2]) for r in top]  # the longest 20 (equal totals may swap)
    # Each share is the op's inclusive time over the step time of the steady steps the profiler traced.
    traced_ns = _traced_steady_ns(recorded_run, reports[recorded_run.name])
    assert traced_ns < reports[recorded_run.name].steady_ns, "the demo traces windows of steps"
    assert float(rows[0][3]) == round(100 * ops["total_ns"][0] / traced_ns, 2) > 0


def test_a_cpu_run_says_it_has_no_device_work_instead_of_an_empty_grid(page, recorded_run, reports):
    _show_run(page, recorded_run.name, reports[recorded_run.name])
    run = Run.open(recorded_run)
    assert run.slices.filter(pl.col("kind").is_in([S.KERNEL, S.MEMCPY, S.MEMSET])).height == 0
    assert run.slices.filter(pl.col("kind") == S.CPU_OP).height > 0
    first = list(_ops_cells(_expected_ops(recorded_run, reports[recorded_run.name]).head(1)).values())
    assert _wait_grid(page, "ops-table", ["name", "count", "total_ms", "share_pct"], first, first=True) == first  # the run's grids came
    # No empty grid: a line says there is no device work.
    page.wait_for_selector("#kernels-table-none", state="attached", timeout=TIMEOUT_MS)
    assert page.query_selector("#kernels-table") is None
    assert page.text_content("#kernels-table-none") == "No device work (kernels, copies, memsets) was recorded in this run."


def test_no_script_errors(page):
    assert page.errors == []
