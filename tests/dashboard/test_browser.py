"""The dashboard in a real browser: headless Chromium driven by Playwright."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

pytestmark = pytest.mark.browser


GRAPHS = ("step-graph", "timeline-graph", "metrics-graph")
TIMEOUT_MS = 60_000

from tests.dashboard.browser import drag_zoom, open_dashboard, panel_px, require_browser  # noqa: E402

require_browser()
from playwright.sync_api import TimeoutError as PlaywrightTimeout  # noqa: E402

from accelscope.analysis import analyze  # noqa: E402
from accelscope.dashboard.app import create_app  # noqa: E402
from accelscope.traces import schema as S  # noqa: E402
from accelscope.traces.run import Run, write_run  # noqa: E402
from accelscope.verdicts import VERDICT_TEXT  # noqa: E402
from tests.builders import event_table  # noqa: E402


def _small_run(path: Path) -> Path:
    """Five 100 ms steps with no input wait: a second, different run to switch to."""
    rows = []
    for i in range(5):
        rows.append((i * 100_000_000, 100_000_000, S.STEP, S.step_name(i)))
        rows.append((i * 100_000_000 + 10_000_000, 80_000_000, S.ANNOTATION, "forward"))
    return write_run(path, event_table(rows), None, {"start_ns": 0, "threads": [{"pid": 1, "tid": 1, "name": "trainer"}]})


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    return _small_run(tmp_path_factory.mktemp("browser") / "small")


@pytest.fixture(scope="module")
def page(recorded_run, small_run):
    with open_dashboard(create_app([recorded_run, small_run]), ready=None) as pg:
        _wait_for_render(pg)
        yield pg


def _wait_for_render(pg, steps: str | None = None) -> None:
    cond = f"e.textContent === {steps!r}" if steps else "e.textContent.trim() !== '…'"
    pg.wait_for_function(f"() => {{ const e = document.getElementById('overview-steps'); return e && {cond}; }}", timeout=TIMEOUT_MS)
    pg.wait_for_selector("#ops-table .ag-root", timeout=TIMEOUT_MS)  # the sections below the timeline follow it
    for gid in GRAPHS:
        pg.wait_for_function(
            f"() => {{ const g = document.querySelector('#{gid} .js-plotly-plot'); return g && g._fullLayout && g.querySelector('.main-svg'); }}",
            timeout=TIMEOUT_MS,
        )


def _plot(pg, gid: str, expr: str):
    return pg.evaluate(f"() => {{ const gd = document.querySelector('#{gid} .js-plotly-plot'); return {expr}; }}")


def _timeline_px(pg, x_ms: float, row: float) -> tuple[float, float]:
    """Page coordinates of a point of the timeline's plot area."""
    return tuple(
        _plot(
            pg,
            "timeline-graph",
            f"(() => {{ const r = gd.getBoundingClientRect(); const fl = gd._fullLayout;"
            f" return [r.left + fl.xaxis._offset + fl.xaxis.l2p({x_ms}), r.top + fl.yaxis._offset + fl.yaxis.l2p({row})]; }})()",
        )
    )


def _zoom(pg, start_ms: float, end_ms: float, row: float) -> None:
    """Drag-zoom the timeline to [start_ms, end_ms] and wait for the server's figure of that window.

    The graph starts listening for zooms once its first draw settled: retry until it does.
    """
    # Mouse events only reach what is on screen: the overview above may push the timeline down.
    pg.eval_on_selector("#timeline-graph", "e => e.scrollIntoView({block: 'center'})")
    for _ in range(10):
        (xa, y), (xb, _) = _timeline_px(pg, start_ms, row), _timeline_px(pg, end_ms, row)
        pg.mouse.move(xa, y)
        pg.mouse.down()
        pg.mouse.move((xa + xb) / 2, y, steps=5)
        pg.mouse.move(xb, y, steps=5)
        pg.mouse.up()
        try:
            pg.wait_for_function(
                "() => document.querySelector('#timeline-graph .js-plotly-plot').layout.title.text.includes('in this view')",
                timeout=3000,
            )
            return
        except PlaywrightTimeout:
            pg.evaluate("() => Plotly.relayout(document.querySelector('#timeline-graph .js-plotly-plot'), {'xaxis.autorange': true})")
    raise AssertionError("the timeline never showed the zoomed window")


def test_overview_shows_the_runs_numbers(page, recorded_run):
    report = analyze(Run.open(recorded_run))
    assert page.text_content("#overview-steps") == str(report.n_steps) == "14"
    assert page.text_content("#overview-verdict") == VERDICT_TEXT[report.verdict]
    assert page.text_content("#overview-input-share") == f"{report.input_wait_share * 100:.1f}%"
    assert page.text_content("#overview-mean-step") == f"{report.mean_step_ns / 1e6:,.1f} ms"
    color = page.eval_on_selector("#overview-verdict", "e => getComputedStyle(e).color")
    expected = {"high": "rgb(198, 40, 40)", "moderate": "rgb(184, 110, 0)", "none": "rgb(46, 125, 50)"}[report.verdict]
    assert color == expected
    assert "recorded" in page.text_content("#run-info")
    # The step graph stacks the breakdown categories, one bar per step in each.
    bars = _plot(page, "step-graph", "gd._fullData.map(t => [t.type, t.x.length, t.name])")
    assert [b[:2] for b in bars] == [["bar", 14]] * len(bars) and {"input wait", "host compute"} <= {b[2] for b in bars}
    assert page.title() == "accelscope"


def test_overview_shows_the_utilisation_per_device(page, recorded_run):
    from accelscope.text import device_rows as table_rows

    run = Run.open(recorded_run)
    report = analyze(run)
    headers, rows, _ = table_rows(report.devices, report.has_device)
    shown = page.evaluate("() => Array.from(document.querySelectorAll('#overview-devices table tr'), tr => Array.from(tr.cells, c => c.textContent))")
    assert shown == [headers, *rows]
    assert shown[1][:2] == ["cpu (training thread)", f"{report.devices['busy_share'][0]:.1%}"] and shown[1][2].startswith("waiting for input (")
    # The busy cell's bar is as wide as the share, of its cell.
    cell, bar = page.evaluate("() => { const td = document.querySelector('#overview-devices td.busy'); return [td.getBoundingClientRect().width, td.querySelector('.busy-bar').getBoundingClientRect().width]; }")
    assert bar / cell == pytest.approx(report.devices["busy_share"][0], abs=0.02)


def test_timeline_draws_the_runs_lanes(page, recorded_run):
    run = Run.open(recorded_run)
    training = next(n for n in run.thread_names().values() if "(training)" in n)
    # A tick is the lane's label, then (in smaller type) how many slices it holds and how many were merged.
    ticks = page.eval_on_selector_all("#timeline-graph .ytick text", "els => els.map(e => e.textContent)")
    assert "steps" in ticks and any(t.startswith(training) for t in ticks)
    types = set(_plot(page, "timeline-graph", "gd._fullData.map(t => t.type)"))
    assert types == {"scatter"}
    legend = page.eval_on_selector_all("#timeline-graph .legend .legendtext", "els => els.map(e => e.textContent)")
    assert S.INPUT_WAIT in legend and S.STEP in legend
    # The slices were drawn as SVG paths (plotly splits a kind's path where its segments
    # break): the steps' cover most of the plot, as the steps cover most of the run.
    covered = (
        "() => { const out = {}; for (const t of document.querySelectorAll('#timeline-graph .scatterlayer .trace')) {"
        " const name = t.__data__ && t.__data__[0] && t.__data__[0].trace.name;"
        " out[name] = (out[name] || 0) + Array.from(t.querySelectorAll('path.js-line'), p => p.getBBox().width).reduce((a, b) => a + b, 0); }"
        " return [out, document.querySelector('#timeline-graph .js-plotly-plot')._fullLayout._size.w]; }"
    )
    try:  # read once the graph has settled: a resize (the page's layout changing) redraws it
        page.wait_for_function(f"() => {{ const [o, w] = ({covered})(); return (o['{S.STEP}'] || 0) > 0.5 * w; }}", timeout=TIMEOUT_MS)
    except PlaywrightTimeout:
        pass
    widths, plot_px = page.evaluate(covered)
    steps = run.slices.filter(pl.col("kind") == S.STEP)
    share = int(steps["dur_ns"].sum()) / ((steps["start_ns"] + steps["dur_ns"]).max() - steps["start_ns"].min())
    assert widths.get(S.STEP, 0) > 0.5 * plot_px and share > 0.9, (widths, plot_px)
    assert widths.get(S.INPUT_WAIT, 0) > 0
    assert page.query_selector("#timeline-graph canvas.gl-canvas-context") is None  # no WebGL: SVG is faster here
    metrics = _plot(page, "metrics-graph", "gd._fullData.map(t => t.name)")
    assert "this process" in metrics and "process RSS" in metrics


def test_ops_grid_lists_the_runs_ops_sortably(page, recorded_run):
    page.eval_on_selector("#ops-table", "e => e.scrollIntoView({block: 'center'})")
    page.wait_for_selector("#ops-table .ag-row .ag-cell[col-id='name']", timeout=TIMEOUT_MS)
    first = page.text_content("#ops-table .ag-row[row-index='0'] .ag-cell[col-id='name']")
    run = Run.open(recorded_run)
    ops = run.slices.filter(pl.col("kind") == "cpu_op").group_by("name").agg(pl.col("dur_ns").sum()).sort("dur_ns", descending=True)
    assert first == ops["name"][0]
    # Sorting by count in the browser reorders the rows.
    page.click("#ops-table .ag-header-cell[col-id='count']")
    page.wait_for_timeout(300)
    counts = page.eval_on_selector_all("#ops-table .ag-center-cols-container .ag-row .ag-cell[col-id='count']", "els => els.map(e => Number(e.textContent))")
    assert counts and (counts == sorted(counts) or counts == sorted(counts, reverse=True))


def test_hovering_an_input_wait_names_it(page):
    # Zoom onto the first input wait, then hover its middle.
    x0, x1, row = _plot(
        page,
        "timeline-graph",
        "(() => { const t = gd._fullData.find(d => d.name === 'input_wait' && d.meta && !d.meta.merged);"
        " return [t.x[0], t.x[1], t.y[0]]; })()",  # a mark is [x0, x1, NaN] on its row
    )
    # Start the drag inside the plot: a drag that starts on its left edge pans the axis.
    _zoom(page, max(x0 / 2, x0 - (x1 - x0)), x1 + (x1 - x0), row)
    rng = _plot(page, "timeline-graph", "gd._fullLayout.xaxis.range")
    assert rng[1] - rng[0] < 4 * (x1 - x0)
    page.wait_for_timeout(300)
    x, y = _timeline_px(page, (x0 + x1) / 2 + (x1 - x0) / 7, row)
    page.mouse.move(x, y)
    page.wait_for_function("() => document.querySelectorAll('#timeline-graph .hoverlayer text').length > 0", timeout=10_000)
    hover = " ".join(page.eval_on_selector_all("#timeline-graph .hoverlayer text", "els => els.map(e => e.textContent)"))
    assert "next(DataLoader)" in hover and "input_wait" in hover and "ms" in hover
    # Double-click resets to the whole run.
    page.mouse.dblclick(x, y)
    page.wait_for_function(
        "() => document.querySelector('#timeline-graph .js-plotly-plot').layout.title.text.includes('in the run')",
        timeout=TIMEOUT_MS,
    )
    page.mouse.move(0, 0)


RANGES_EQUAL = """() => {
    const a = document.querySelector('#timeline-graph .js-plotly-plot')._fullLayout.xaxis.range;
    const b = document.querySelector('#metrics-graph .js-plotly-plot')._fullLayout.xaxis.range;
    return Math.abs(a[0] - b[0]) < 1e-6 && Math.abs(a[1] - b[1]) < 1e-6;
}"""


def test_metrics_follow_timeline_zooms_and_lead_them_too(page):
    whole = _plot(page, "metrics-graph", "gd.layout.meta.x_range")
    assert whole == _plot(page, "timeline-graph", "gd._fullLayout.xaxis.range")
    # A drag-zoom on the timeline moves the metrics to the same window.
    _zoom(page, whole[1] * 0.3, whole[1] * 0.5, row=0)
    page.wait_for_function(RANGES_EQUAL, timeout=TIMEOUT_MS)
    lo, hi = _plot(page, "metrics-graph", "gd._fullLayout.xaxis.range")
    assert lo == pytest.approx(whole[1] * 0.3, rel=0.05) and hi == pytest.approx(whole[1] * 0.5, rel=0.05)
    # A drag-zoom on the metrics moves the timeline, which the server redraws for that window.
    drag_zoom(page, "metrics-graph", lo + (hi - lo) * 0.25, lo + (hi - lo) * 0.75)
    page.wait_for_function(
        f"() => {{ const w = document.querySelector('#timeline-graph .js-plotly-plot').layout.meta.window;"
        f" return w && Math.abs(w[1] - w[0] - {(hi - lo) / 2}) < {(hi - lo) * 0.05}; }}",
        timeout=TIMEOUT_MS,
    )
    page.wait_for_function(RANGES_EQUAL, timeout=TIMEOUT_MS)
    # A double-click on the metrics returns both to the whole run.
    page.mouse.dblclick(*panel_px(page, "metrics-graph", (lo + hi) / 2))
    page.wait_for_function("() => document.querySelector('#timeline-graph .js-plotly-plot').layout.meta.window === null", timeout=TIMEOUT_MS)
    page.wait_for_function(RANGES_EQUAL, timeout=TIMEOUT_MS)
    assert _plot(page, "metrics-graph", "gd._fullLayout.xaxis.range") == pytest.approx(whole)


def test_switching_runs_updates_every_view(page, small_run):
    page.click("#run-select")
    page.get_by_role("option", name="small").click()
    _wait_for_render(page, steps="5")
    assert page.text_content("#overview-verdict") == VERDICT_TEXT["none"]
    assert page.text_content("#overview-input-share") == "0.0%"
    assert page.eval_on_selector("#overview-verdict", "e => getComputedStyle(e).color") == "rgb(46, 125, 50)"
    # The timeline comes from its own callback.
    page.wait_for_function("() => Array.from(document.querySelectorAll('#timeline-graph .ytick text'), e => e.textContent).some(t => t.startsWith('trainer'))", timeout=TIMEOUT_MS)
    # The sections below the timeline follow it.
    page.wait_for_function("() => document.querySelector('#metrics-graph').textContent.includes('No host or device metrics')", timeout=TIMEOUT_MS)


def test_no_script_errors(page):
    assert page.errors == []



def test_the_page_draws_with_the_vendored_plotly_bundle_and_native_string_functions(page):
    from accelscope.dashboard import plotlyjs

    assert page.evaluate("() => Plotly.version") == plotlyjs.bundle_version()
    scripts = page.evaluate("() => performance.getEntriesByType('resource').map(e => new URL(e.name).pathname)")
    assert any(s.endswith("/plotly-basic.min.js") for s in scripts)
    assert not any(s.endswith("/plotly.min.js") for s in scripts), "dcc.Graph loaded the full plotly.js as well"
    # Dash's polyfill replaces these with slow wrappers that also strip U+180E (no longer
    # whitespace; the browser's own keep it); the page puts the browser's own back.
    assert page.evaluate("() => ['\\u180e'.trim().length, ...[parseInt('\\u180e12'), parseFloat('\\u180e1.5'), Number.parseInt('\\u180e3')].map(Number.isNaN)]") == [1, True, True, True]
    assert page.evaluate("() => [' a\\u00a0'.trim(), parseInt(' 12px'), parseFloat('\\n1.5e3')]") == ["a", 12, 1500]

