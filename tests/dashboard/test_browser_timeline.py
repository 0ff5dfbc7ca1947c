"""The timeline's level of detail and scheduling view in a real browser, on a real trace
(nw0: ResNet-50 on a V100, imported from ../shared), driven by Playwright."""

from __future__ import annotations

import html
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

pytestmark = pytest.mark.browser


TIMEOUT_MS = 60_000
NW0 = "traces/kineto/tb_plugin/samples/resnet50_num_workers_0/worker0.1623143089861.pt.trace.json.gz"

from tests.dashboard.browser import open_dashboard, require_browser  # noqa: E402

require_browser()

from accelscope.analysis import launches as scheduling  # noqa: E402
from accelscope.dashboard.app import create_app  # noqa: E402
from accelscope.dashboard.formatting import format_duration_ns  # noqa: E402
from accelscope.dashboard.runs import RunView  # noqa: E402
from accelscope.dashboard.timeline.launches import MAX_LATENCY_POINTS  # noqa: E402
from accelscope.traces import schema as S  # noqa: E402
from accelscope.traces.run import Run  # noqa: E402

GRAPH = "document.querySelector('#timeline-graph .js-plotly-plot')"
# Resolves once the server's figure for a relayout has replaced the graph's data.
RELAYOUT = f"""
([update]) => new Promise((resolve, reject) => {{
    const gd = {GRAPH};
    const before = gd.data;
    const timer = setTimeout(() => reject(new Error('no new figure')), 60000);
    const onAfter = () => {{
        if (gd.data === before) return;
        gd.removeListener('plotly_afterplot', onAfter);
        clearTimeout(timer);
        resolve(true);
    }};
    gd.on('plotly_afterplot', onAfter);
    Plotly.relayout(gd, update);
}})
"""


@pytest.fixture(scope="module")
def nw0_run(shared_dir, tmp_path_factory) -> Path:
    from accelscope.traces.importer import import_traces

    return import_traces([shared_dir / NW0], tmp_path_factory.mktemp("browser-nw0") / "nw0", progress=False)


@pytest.fixture(scope="module")
def page(nw0_run):
    ready = f"() => {{ const gd = {GRAPH}; return gd && gd.layout && gd.layout.title && String(gd.layout.title.text).includes('in the run'); }}"
    with open_dashboard(create_app([nw0_run]), ready=ready, viewport={"width": 1400, "height": 1000}) as pg:
        pg.wait_for_timeout(500)
        yield pg


def _traces(pg) -> list[dict]:
    """name, legend group, merged flag, marks and slices of each timeline trace, as the browser holds them."""
    return pg.evaluate(
        f"() => {GRAPH}._fullData.map(t => ({{name: t.name, group: t.legendgroup, yaxis: t.yaxis || 'y', meta: t.meta || null,"
        " n: t._length}))"
    )


def _zoom(pg, a_ms: float, b_ms: float) -> None:
    pg.eval_on_selector("#timeline-graph", "e => e.scrollIntoView({block: 'start'})")
    pg.evaluate(RELAYOUT, [{"xaxis.range[0]": a_ms, "xaxis.range[1]": b_ms}])


def _point_px(pg, trace_name: str, i: int) -> tuple[float, float]:
    """Page coordinates of point i of a hover trace (its x and y as plotly holds them)."""
    return tuple(
        pg.evaluate(
            f"""([name, i]) => {{
                const gd = {GRAPH}; const fd = gd._fullData.find(t => t.name === name);
                const r = gd.getBoundingClientRect(); const fl = gd._fullLayout;  // the lanes' axes, whatever the panels below
                return [r.left + fl.xaxis._offset + fl.xaxis.l2p(fd.x[i]), r.top + fl.yaxis._offset + fl.yaxis.l2p(fd.y[i])];
            }}""",
            [trace_name, i],
        )
    )


def test_the_queue_track_and_latency_plot_show_the_runs_numbers(page, nw0_run):
    events = Run.open(nw0_run).slices
    depth = scheduling.queue_depth(events)
    lat = scheduling.launch_latency(events)["latency_ns"].to_numpy()
    median, p90 = np.percentile(lat, [50, 90])
    texts = page.eval_on_selector_all("#timeline-graph .annotation-text", "els => els.map(e => e.textContent)")
    assert f"queue depth per stream (device ops launched, not finished) · max {int(depth['depth'].max()):,} in view" in texts
    assert any(f"launch → start latency of {lat.size:,} device ops: median {format_duration_ns(median)}, p90 {format_duration_ns(p90)}" in t for t in texts)
    # The track's line reaches the run's peak (570 queued on stream 7) and the latency points are drawn.
    peak = page.evaluate(f"() => Math.max(...Array.from({GRAPH}._fullData.find(t => t.name === 'cuda:0 stream 7' && t.yaxis === 'y2').y))")
    assert peak == 570
    points = page.evaluate(f"() => {GRAPH}._fullData.filter(t => t.yaxis === 'y3' && t.mode === 'none').reduce((n, t) => n + t._length, 0)")
    assert 0 < points <= MAX_LATENCY_POINTS
    # Each point is drawn: a dash per point in its stream's path.
    dashes = page.evaluate("() => Array.from(document.querySelectorAll('#timeline-graph .subplot.x3y3 .scatterlayer path.js-line'), p => (p.getAttribute('d').match(/M/g) || []).length).reduce((a, b) => a + b, 0)")
    assert dashes == points


def test_the_whole_run_merges_kernels_and_hovering_one_says_how_many(page):
    merged = next(t for t in _traces(page) if t["name"] == S.KERNEL and t["meta"] and t["meta"]["merged"])
    assert merged["meta"]["slices"] > 1000
    page.eval_on_selector("#timeline-graph", "e => e.scrollIntoView({block: 'start'})")
    # Hover the merged mark standing for the most kernels, with the other hover points hidden
    # (idle gaps and kept kernels lie within a pixel or two of it on the same row).
    count, x, y = page.evaluate(
        f"""async () => {{
            const gd = {GRAPH}; const fl = gd._fullLayout; const r = gd.getBoundingClientRect();
            const others = gd._fullData.map((t, i) => (t.name.includes('details') && t.name !== 'kernel merged details') ? i : -1).filter(i => i >= 0);
            await Plotly.restyle(gd, {{visible: false}}, others);
            const t = gd._fullData.find(t => t.name === 'kernel merged details'); let best = 0;
            for (let k = 0; k < t._length; k++) if (t.customdata[k][4] > t.customdata[best][4]) best = k;
            return [t.customdata[best][4], r.left + fl.xaxis._offset + fl.xaxis.l2p(t.x[best]), r.top + fl.yaxis._offset + fl.yaxis.l2p(t.y[best])];
        }}"""
    )
    page.mouse.move(0, 0)
    page.mouse.move(x, y, steps=3)
    page.wait_for_function("() => document.querySelectorAll('#timeline-graph .hoverlayer text').length > 0", timeout=10_000)
    hover = " ".join(page.eval_on_selector_all("#timeline-graph .hoverlayer text", "els => els.map(e => e.textContent)"))
    counts = page.evaluate(f"() => Array.from({GRAPH}._fullData.find(t => t.name === 'kernel merged details').customdata, c => c[4])")
    shown = re.search(r"([\d,]+) slices, ", hover)
    assert shown and int(shown.group(1).replace(",", "")) in counts, hover
    assert "busy" in hover and "mostly kernel" in hover and "zoom in to see them one by one" in hover
    assert count > 1
    page.mouse.move(0, 0)


def test_zooming_in_brings_back_the_individual_kernels_of_the_window(page, nw0_run):
    view = RunView(Run.open(nw0_run), "nw0")
    o = view.origin_ns
    a, b = 898.0, 899.0  # a busy millisecond of the backward pass
    _zoom(page, a, b)
    events = Run.open(nw0_run).slices
    kernels = events.filter((pl.col("kind") == S.KERNEL) & (pl.col("start_ns") < o + int(b * 1e6)) & (pl.col("start_ns") + pl.col("dur_ns") > o + int(a * 1e6)))
    pixel_ns = page.evaluate(f"() => {GRAPH}.layout.meta.bucket_ns")
    long = kernels.filter(pl.col("dur_ns") >= pixel_ns)
    assert pixel_ns < 1_000 and long.height > 20
    traces = _traces(page)
    drawn = {t["meta"]["merged"]: t["meta"]["slices"] for t in traces if t["group"] == S.KERNEL and t["meta"]}
    assert drawn[False] == long.height, "every kernel of at least a pixel is drawn as itself"
    assert drawn.get(True, 0) == kernels.height - long.height
    # The server drew it for the graph's own width, which the browser sent with the zoom.
    width = page.evaluate(f"() => Math.round({GRAPH}._fullLayout._size.w)")
    assert page.evaluate(f"() => {GRAPH}.layout.meta.width_px") == width


def test_zooming_onto_launches_draws_an_arrow_to_each_ones_kernel(page, nw0_run):
    events = Run.open(nw0_run).slices
    view = RunView(Run.open(nw0_run), "nw0")
    o = view.origin_ns
    a, b = 866.5, 867.5  # the backward thread launching kernels that start ~12 ms later
    _zoom(page, a, b)
    launches = scheduling.launch_latency(events).filter(pl.col("launch_start_ns").is_between(o + int(a * 1e6), o + int(b * 1e6), closed="left"))
    assert 0 < launches.height <= 500
    xs = page.evaluate(f"() => Array.from({GRAPH}._fullData.find(t => t.name === 'launch → kernel').x)")
    assert len(xs) == 3 * launches.height
    np.testing.assert_allclose(sorted(xs[0::3]), np.sort((launches["launch_start_ns"].to_numpy() - o) / 1e6), atol=1e-6)
    np.testing.assert_allclose(sorted(xs[1::3]), np.sort((launches["start_ns"].to_numpy() - o) / 1e6), atol=1e-6)
    assert f"{launches.height:,} launch → kernel arrows" in page.evaluate(f"() => {GRAPH}.layout.title.text")


def test_clicking_a_kernel_shows_its_details(page, nw0_run):
    _zoom(page, 716.0, 717.0)
    name = page.evaluate(f"() => {GRAPH}._fullData.find(t => t.name === 'kernel details').text[0]")
    x, y = _point_px(page, "kernel details", 0)
    page.mouse.click(x, y)
    page.wait_for_function("() => document.querySelector('#timeline-details .details-title') !== null", timeout=TIMEOUT_MS)
    title = page.text_content("#timeline-details .details-title")
    assert title.startswith(html.unescape(name).rstrip("…"))
    rows = page.eval_on_selector_all("#timeline-details .details-rows > *", "els => els.map(e => e.textContent)")
    info = dict(zip(rows[0::2], rows[1::2]))
    assert info["kind"] == "kernel" and info["stream"] == "cuda:0 stream 7" and "launch → start" in info


def test_no_script_errors(page):
    assert page.errors == []
