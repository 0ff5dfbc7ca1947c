"""The Steps and Compare sections' data, from real runs: a recorded run with an injected
slow step, and the two real ResNet-50 traces (num_workers 0 and 4)."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("plotly", reason="the dashboard extra is needed")

import accelscope  # noqa: E402
from accelscope.analysis import analyze  # noqa: E402
from accelscope.dashboard.sections import compare as compare_page  # noqa: E402
from accelscope.dashboard.sections import steps as steps_page
from accelscope.traces.importer import import_traces  # noqa: E402
from accelscope.traces.run import Run  # noqa: E402

NW0 = "traces/kineto/tb_plugin/samples/resnet50_num_workers_0/worker0.1623143089861.pt.trace.json.gz"
NW4 = "traces/kineto/tb_plugin/samples/resnet50_num_workers_4/worker0.1623212756351.pt.trace.json.gz"


@pytest.fixture(scope="module")
def slow_step_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("steps")
    with accelscope.profile(out / "r", mode="light", live=False) as prof:
        # Steps of ~35 ms, so that a few ms of scheduling noise on a busy machine stays far
        # below the outlier threshold (25 % over the median); step 6 waits 150 ms for input.
        for i in range(12):
            t0 = prof.input_wait_started()
            time.sleep(0.15 if i == 6 else 0.005)
            prof.input_wait_ended("next(batch)", t0)
            time.sleep(0.03)
            prof.step()
    return analyze(Run.open(prof.run_dir))


@pytest.fixture(scope="module")
def resnet_pair(shared_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("pair")
    return [analyze(Run.open(import_traces([shared_dir / p], out / n, progress=False))) for n, p in (("nw0", NW0), ("nw4", NW4))]


def test_step_rows_flag_the_outlier_with_its_reason(slow_step_report):
    rows = steps_page.step_rows(slow_step_report)
    assert len(rows) == 12
    flagged = {r["step"]: r for r in rows if r["flag"] == "outlier"}
    # Step 6 is flagged for its input wait. (A step the machine really slowed down may be too.)
    assert 6 in flagged and "input wait" in flagged[6]["outlier_reason"]
    assert max(rows, key=lambda r: r["dur_ms"])["step"] == 6
    assert rows[0]["flag"] == "warm-up"
    # The breakdown columns add up to the step time.
    r = rows[6]
    parts = sum(v for k, v in r.items() if k.endswith("_ms") and k != "dur_ms")
    assert parts == pytest.approx(r["dur_ms"], abs=0.01)


def test_steps_figure_marks_outliers_in_red(slow_step_report):
    fig = steps_page.steps_figure(slow_step_report)
    colors = fig.data[0].marker.color
    outliers = int(slow_step_report.steps["outlier"].sum())
    assert colors[6] == steps_page.OUTLIER_COLOR
    assert sum(c == steps_page.OUTLIER_COLOR for c in colors) == outliers >= 1
    assert fig.layout.title.text == (f"{outliers} outlier step" + ("s" if outliers > 1 else ""))
    assert "outlier" in fig.data[0].hovertext[6]


def test_compare_rows_show_the_input_wait_going_away(resnet_pair):
    cmp = compare_page.comparison(*resnet_pair)
    rows = {r["metric"]: r for r in compare_page.summary_rows(cmp)}
    assert rows["verdict"]["a"] == "highly input-bound" and rows["verdict"]["b"] == "not input-bound"
    assert rows["mean step"]["delta"].startswith("-")
    deltas = compare_page.delta_rows(cmp)
    loader = [d for d in deltas if d["name"].startswith("enumerate(DataLoader)")]
    assert loader and loader[0]["delta_ms"] < -50
    fig = compare_page.breakdown_figure(cmp)
    x = list(fig.data[0].x)
    wait_a, wait_b = fig.data[0].y[x.index("input wait")], fig.data[1].y[x.index("input wait")]
    assert wait_a > 50 and wait_b < 2


def test_compare_without_a_second_run_is_empty():
    assert compare_page.summary_rows(None) == [] and compare_page.delta_rows(None) == []


def test_untraced_steps_of_a_gpu_run_have_no_busy_share(tmp_path):
    from tests.profiler.analysis.test_analyzer import _gpu_run_traced_in_windows

    traced = _gpu_run_traced_in_windows(tmp_path / "r")
    rows = steps_page.step_rows(analyze(Run.open(tmp_path / "r")))
    assert [r["step"] for r in rows if r["busy_pct"] is not None] == traced
    assert {r["flag"] for r in rows if r["step"] not in traced and r["step"] > 0} == {"not traced"}
    assert all(r["busy_pct"] == 80.0 for r in rows if r["step"] in traced)
