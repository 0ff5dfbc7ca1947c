"""The TensorFlow collector, for real with tensorflow-cpu: windows of TF profiler output
converted into the run, tf.data waits as input waits, and failures kept out of training."""

from __future__ import annotations

import logging
import sys

import numpy as np
import polars as pl
import pytest

import accelscope
from accelscope.schedule import Schedule
from accelscope.traces import schema as S
from accelscope.traces.run import Run

tf = pytest.importorskip("tensorflow", reason="the tf extra (tensorflow-cpu) is needed")

SCHEDULE = Schedule(skip_first=1, wait=1, warmup=1, active=2, repeat=1)  # records steps 3 and 4


def _dataset(n: int, delay_ms: float = 0.0):
    import time

    def load(i):
        if delay_ms:
            time.sleep(delay_ms / 1000)
        return np.full((8, 16), float(i), np.float32)

    def load_op(i):
        x = tf.numpy_function(load, [i], tf.float32, stateful=True)
        x.set_shape((8, 16))
        return x

    return tf.data.Dataset.range(n).map(load_op)


def _custom_loop(tmp_path, n=8, **kw):
    dense = tf.keras.layers.Dense(4)

    @tf.function
    def train_step(x):
        return tf.reduce_sum(dense(x))

    with accelscope.profile(tmp_path / "run", framework="tensorflow", schedule=SCHEDULE, live=False, **kw) as prof:
        for x in prof.iter(_dataset(n, delay_ms=5)):
            train_step(x)
            prof.step()
    return prof, Run.open(prof.run_dir)


def test_records_tf_ops_only_in_the_scheduled_window(tmp_path):
    prof, run = _custom_loop(tmp_path)
    assert run.meta["collectors"]["tensorflow_profiler"]["status"] == "ok"
    ev = run.events
    steps = ev.filter(pl.col("kind") == S.STEP).sort("start_ns")
    ops = ev.filter(pl.col("kind") == S.CPU_OP)
    assert ops.height > 0
    first, last = SCHEDULE.windows(8)[0]
    window_start = steps["start_ns"][first]
    window_end = steps["start_ns"][last] + steps["dur_ns"][last]
    assert ops["start_ns"].min() >= window_start
    assert ops["start_ns"].max() <= window_end + 1_000_000  # the tracer stops right after the step
    # The train step's own ops are there (the MatMul of the Dense layer).
    assert ops.filter(pl.col("name").str.contains("MatMul")).height >= 2


def test_the_run_lists_the_steps_the_window_traced(tmp_path):
    _, run = _custom_loop(tmp_path)
    assert run.meta["traced_steps"] == {"tensorflow_profiler": [list(SCHEDULE.windows(8)[0])]}


def test_a_window_that_cannot_be_converted_lists_no_traced_steps(tmp_path, monkeypatch):
    from accelscope.traces import xplane

    def fails(*a, **k):
        raise ValueError("truncated XSpace")

    monkeypatch.setattr(xplane, "read_xplane", fails)
    _, run = _custom_loop(tmp_path)
    assert run.meta["traced_steps"] == {"tensorflow_profiler": []}, "the profiler ran; nothing it traced is in the run"


def test_trace_step_markers_do_not_add_steps(tmp_path):
    _, run = _custom_loop(tmp_path)
    steps = run.events.filter(pl.col("kind") == S.STEP)
    assert steps.height == 8
    assert set(steps["device"].to_list()) == {"cpu"}


def test_tf_data_waits_become_input_waits_on_tf_lanes(tmp_path):
    prof, run = _custom_loop(tmp_path)
    waits = run.events.filter(pl.col("kind") == S.INPUT_WAIT)
    traced = waits.filter(pl.col("name").str.starts_with("IteratorGetNext"))
    assert traced.height >= 2  # one per recorded step
    # Each traced wait lies inside one of prof.iter's own waits on the training thread.
    ours = waits.filter(~pl.col("name").str.starts_with("IteratorGetNext"))
    s, e = ours["start_ns"].to_numpy(), (ours["start_ns"] + ours["dur_ns"]).to_numpy()
    for ts, te in zip(traced["start_ns"].to_numpy(), (traced["start_ns"] + traced["dur_ns"]).to_numpy()):
        assert ((s <= ts + 50_000) & (te <= e + 50_000)).any()
    assert all(pid == prof.pid for pid in traced["pid"].to_list())


def test_temporary_profiler_files_are_removed(tmp_path):
    prof, _ = _custom_loop(tmp_path)
    assert not (prof.run_dir / ".tmp-tensorflow").exists()


def test_a_window_cut_short_by_the_end_of_training_is_kept(tmp_path):
    # Steps 3 and 4 are the window; training ends after step 3.
    _, run = _custom_loop(tmp_path, n=4)
    assert run.events.filter(pl.col("kind") == S.CPU_OP).height > 0


def test_light_mode_runs_no_tf_profiler(tmp_path):
    _, run = _custom_loop(tmp_path, mode="light")
    assert "tensorflow_profiler" not in run.meta["collectors"]
    assert run.events.filter(pl.col("kind") == S.CPU_OP).height == 0


def test_a_profiler_session_already_running_drops_the_collector_not_training(tmp_path, caplog):
    tf.profiler.experimental.start(str(tmp_path / "users-own"))
    try:
        with caplog.at_level(logging.WARNING, logger="accelscope"):
            prof, run = _custom_loop(tmp_path)
    finally:
        tf.profiler.experimental.stop()
    assert prof.steps == 8
    status = run.meta["collectors"]["tensorflow_profiler"]
    assert status["status"] == "dropped" and "TensorFlow profiler" in status["reason"]
    assert len([r for r in caplog.records if "tensorflow_profiler" in r.getMessage()]) == 1


def test_an_unreadable_window_is_reported_and_training_continues(tmp_path, caplog, monkeypatch):
    from accelscope.traces import xplane

    def broken(*a, **k):
        raise xplane.AccelscopeError("truncated XSpace")

    monkeypatch.setattr(xplane, "read_xplane", broken)
    with caplog.at_level(logging.WARNING, logger="accelscope"):
        prof, run = _custom_loop(tmp_path)
    assert prof.steps == 8
    assert run.events.filter(pl.col("kind") == S.STEP).height == 8
    assert any("could not convert TensorFlow profiler window" in r.getMessage() for r in caplog.records)


def test_without_tensorflow_the_collector_is_unavailable(tmp_path, monkeypatch):
    from accelscope.collectors.base import CollectorUnavailable
    from accelscope.collectors.tf_profiler import TensorFlowProfilerCollector

    monkeypatch.setitem(sys.modules, "tensorflow", None)
    with pytest.raises(CollectorUnavailable, match=r"accelscope\[tf\]"):
        TensorFlowProfilerCollector(SCHEDULE, tmp_path).start(None)
