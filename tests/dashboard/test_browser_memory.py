"""The Memory section in a real browser (headless Chromium through Playwright) on the real
V100 ResNet-50 nw0 trace: drawn with its peaks, zoomed with the timeline both ways, a click on
a curve answered (this trace records no addresses)."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.browser

from tests.dashboard.browser import drag_zoom, open_dashboard, panel_px, require_browser  # noqa: E402

require_browser()

from accelscope.dashboard.app import create_app  # noqa: E402
from accelscope.dashboard.sections import memory_tables as mt  # noqa: E402
from accelscope.traces.importer import import_traces  # noqa: E402
from tests.dashboard.sections.test_memory import NW0  # noqa: E402

TIMEOUT_MS = 90_000
DRAWN = "id => { const g = document.querySelector(`#${id} .js-plotly-plot`); return g && g._fullLayout && (g.data || []).length > 0 && g.querySelector('.main-svg'); }"
SAME_RANGE = """id => {
    const a = document.querySelector('#timeline-graph .js-plotly-plot')._fullLayout.xaxis.range;
    const b = document.querySelector(`#${id} .js-plotly-plot`)._fullLayout.xaxis.range;
    return Math.abs(a[0] - b[0]) < 1e-6 && Math.abs(a[1] - b[1]) < 1e-6;
}"""


@pytest.fixture(scope="module")
def page(shared_dir, tmp_path_factory):
    run = import_traces([shared_dir / NW0], tmp_path_factory.mktemp("mem") / "nw0", progress=False, workers=1)
    with open_dashboard(create_app([run]), timeout_ms=TIMEOUT_MS) as pg:
        for gid in ("timeline-graph", "memory-graph"):
            pg.wait_for_function(DRAWN, arg=gid, timeout=TIMEOUT_MS)
        yield pg


def _plot(pg, expr: str):
    return pg.evaluate(f"() => {{ const gd = document.querySelector('#memory-graph .js-plotly-plot'); return {expr}; }}")


def test_the_section_draws_each_devices_allocation_and_peak(page):
    assert page.is_visible("#section-memory")
    roles = _plot(page, "gd.data.map(t => [t.meta.role, t.meta.device])")
    assert sorted(d for r, d in roles if r == "allocated") == sorted(d for r, d in roles if r == "peak") == ["cpu", "cuda:0"]
    assert page.errors == []


def test_memory_follows_timeline_zooms_and_leads_them(page):
    whole = _plot(page, "gd.layout.meta.x_range")
    lo, hi = whole[1] * 0.3, whole[1] * 0.5
    page.evaluate(f"() => Plotly.relayout(document.querySelector('#timeline-graph .js-plotly-plot'), {{'xaxis.range': [{lo}, {hi}]}})")
    page.wait_for_function(SAME_RANGE, arg="memory-graph", timeout=TIMEOUT_MS)
    # A drag-zoom on the memory figure moves the timeline (nw0 samples no metrics: their graph is empty).
    drag_zoom(page, "memory-graph", lo + (hi - lo) * 0.25, lo + (hi - lo) * 0.75)
    page.wait_for_function(f"() => {{ const r = document.querySelector('#timeline-graph .js-plotly-plot')._fullLayout.xaxis.range;"
                           f" return Math.abs(r[1] - r[0] - {(hi - lo) / 2}) < {(hi - lo) * 0.05}; }}", timeout=TIMEOUT_MS)
    page.wait_for_function(SAME_RANGE, arg="memory-graph", timeout=TIMEOUT_MS)
    # A double-click on it returns every graph to the whole run.
    page.mouse.dblclick(*panel_px(page, "memory-graph", (lo + hi) / 2))
    page.wait_for_function("() => document.querySelector('#timeline-graph .js-plotly-plot').layout.meta.window === null", timeout=TIMEOUT_MS)
    page.wait_for_function(SAME_RANGE, arg="memory-graph", timeout=TIMEOUT_MS)
    assert _plot(page, "gd._fullLayout.xaxis.range") == pytest.approx(whole)
    assert page.errors == []


def _click_curve(pg, device: str, x_ms: float) -> None:
    """Click the first panel of the memory figure at ``x_ms`` (its middle height: the unified hover picks the curve there)."""
    pg.eval_on_selector("#memory-graph", "e => e.scrollIntoView({block: 'center'})")
    pg.mouse.click(*panel_px(pg, "memory-graph", x_ms))


def test_a_click_on_a_curve_without_addresses_says_what_was_live_is_unknown(page):
    whole = _plot(page, "gd.layout.meta.x_range")
    peak = _plot(page, "gd.data.find(t => t.meta.role === 'peak' && t.meta.device === 'cuda:0').x[0]")
    before = page.inner_text("#memory-live")  # the zoom test's double-click may have asked already
    _click_curve(page, "cuda:0", peak)
    page.wait_for_function("b => { const t = document.getElementById('memory-live').innerText; return t !== b && /cuda:0 at ([0-9.,]+) ms/.test(t); }",
                           arg=before, timeout=TIMEOUT_MS)
    text = page.inner_text("#memory-live")
    at_ms = float(re.search(r"cuda:0 at ([0-9.,]+) ms", text).group(1).replace(",", ""))
    assert at_ms == pytest.approx(peak, abs=0.01 * whole[1]), "the instant clicked, not an earlier click's"
    assert mt.NO_ADDRESSES in text
    assert page.errors == []
