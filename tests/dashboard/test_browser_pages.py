"""Steps, Compare and live mode in a real browser (headless Chromium through Playwright),
on runs imported from real traces and on a run still being recorded."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser


from tests.dashboard.browser import open_dashboard, require_browser  # noqa: E402

require_browser()

from accelscope.analysis import analyze  # noqa: E402
from accelscope.dashboard.app import create_app  # noqa: E402
from accelscope.traces import schema as S  # noqa: E402
from accelscope.traces.importer import import_traces  # noqa: E402
from accelscope.traces.run import Run, RunWriter  # noqa: E402

TIMEOUT_MS = 60_000
NW0 = "traces/kineto/tb_plugin/samples/resnet50_num_workers_0/worker0.1623143089861.pt.trace.json.gz"
NW4 = "traces/kineto/tb_plugin/samples/resnet50_num_workers_4/worker0.1623212756351.pt.trace.json.gz"


def _grid_rows(pg, grid_id: str) -> list[list[str]]:
    return pg.evaluate(
        f"""() => Array.from(document.querySelectorAll('#{grid_id} .ag-center-cols-container .ag-row'))
              .sort((a, b) => (+a.getAttribute('row-index')) - (+b.getAttribute('row-index')))
              .map(r => Array.from(r.querySelectorAll('.ag-cell')).map(c => c.textContent.trim()))"""
    )


@pytest.fixture(scope="module")
def resnet_runs(shared_dir, tmp_path_factory) -> list[Path]:
    out = tmp_path_factory.mktemp("pages")
    return [import_traces([shared_dir / p], out / n, progress=False) for n, p in (("nw0", NW0), ("nw4", NW4))]


def test_steps_and_compare_sections_show_the_runs_numbers(resnet_runs):
    reports = [analyze(Run.open(p)) for p in resnet_runs]
    app = create_app(resnet_runs)
    with open_dashboard(app) as pg:
        # Steps: one grid row per step, with its duration and outliers flagged.
        pg.wait_for_function("() => document.querySelectorAll('#steps-table .ag-row').length > 0", timeout=TIMEOUT_MS)
        rows = _grid_rows(pg, "steps-table")
        steps = reports[0].steps
        assert [int(r[1]) for r in rows] == steps["step"].to_list()
        assert [float(r[2]) for r in rows] == pytest.approx((steps["dur_ns"] / 1e6).to_list(), abs=1e-3)
        title = pg.evaluate("() => document.querySelector('#steps-graph .gtitle').textContent")
        n_out = int(steps["outlier"].sum())
        assert title == (f"{n_out} outlier step{'s' if n_out != 1 else ''}" if n_out else "no outlier steps")
        # Compare: pick nw4 as B; the summary shows both verdicts and the step-time change.
        pg.eval_on_selector("#compare-select", "e => e.scrollIntoView({block: 'center'})")
        pg.click("#compare-select")
        pg.get_by_role("option", name="nw4", exact=True).click()
        pg.wait_for_function("() => document.querySelector('#compare-summary table')", timeout=TIMEOUT_MS)
        summary = pg.inner_text("#compare-summary")
        assert "highly input-bound" in summary and "not input-bound" in summary
        a_ms, b_ms = reports[0].mean_step_ns / 1e6, reports[1].mean_step_ns / 1e6
        assert f"{b_ms - a_ms:+,.2f} ms" in summary
        pg.wait_for_function("() => document.querySelectorAll('#compare-table .ag-row').length > 0", timeout=TIMEOUT_MS)
        names = [r[0] for r in _grid_rows(pg, "compare-table")]
        assert any(n.startswith("enumerate(DataLoader)") for n in names)
        assert not pg.errors, pg.errors


def _step_rows(first: int, n: int, step_ns: int = 50_000_000) -> list[tuple]:
    base = time.time_ns() - 10 * 10**9
    return [(base + i * step_ns, step_ns, S.STEP, S.step_name(i), "cpu", None, 1, 1, 0, None, None) for i in range(first, first + n)]


def test_live_run_updates_without_a_page_reload(tmp_path):
    writer = RunWriter(tmp_path / "live", {"clock": {"name": "unix_epoch_ns"}}, flush_interval_s=3600)
    for row in _step_rows(0, 4):
        writer.add_event(row)
    writer.flush()
    try:
        app = create_app([tmp_path / "live"])
        with open_dashboard(app) as pg:
            assert pg.inner_text("#overview-steps") == "4"
            pg.wait_for_function("() => document.getElementById('live-badge').textContent.includes('recording')", timeout=20_000)
            pg.evaluate("() => { window.__same_page = true; }")
            # Sort the steps grid by step, descending: the sort must survive the redraws.
            pg.wait_for_function("() => document.querySelectorAll('#steps-table .ag-row').length === 4", timeout=20_000)
            pg.eval_on_selector("#steps-table", "e => e.scrollIntoView({block: 'center'})")
            header = "#steps-table .ag-header-cell[col-id='step'] .ag-header-cell-label"
            pg.click(header)
            pg.click(header)
            first_step = "() => document.querySelector(\"#steps-table .ag-row[row-index='0'] .ag-cell[col-id='step']\").textContent"
            pg.wait_for_function(f"() => ({first_step})() === '3'", timeout=20_000)
            for row in _step_rows(4, 6):
                writer.add_event(row)
            writer.flush()
            pg.wait_for_function("() => document.getElementById('overview-steps').textContent === '10'", timeout=20_000)
            assert pg.evaluate("() => window.__same_page === true"), "updated in place, not reloaded"
            pg.wait_for_function("() => document.querySelectorAll('#steps-table .ag-row').length === 10", timeout=20_000)
            pg.wait_for_function(f"() => ({first_step})() === '9'", timeout=20_000)
            writer.close()
            writer = None
            # The finished run is shown once more, then polling stops.
            pg.wait_for_function("() => document.getElementById('live-badge').textContent === ''", timeout=20_000)
            assert pg.eval_on_selector("#overview-steps", "e => e.textContent") == "10"
            assert not pg.errors, pg.errors
    finally:
        if writer is not None:
            writer.close()
