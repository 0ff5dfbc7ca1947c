import statistics

import numpy as np
import polars as pl
import pytest

from accelscope.analysis import NoStepsError, analyze
from accelscope.analysis.steps import OUTLIER_MIN_EXCESS, step_table
from accelscope.traces.run import Run, write_run
from accelscope.verdicts import verdict_for
from tests.builders import DEVICE_SLICE, event_table
from tests.builders import numbered_steps as _events


@pytest.mark.parametrize("share, verdict", [(0.0, "none"), (0.0499, "none"), (0.05, "moderate"), (0.1999, "moderate"), (0.2, "high"), (1.0, "high")])
def test_xprof_thresholds(share, verdict):
    assert verdict_for(share) == verdict


def test_input_wait_is_clipped_to_each_step_and_overlaps_counted_once():
    ev = _events([
        (0, 100, "step"), (100, 100, "step"), (200, 100, "step"),
        (0, 30, "input_wait"), (10, 10, "input_wait"),  # nested: counted once
        (90, 20, "input_wait"),  # straddles steps 0 and 1
    ])
    t = step_table(ev)
    assert t["input_wait_ns"].to_list() == [40, 10, 0]
    assert t["warmup"].to_list() == [True, False, False]


def test_summary_leaves_out_the_warmup_step(tmp_path):
    rows = [(0, 1000, "step"), (0, 900, "input_wait")]  # a slow first step
    for i in range(1, 5):
        rows += [(i * 1000, 1000, "step"), (i * 1000, 100, "input_wait")]
    write_run(tmp_path / "r", _events(rows), None, {"complete": True})
    report = analyze(Run.open(tmp_path / "r"))
    assert report.input_wait_share == pytest.approx(0.10)
    assert report.verdict == "moderate"
    assert report.n_steps == 5 and report.mean_step_ns == 1000
    assert any("warm-up" in n for n in report.notes)
    assert report.recommendations and "input wait is 10.0%" in report.recommendations[0]


def test_run_without_steps_falls_back_to_fixed_windows_and_says_so(tmp_path):
    write_run(tmp_path / "r", _events([(0, 1000, "cpu_op"), (100, 200, "input_wait")]), None, {})
    report = analyze(Run.open(tmp_path / "r"))
    assert report.n_steps == 10 and any("no step markers" in n for n in report.notes)
    assert int(report.steps["input_wait_ns"].sum()) == 200


def test_run_without_events_is_a_clear_error(tmp_path):
    write_run(tmp_path / "r", None, None, {})
    with pytest.raises(NoStepsError, match="no events"):
        analyze(Run.open(tmp_path / "r"))


def _light_run(tmp_path, durations_s, slow_wait_s=None, timed_s=None):
    """A light-mode run of sleeping steps; ``timed_s`` gets each step's length as the loop timed it."""
    import time

    import accelscope

    with accelscope.profile(tmp_path / "r", mode="light", live=False) as prof:
        last = time.perf_counter()
        for i, d in enumerate(durations_s):
            t0 = prof.input_wait_started()
            if slow_wait_s and i == slow_wait_s[0]:
                time.sleep(slow_wait_s[1])
            prof.input_wait_ended("next(batch)", t0)
            time.sleep(d)
            prof.step()
            if timed_s is not None:
                timed_s.append(time.perf_counter() - last)
            last = time.perf_counter()
    return analyze(Run.open(prof.run_dir))


def _timed_slow(timed: list[float]) -> set[int]:
    """Steps (after the first) that the loop itself timed far slower than the median."""
    median = statistics.median(timed[1:])
    return {i for i, t in enumerate(timed) if i > 0 and t > median * (1 + OUTLIER_MIN_EXCESS * 0.8)}


def test_a_step_far_slower_than_the_median_is_an_outlier_with_its_reason(tmp_path):
    timed = []
    report = _light_run(tmp_path, [0.02] * 12, slow_wait_s=(7, 0.1), timed_s=timed)
    out = report.steps.filter(pl.col("outlier"))
    # (on a loaded machine another step's sleep can overrun as much: then it may be flagged too)
    assert 7 in out["step"].to_list() and set(out["step"].to_list()) <= _timed_slow(timed)
    assert "input wait" in out.filter(pl.col("step") == 7)["outlier_reason"][0]
    assert any("outlier" in n for n in report.notes)
    assert report.to_dict()["steps"][7]["outlier"] is True


def test_steady_steps_and_warm_up_are_not_outliers(tmp_path):
    """A slow first step and steady 40 ms ones: none is an outlier. On a machine loaded by
    other jobs a sleep can overrun by milliseconds; a step the loop itself timed that much
    slower than the median may then be flagged, and only such a step."""
    timed = []
    report = _light_run(tmp_path, [0.2] + [0.04] * 11, timed_s=timed)
    assert set(report.steps.filter("outlier")["step"].to_list()) <= _timed_slow(timed), f"steps timed {[round(t * 1e3, 1) for t in timed]} ms"


# -- runs the framework profiler traced in windows ---------------------------------------------
def _gpu_run_traced_in_windows(path):
    """10 steps of 100 ms; every step waits 10 ms for input (timed by prof.iter), and in the
    steps the schedule traced a kernel keeps cuda:0 busy for 80 ms, from 5 ms on: half of each
    wait overlaps it."""
    from accelscope.schedule import Schedule

    schedule = Schedule(skip_first=0, wait=3, warmup=1, active=2, repeat=1)
    traced = {s for first, last in schedule.windows(10) for s in range(first, last + 1)}
    ms = 1_000_000
    rows = []

    def add(start, dur, kind, name, device="cpu", stream=None, tid=1):
        rows.append((start, dur, kind, name, device, stream, tid))

    for i in range(10):
        t = i * 100 * ms
        add(t, 100 * ms, "step", f"ProfilerStep#{i}")
        add(t, 10 * ms, "input_wait", "next(DataLoader)")
        if i in traced:
            add(t + 4 * ms, 1 * ms, "runtime", "cudaLaunchKernel")
            add(t + 5 * ms, 80 * ms, "kernel", "gemm", "cuda:0", 7, 99)
    # What the recorder writes: the steps whose ops and kernels its profiler windows hold.
    windows = [list(w) for w in schedule.windows(10)]
    meta = {"complete": True, "traced_steps": {"torch_profiler": windows}, "collectors": {"torch_profiler": {"status": "ok"}}, "input_timing": "every step"}
    write_run(path, event_table(rows, (*DEVICE_SLICE, "tid")), None, meta)
    return sorted(traced)


def test_a_gpu_run_traced_in_windows_takes_device_figures_from_the_traced_steps(tmp_path):
    traced = _gpu_run_traced_in_windows(tmp_path / "r")
    report = analyze(Run.open(tmp_path / "r"))
    assert report.steps.filter(pl.col("traced"))["step"].to_list() == traced == [4, 5]
    # Untraced steps hold no kernels: counting them would read as a device idle 82 % of the time.
    assert report.busy_share == pytest.approx(0.8)
    assert report.breakdown_ns["kernel"] / report.steady_ns == pytest.approx(0.8)
    assert sum(report.breakdown_ns.values()) == pytest.approx(report.steady_ns, rel=1e-6)
    # Only the traced steps show the kernel covering half of each wait (0-10 ms): the share and the
    # breakdown count the wait the device saw, 0-4 ms (the launch, 4-5 ms, is host runtime), and the
    # idle gap before the kernel (0-5 ms) is attributed to input; not the whole 10 ms of every step.
    assert report.input_wait_share == pytest.approx(0.04)
    assert report.breakdown_ns["input_wait"] / report.steady_ns == pytest.approx(0.04)
    assert report.idle_by_cause_ns["input_wait"] / report.steady_ns == pytest.approx(0.05, abs=1e-6)
    assert report.devices["busy_share"].to_list() == [pytest.approx(0.8)] and report.streams["busy_share"].to_list() == [pytest.approx(0.8)]
    assert report.top_kernels["share_of_step_time"][0] == pytest.approx(0.8)
    assert any("recorded in 2 of 9 steady steps" in n for n in report.notes)


def test_op_shares_of_a_recorded_run_are_of_the_steps_the_profiler_traced(recorded_run):
    report = analyze(Run.open(recorded_run))
    steady = report.steps.filter(~pl.col("warmup"))
    traced = steady.filter(pl.col("traced"))
    assert 0 < traced.height < steady.height, "the demo traces a window of steps, not all"
    top = report.top_ops.row(0, named=True)
    assert top["share_of_step_time"] == pytest.approx(top["total_ns"] / traced["dur_ns"].sum())
    assert report.traced_ns == traced["dur_ns"].sum()


def test_names_of_equal_total_time_are_listed_by_name_every_time():
    from accelscope.analysis.tables import merge_names, partial_names

    # Four ops of 5 ms each and one of 7 ms: hash grouping would return the ties in any order.
    names = ["d", "b", "a", "c", "z"]
    ops = pl.DataFrame({"start_ns": [i * 10_000_000 for i in range(5)], "dur_ns": [5_000_000] * 4 + [7_000_000], "kind": ["cpu_op"] * 5, "name": names})
    one_step = (np.array([0]), np.array([100_000_000]))
    table = merge_names([partial_names(ops.lazy(), *one_step), partial_names(ops.lazy(), *one_step)], 100_000_000)  # two ranks
    assert table["name"].to_list() == ["z", "a", "b", "c", "d"]
