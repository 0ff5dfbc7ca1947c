"""What the page shows for a real two-rank job, in a browser: ``trace_filter`` (two V100
ranks of one job).

The Overview answers why the device sat idle first; each rank gets its own bars; the
timeline's lane labels do not overlap and are not cut where they fit; device lanes sit above
host threads; the static report says it is static. (The TPU trace: test_browser_tpu.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.dashboard.browser import open_dashboard, require_browser

pytestmark = pytest.mark.browser
require_browser()

from accelscope.analysis import analyze  # noqa: E402
from accelscope.analysis.causes import CAUSE_TEXT  # noqa: E402
from accelscope.dashboard.app import create_app  # noqa: E402
from accelscope.traces.importer import import_traces  # noqa: E402
from accelscope.traces.run import Run  # noqa: E402

TWO_RANKS = "traces/HolisticTraceAnalysis/tests/data/trace_filter"
TIMEOUT_MS = 120_000
TIMELINE_DRAWN = "() => { const g = document.querySelector('#timeline-graph .js-plotly-plot'); return g && g.data && g.data.length > 0; }"
# The y-axis tick labels of the timeline's lanes: text and box, top to bottom.
LANE_LABELS = """() => [...document.querySelectorAll('#timeline-graph .yaxislayer-above .ytick text')]
    .map(t => ({text: t.textContent, box: t.getBoundingClientRect().toJSON()}))"""


@pytest.fixture(scope="module")
def two_ranks(shared_dir, tmp_path_factory) -> Path:
    return import_traces([shared_dir / TWO_RANKS], tmp_path_factory.mktemp("layout") / "two", progress=False)


@pytest.fixture(scope="module")
def two_page(two_ranks):
    with open_dashboard(create_app([two_ranks]), viewport={"width": 1400, "height": 1000}, timeout_ms=TIMEOUT_MS) as page:
        page.wait_for_function(TIMELINE_DRAWN, timeout=TIMEOUT_MS)
        yield page


# The step graph's traces (their rank groups) and its x-axis tick labels.
STEP_GRAPH = """() => {
    const g = document.querySelector('#step-graph .js-plotly-plot');
    return {data: g.data.map(t => ({offsetgroup: t.offsetgroup})), ticks: [...g.querySelectorAll('.xtick text')].map(t => t.textContent)};
}"""


def _labels(page) -> list[dict]:
    return page.evaluate(LANE_LABELS)


def test_the_overview_leads_with_the_idle_share_and_its_causes(two_page, two_ranks):
    report = analyze(Run.open(two_ranks))
    cards = two_page.eval_on_selector_all(".cards .card .label", "els => els.map(e => e.textContent)")
    assert cards[0] == "Accelerator idle" and cards.index("Verdict") > 0
    assert two_page.text_content("#overview-idle-share") == f"{report.idle_share * 100:.1f}%"
    causes = two_page.eval_on_selector_all("#overview-idle-causes li", "els => els.map(e => e.textContent)")
    assert causes == [f"{share:.1%} {CAUSE_TEXT[c]}" for c, _, share in report.idle_causes[:3]]


def test_the_header_names_each_ranks_gpu_from_the_trace(two_page):
    info = two_page.text_content("#run-info")
    assert "2 ranks" in info and "devices cuda:0, cuda:1" in info and "devices cpu" not in info


def test_each_rank_has_its_own_bars_at_integer_steps(two_page, two_ranks):
    report = analyze(Run.open(two_ranks))
    fig = two_page.evaluate(STEP_GRAPH)
    groups = {t["offsetgroup"] for t in fig["data"]}
    assert groups == {"0", "1"}, "one bar per rank at each step"
    steps = sorted(set(report.steps["step"].to_list()))
    assert fig["ticks"] and all(t.replace(",", "").isdigit() for t in fig["ticks"]) and {int(t) for t in fig["ticks"]} <= set(range(steps[0], steps[-1] + 1))


def test_lane_labels_do_not_overlap_and_thread_names_are_whole(two_page, two_ranks):
    labels = _labels(two_page)
    assert labels, "the timeline has lane labels"
    # Each tick label (one or two lines) ends above the next one's top.
    boxes = sorted((lab["box"] for lab in labels), key=lambda b: b["top"])
    assert all(a["bottom"] <= b["top"] + 0.5 for a, b in zip(boxes, boxes[1:])), [(a, b) for a, b in zip(boxes, boxes[1:]) if a["bottom"] > b["top"] + 0.5]
    run = Run.open(two_ranks)
    host = set(run.slices.filter(run.slices["device"] == "cpu").select("pid", "tid").unique().rows())
    names = {t["name"] for t in run.meta["threads"] if (t["pid"], t["tid"]) in host}
    assert names
    texts = [lab["text"] for lab in labels]
    for name in names:
        assert any(name in t for t in texts), f"{name} shown whole"


def test_device_lanes_come_before_host_threads_within_each_rank(two_page):
    texts = [lab["text"].split(" slices")[0] for lab in sorted(_labels(two_page), key=lambda lab: lab["box"]["top"])]
    for rank in (0, 1):
        mine = [t for t in texts if t.startswith(f"rank {rank} ·")]
        kinds = ["steps" if "steps" in t else "device" if "cuda" in t else "host" for t in mine]
        assert kinds[0] == "steps" and kinds == sorted(kinds, key=["steps", "device", "host"].index), mine


def test_no_script_errors(two_page):
    assert two_page.errors == []


def test_the_static_report_says_what_it_can_do(two_ranks, tmp_path):
    from accelscope.dashboard.report import write_report

    text = write_report(two_ranks, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "click a mark" not in text and "drag to zoom" not in text
    assert "static picture" in text
    assert "see the steps table" not in text or "<h2>Steps" in text
