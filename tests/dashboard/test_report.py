import re
import subprocess
import sys

import pytest

pytest.importorskip("plotly", reason="the dashboard extra is not installed")

from accelscope.analysis import analyze
from accelscope.dashboard import plotlyjs  # noqa: E402
from accelscope.dashboard.server import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from accelscope.traces.run import Run  # noqa: E402
from accelscope.verdicts import VERDICT_TEXT  # noqa: E402


@pytest.fixture(scope="module")
def report_file(recorded_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "report.html"
    proc = subprocess.run([sys.executable, "-m", "accelscope", "report", str(recorded_run), "-o", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return out


def test_report_is_self_contained_and_states_the_verdict(report_file, recorded_run):
    text = report_file.read_text()
    report = analyze(Run.open(recorded_run))
    assert VERDICT_TEXT[report.verdict] in text and f"{report.input_wait_share:.1%}" in text
    assert not re.search(r"<script[^>]+src=", text), "no external scripts: it must open offline"
    assert "Plotly.newPlot" in text and plotlyjs.bundle_text() in text, "plotly.js (the basic bundle) is embedded"
    assert text.count("plotly.js (basic - minified)") == 1, "embedded once, not once per figure"
    busy = report.devices["busy_share"][0]
    assert "<h2>Utilisation per device</h2><table><thead><tr><th>device</th><th>busy</th>" in text
    assert f"<tr><td>cpu (training thread)</td><td>{busy:.1%}</td><td>waiting for input (" in text


def test_report_refuses_to_overwrite(report_file, recorded_run):
    proc = subprocess.run([sys.executable, "-m", "accelscope", "report", str(recorded_run), "-o", str(report_file)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "exists" in proc.stderr


@pytest.mark.browser
def test_report_draws_offline_in_a_browser(report_file):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: the browser tests need Debian's chromium")
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=list(CHROMIUM_ARGS))
        context = browser.new_context(offline=True)
        page = context.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(report_file.as_uri())
        page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot .main-svg').length >= 3", timeout=30_000)
        names = page.evaluate("() => [...document.querySelectorAll('.js-plotly-plot')].map(g => g._fullData.map(t => t.name))")
        version = page.evaluate("() => Plotly.version")
        browser.close()
    assert errors == []
    assert version == plotlyjs.bundle_version()
    assert "input wait" in names[0] and "input_wait" in names[1]


def test_a_single_rank_report_has_no_ranks_section(report_file):
    text = report_file.read_text()
    assert "<h2>Ranks</h2>" not in text and "Straggler:" not in text and "class='rank-line" not in text


def test_a_snapshot_run_report_shows_no_timing_and_its_memory(tmp_path):
    """A memory snapshot records no timeline: no idle, verdict or step-time cards, no timeline."""
    import pickle

    from accelscope.dashboard.report import build_report
    from accelscope.dashboard.sections import memory
    from accelscope.dashboard.sections.overview import MEMORY_ONLY
    from accelscope.traces.importer import import_traces
    from tests.traces.test_torch_snapshot import _snapshot

    path = tmp_path / "snap.pickle"
    path.write_bytes(pickle.dumps(_snapshot()))
    text = build_report(import_traces([path], tmp_path / "run", progress=False))
    assert MEMORY_ONLY.split(":")[0] in text and f"<h2>{memory.TITLE}</h2>" in text
    for timing in ("accelerator idle", "compute thread idle", ">verdict<", "<h2>Timeline</h2>", "Why the"):
        assert timing not in text, timing
