"""The Ranks section in a real browser (headless Chromium through Playwright) on a real
3-rank torchrun job (gloo, CPU) whose rank 2 waits at least 30 ms a step for its batch
(``tests/jobs/launch.LOADER_3``): the straggler shown is rank 2, the map has a row per rank and
switches to the wait for other ranks, and the collectives' window opens on the timeline."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser

from tests.dashboard.browser import open_dashboard, require_browser  # noqa: E402

require_browser()
pytest.importorskip("torch", reason="the torch extra is needed for torchrun jobs")

from accelscope.analysis import analyze  # noqa: E402
from accelscope.dashboard.app import create_app  # noqa: E402
from accelscope.traces.run import Run  # noqa: E402
from tests.jobs.launch import LOADER_3  # noqa: E402

TIMEOUT_MS = 90_000
STRAGGLER = 2
# A graph has drawn its data (not the empty figure the page starts with).
DRAWN = "id => { const g = document.querySelector(`#${id} .js-plotly-plot`); return g && g._fullLayout && (g.data || []).length > 0 && g.querySelector('.main-svg'); }"


@pytest.fixture(scope="module")
def job(ddp_job):
    return ddp_job(*LOADER_3) / "ddp"


@pytest.fixture(scope="module")
def page(job):
    with open_dashboard(create_app([job]), timeout_ms=TIMEOUT_MS) as pg:
        pg.wait_for_selector("#ranks-table", state="attached", timeout=TIMEOUT_MS)  # after the timeline, like the sections below it
        for gid in ("ranks-heatmap", "ranks-collectives"):
            pg.wait_for_function(DRAWN, arg=gid, timeout=TIMEOUT_MS)
        pg.eval_on_selector("#section-ranks", "e => e.scrollIntoView({block: 'start'})")
        yield pg


def test_the_ranks_section_shows_rank_2_as_the_straggler(page, job, tmp_path):
    report = analyze(Run.open(job))
    assert [s.rank for s in report.stragglers] == [STRAGGLER]
    assert page.is_visible("#section-ranks")
    summary = page.inner_text("#ranks-summary")
    assert summary.startswith("Straggler: " + report.stragglers[0].text), summary
    rows = page.eval_on_selector_all("#ranks-table tbody tr", "rs => rs.map(r => [r.className, r.cells[0].textContent])")
    assert rows == [["", "0"], ["", "1"], ["straggler-row", f"{STRAGGLER} (straggler)"]]
    # The Overview's banner names it too, and links here.
    banner = page.inner_text("#overview-ranks")
    assert banner.startswith(f"Straggler: rank {STRAGGLER} arrives last") and page.get_attribute("#overview-ranks a", "href") == "#section-ranks"
    page.locator("#section-ranks").screenshot(path=str(tmp_path / "ranks.png"))
    assert page.errors == []


def test_the_heatmap_has_a_row_per_rank_and_switches_to_the_wait(page):
    read = """() => { const g = document.querySelector('#ranks-heatmap .js-plotly-plot');
        return {ticks: g._fullLayout.yaxis.tickvals, name: g.data[0].name,
                tiles: g.querySelectorAll('.barlayer .point').length, title: g._fullLayout.title.text}; }"""
    before = page.evaluate(read)
    assert before["ticks"] == [0, 1, 2] and before["name"] == "step" and before["title"].startswith("step time")
    assert before["tiles"] > 0 and before["tiles"] % 3 == 0, "a tile per rank and step"
    page.check("#ranks-metric input[value=wait]")
    page.wait_for_function("() => document.querySelector('#ranks-heatmap .js-plotly-plot').data[0].name === 'wait'", timeout=TIMEOUT_MS)
    after = page.evaluate(read)
    assert after["ticks"] == [0, 1, 2] and after["tiles"] == before["tiles"] and after["title"].startswith("waiting for other ranks")


def test_show_on_the_timeline_zooms_the_timeline_to_the_collectives_window(page):
    window = page.evaluate("() => document.querySelector('#ranks-collectives .js-plotly-plot').layout.meta.window_ms")
    page.click("#ranks-zoom-button")
    page.wait_for_function(
        """w => { const g = document.querySelector('#timeline-graph .js-plotly-plot');
                  const r = g && g._fullLayout.xaxis.range; return r && Math.abs(r[0] - w[0]) < 1e-6 && Math.abs(r[1] - w[1]) < 1e-6; }""",
        arg=window, timeout=TIMEOUT_MS,
    )
    # The server redraws the timeline for that window (its title says "in this view").
    page.wait_for_function("() => document.querySelector('#timeline-graph .gtitle').textContent.includes('in this view')", timeout=TIMEOUT_MS)
    assert page.errors == []
