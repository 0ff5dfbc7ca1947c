"""The TensorFlow demo measures what it injects, and compares with the PyTorch demo."""

import json
import subprocess
import sys

import polars as pl
import pytest

from accelscope.analysis import analyze
from accelscope.traces.run import Run

pytest.importorskip("tensorflow", reason="the TensorFlow demo needs the tf extra")
pytestmark = pytest.mark.slow


def _measure(tmp_path, **kw):
    from accelscope.demo import run_demo

    report = analyze(Run.open(run_demo(tmp_path, progress=False, framework="tensorflow", **kw)))
    return report, report.mean_step_ns / 1e6


def test_default_tf_demo_is_highly_input_bound_and_measures_the_true_share(tmp_path):
    from accelscope.demo import DEFAULT_DELAY_MS

    report, step_ms = _measure(tmp_path, steps=24)
    assert report.verdict == "high"
    assert abs(report.input_wait_share - DEFAULT_DELAY_MS / step_ms) <= 0.05


def test_parallel_tf_data_without_delay_is_not_input_bound(tmp_path):
    report, _ = _measure(tmp_path, steps=24, loader_delay_ms=0, workers=2)
    assert report.verdict == "none"


def test_keras_fit_demo_measures_the_share_from_traced_steps(tmp_path):
    from accelscope.demo import DEFAULT_DELAY_MS

    report, _ = _measure(tmp_path, steps=30, keras_fit=True)
    assert report.verdict == "high"
    # The share comes from the steps the profiler traced, which run slower than the others
    # (tracing costs time): the truth to compare with is the delay over *their* mean step.
    traced = report.steps.filter(~pl.col("warmup") & pl.col("input_timed"))
    assert 0 < traced.height < report.steps.height - 1
    assert abs(report.input_wait_share - DEFAULT_DELAY_MS / (traced["dur_ns"].mean() / 1e6)) <= 0.05


def test_a_keras_fit_report_gives_one_input_share_wherever_it_is_shown(tmp_path):
    """The headline, the breakdown table and the JSON are over the same (traced) steps:
    before, the headline read 98.8 % over the traced steps and the breakdown 20.1 % over all."""
    report, _ = _measure(tmp_path, steps=30, keras_fit=True)
    doc = report.to_dict()
    assert 0 < report.basis.steps < report.timing_basis.steps, "the shares are over the traced steps"
    assert doc["breakdown"]["input_wait"]["share"] == pytest.approx(doc["input_wait_share"], abs=1e-5)
    assert doc["busy_share"] == pytest.approx(doc["breakdown"]["host_compute"]["share"], abs=1e-5), "a CPU run: busy is the thread's compute"
    assert sum(v["share"] for v in doc["breakdown"].values()) == pytest.approx(1.0, abs=1e-4)


def test_keras_fit_needs_the_tensorflow_framework(tmp_path):
    from accelscope.demo import run_demo

    with pytest.raises(ValueError, match="--framework tensorflow"):
        run_demo(tmp_path, keras_fit=True)


def test_pytorch_and_tensorflow_runs_of_the_same_model_compare(tmp_path):
    pytest.importorskip("torch", reason="the comparison needs the torch extra too")
    runs = []
    for fw in ("torch", "tensorflow"):
        proc = subprocess.run(
            [sys.executable, "-m", "accelscope", "demo", "--framework", fw, "--steps", "16", "--loader-delay-ms", "20",
             "--mode", "light", "--out-dir", str(tmp_path), "--no-serve"],
            capture_output=True, text=True, timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        runs.append(next(line.split("run written to ", 1)[1] for line in proc.stdout.splitlines() if "run written to" in line))
    proc = subprocess.run([sys.executable, "-m", "accelscope", "diff", *runs, "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    metas = [Run.open(r).meta["framework"]["name"] for r in runs]
    assert metas == ["torch", "tensorflow"]
    # Both steps wait ~20 ms for input: both runs see it.
    waits = doc["breakdown_us_per_step"]["input_wait"]
    assert waits["a"] > 15_000 and waits["b"] > 15_000
