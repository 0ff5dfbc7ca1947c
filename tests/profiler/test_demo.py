"""The demo's verdict follows reality: injected input delay shows up as measured input wait."""

import pytest

from accelscope.analysis import analyze
from accelscope.traces.run import Run

pytest.importorskip("torch", reason="the demo needs the torch extra")
pytestmark = pytest.mark.slow


def _measure(tmp_path, **kw):
    from accelscope.demo import run_demo

    report = analyze(Run.open(run_demo(tmp_path, progress=False, **kw)))
    return report, report.mean_step_ns / 1e6


def test_default_demo_is_highly_input_bound_and_measures_the_true_share(tmp_path):
    from accelscope.demo import DEFAULT_DELAY_MS

    report, step_ms = _measure(tmp_path, steps=30)
    true_share = DEFAULT_DELAY_MS / step_ms
    assert report.verdict == "high"
    assert abs(report.input_wait_share - true_share) <= 0.05, (report.input_wait_share, true_share)


def test_parallel_loading_without_delay_is_not_input_bound(tmp_path):
    report, _ = _measure(tmp_path, steps=30, loader_delay_ms=0, workers=2)
    assert report.verdict == "none"
    assert report.input_wait_share <= 0.05


@pytest.mark.parametrize("delay_ms", [10.0, 80.0])
def test_measured_share_tracks_the_injected_delay(tmp_path, delay_ms):
    report, step_ms = _measure(tmp_path, steps=20, loader_delay_ms=delay_ms, mode="light")
    assert abs(report.input_wait_share - delay_ms / step_ms) <= 0.05
