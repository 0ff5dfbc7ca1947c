"""The TPU inference xplane (4 chips, ~120 host threads) in a browser: device lanes first,
the host threads beyond the main ones folded into one lane, and a control that unfolds them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.dashboard.browser import open_dashboard, require_browser

pytestmark = pytest.mark.browser
require_browser()

from accelscope.dashboard.app import create_app  # noqa: E402
from accelscope.traces.importer import import_traces  # noqa: E402
from tests.dashboard.test_browser_layouts import LANE_LABELS, TIMELINE_DRAWN, TIMEOUT_MS  # noqa: E402

TPU = "xplane/xprof_8c188e1a__tpu_inference_2.xplane.pb"


@pytest.fixture(scope="module")
def tpu(shared_dir, tmp_path_factory) -> Path:
    return import_traces([shared_dir / TPU], tmp_path_factory.mktemp("layout") / "tpu", progress=False)


@pytest.fixture(scope="module")
def tpu_page(tpu):
    with open_dashboard(create_app([tpu]), viewport={"width": 1400, "height": 1000}, timeout_ms=TIMEOUT_MS) as page:
        page.wait_for_function(TIMELINE_DRAWN, timeout=TIMEOUT_MS)
        yield page


def _labels(page) -> list[dict]:
    return page.evaluate(LANE_LABELS)


def test_a_tpu_traces_host_threads_fold_into_one_lane_and_unfold_on_request(tpu_page):
    height = tpu_page.evaluate("() => document.getElementById('timeline-graph').getBoundingClientRect().height")
    texts = [lab["text"] for lab in sorted(_labels(tpu_page), key=lambda lab: lab["box"]["top"])]
    assert height < 2500, f"the timeline is {height:.0f} px tall"
    assert any(t.startswith("tpu:") for t in texts[:4]), "device lanes first"
    assert any(t.startswith("tpu:0 · XLA Ops") for t in texts) and "tpu:0 · XLA Modules" in texts, "device lanes named after their XPlane lines"
    folded = [t for t in texts if "other host threads" in t]
    assert len(folded) == 1 and int(folded[0].split()[0]) > 100
    before = len(texts)
    tpu_page.click("#timeline-lanes input[value='all']")
    tpu_page.wait_for_function(f"() => document.querySelectorAll('#timeline-graph .ytick text').length > {before}", timeout=TIMEOUT_MS)
    assert not any("other host threads" in lab["text"] for lab in _labels(tpu_page))
    tpu_page.click("#timeline-lanes input[value='main']")
    tpu_page.wait_for_function(f"() => document.querySelectorAll('#timeline-graph .ytick text').length === {before}", timeout=TIMEOUT_MS)



def test_no_script_errors(tpu_page):
    assert tpu_page.errors == []
