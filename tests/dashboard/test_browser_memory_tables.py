"""The Memory section's tables in a real browser (headless Chromium through Playwright) on a
real CPU torch run recorded here that keeps 1 MiB per step (allocator events with addresses):
memory by op in a sortable grid in human units, the leak listed, and a click on the curve
answered with what was live then."""

from __future__ import annotations

import polars as pl
import pytest

pytestmark = pytest.mark.browser

from tests.dashboard.browser import open_dashboard, panel_px, require_browser  # noqa: E402

require_browser()

from accelscope.dashboard.app import create_app  # noqa: E402
from accelscope.dashboard.sections import memory_tables as mt  # noqa: E402
from tests.dashboard.sections.test_memory_tables import record_leaking_run  # noqa: E402
from tests.dashboard.test_browser_memory import DRAWN, TIMEOUT_MS  # noqa: E402


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """(page, report) of the leaking CPU run's dashboard."""
    run = record_leaking_run(tmp_path_factory.mktemp("mem") / "leak")
    app = create_app([run])
    with open_dashboard(app, timeout_ms=TIMEOUT_MS) as pg:
        pg.wait_for_function(DRAWN, arg="memory-graph", timeout=TIMEOUT_MS)
        # AG Grid draws a grid (and shows it) once it is in view; the mouse only reaches what is shown.
        pg.wait_for_selector("#memory-ops-table", state="attached", timeout=TIMEOUT_MS)
        pg.eval_on_selector("#memory-ops-table", "e => e.scrollIntoView({block: 'start'})")
        pg.wait_for_selector("#memory-ops-table .ag-center-cols-container .ag-row .ag-cell", state="visible", timeout=TIMEOUT_MS)
        yield pg, app._accelscope.views[0].report



def _cells(pg, row: int) -> dict[str, str]:
    """The grid's displayed row ``row`` (in its current order): field -> text."""
    return pg.evaluate(f"""() => {{
        const r = document.querySelector('#memory-ops-table .ag-center-cols-container [row-index="{row}"]');
        return Object.fromEntries([...r.querySelectorAll('.ag-cell')].map(c => [c.getAttribute('col-id'), c.innerText.trim()]));
    }}""")


def test_memory_by_op_shows_the_top_op_in_human_units(recorded):
    pg, report = recorded
    top = report.memory_ops.row(0, named=True)
    assert top["allocated_bytes"] >= 8 * 2**20, "the 1 MiB tensors of the eight traced steps, at least"
    got = _cells(pg, 0)
    assert got["name"] == top["name"] and got["device"] == "cpu" and got["allocations"] == f"{top['allocations']:,}"
    for field in ("allocated_bytes", "self_increase_bytes", "total_allocated_bytes", "total_increase_bytes"):
        assert got[field] == mt.size_text(top[field]), field  # the browser's formatter writes what the server's would
    assert pg.errors == []


def test_memory_by_op_sorts_by_bytes_not_by_their_text(recorded):
    pg, report = recorded
    totals = report.memory_ops["total_allocated_bytes"]
    least, most = mt.size_text(totals.min()), mt.size_text(totals.max())
    assert min(mt.size_text(t) for t in totals) != least, "sorted by their text, another would come first (128 KiB before 32 B)"
    assert _cells(pg, 0)["total_allocated_bytes"] != least
    header = "#memory-ops-table .ag-header-cell[col-id='total_allocated_bytes']"
    for direction, first in (("ascending", least), ("descending", most)):
        pg.click(f"{header} .ag-header-cell-label")
        pg.wait_for_function(f"() => document.querySelector(\"{header}\").getAttribute('aria-sort') === '{direction}'", timeout=TIMEOUT_MS)
        got = _cells(pg, 0)
        assert got["total_allocated_bytes"] == first, direction
        assert report.memory_ops.filter(pl.col("name") == got["name"])["total_allocated_bytes"][0] == (totals.min() if direction == "ascending" else totals.max())


def test_the_leak_is_listed_under_the_curves(recorded):
    pg, report = recorded
    assert report.memory_leaks.height == 1
    text = pg.inner_text("#memory-leaks")
    assert "LEAKS" in text.upper() and "aten::ones" in text and "1.0 MiB" in text
    assert pg.errors == []


def test_a_click_at_the_peak_shows_what_was_live(recorded):
    pg, report = recorded
    peak = report.memory.row(0, named=True)
    x = pg.evaluate("() => document.querySelector('#memory-graph .js-plotly-plot').data.find(t => t.meta.role === 'peak').x[0]")
    pg.eval_on_selector("#memory-graph", "e => e.scrollIntoView({block: 'center'})")
    pg.mouse.click(*panel_px(pg, "memory-graph", x))
    pg.wait_for_selector("#memory-live .memory-live-table", timeout=TIMEOUT_MS)
    rows = pg.evaluate("() => [...document.querySelectorAll('#memory-live tbody tr')].map(r => [...r.cells].map(c => c.innerText))")
    # What the process held before the trace (other tests' tensors) comes as one "before trace" row, maybe above.
    assert ["aten::ones", "8.00 MiB", "8"] in [[r[0], *r[2:]] for r in rows], f"the eight kept 1 MiB tensors: {rows}"
    assert rows[-1][0] == "total" and rows[-1][2] == mt.size_text(peak["peak_allocated_bytes"])
    assert pg.errors == []


def test_what_the_cpu_held_is_drawn_as_stacked_areas(recorded):
    pg, report = recorded
    got = pg.evaluate("""() => { const gd = document.querySelector('#memory-graph .js-plotly-plot');
        return [gd.data.filter(t => t.meta.role === 'category').map(t => t.meta.category),
                [...gd.querySelectorAll('.scatterlayer .js-fill')].filter(p => (p.getAttribute('d') || '').length > 10).length]; }""")
    categories, fills = got
    assert categories and fills == len(categories), "one filled area per category held"
    assert pg.errors == []
