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


def _custom_loop(tmp_path, n=8, dataset=None, **kw):
    dense = tf.keras.layers.Dense(4)

    @tf.function
    def train_step(x):
        return tf.reduce_sum(dense(x))

    kw.setdefault("schedule", SCHEDULE)
    with accelscope.profile(tmp_path / "run", framework="tensorflow", live=False, **kw) as prof:
        for x in prof.iter(_dataset(n, delay_ms=5) if dataset is None else dataset):
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


def _steps_holding(run: Run, kind: str) -> list[int]:
    """The numbers of the steps in which a slice of ``kind`` starts."""
    ev = run.slices
    steps = ev.filter(pl.col("kind") == S.STEP).sort("start_ns")
    marks = ev.filter(pl.col("kind") == kind)
    hits = steps.join_where(marks.select(t="start_ns"), pl.col("t") >= pl.col("start_ns"), pl.col("t") < pl.col("start_ns") + pl.col("dur_ns"))
    return sorted({int(n.split("#")[1]) for n in hits["name"].to_list()})


TWO_WINDOWS = Schedule(skip_first=1, wait=1, warmup=1, active=2, repeat=2)  # steps 3-4 and 7-8


def test_the_listed_steps_are_the_steps_that_hold_ops(tmp_path):
    # Before the windows were bounded by the run's own step slices, a host op TF recorded
    # a few µs after prof.step() read the clock (TFE_DeleteTensorHandle) landed in steps
    # 5 and 9, which no window lists.
    fast = tf.data.Dataset.range(12).map(lambda i: tf.fill((8, 16), tf.cast(i, tf.float32)))
    _, run = _custom_loop(tmp_path, n=12, dataset=fast, schedule=TWO_WINDOWS)
    windows = run.meta["traced_steps"]["tensorflow_profiler"]
    assert windows == [[3, 4], [7, 8]] == [list(w) for w in TWO_WINDOWS.windows(12)]
    assert _steps_holding(run, S.CPU_OP) == [3, 4, 7, 8]
    ops = run.events.filter(pl.col("kind") == S.CPU_OP)
    steps = run.events.filter(pl.col("kind") == S.STEP).sort("start_ns")
    assert ops["start_ns"].min() >= steps["start_ns"][3], "no warm-up or earlier op"


def test_host_work_between_a_steps_end_and_the_tracer_stopping_stays_out(tmp_path, monkeypatch):
    # The tracer stops inside prof.step(), after the step's end was read: an op run in that
    # gap (here by a collector told about the step before the TF collector) is traced but
    # lies in the next, untraced step. It is left out.
    from accelscope.collectors import registry
    from accelscope.collectors.base import Collector

    class OpOnStep(Collector):
        name = "op_on_step"

        def start(self, ctx) -> None:
            pass

        def on_step(self, step: int) -> None:
            tf.add(tf.constant(1.0), 1.0)

    monkeypatch.setattr(registry, "REGISTRY", [registry.Entry("op_on_step", lambda s: True, lambda s: OpOnStep()), *registry.REGISTRY])
    _, run = _custom_loop(tmp_path, n=12, schedule=TWO_WINDOWS)
    assert run.meta["traced_steps"]["tensorflow_profiler"] == [[3, 4], [7, 8]]
    assert _steps_holding(run, S.CPU_OP) == [3, 4, 7, 8]


def test_windows_from_step_zero_each_list_what_they_held(tmp_path):
    every = Schedule(skip_first=0, wait=0, warmup=0, active=2, repeat=0)
    _, run = _custom_loop(tmp_path, n=5, schedule=every)
    assert run.meta["traced_steps"]["tensorflow_profiler"] == [[0, 1], [2, 3], [4, 4]]
    assert _steps_holding(run, S.CPU_OP) == [0, 1, 2, 3, 4]


def test_a_failed_window_is_not_listed_and_the_next_one_is(tmp_path, monkeypatch):
    from accelscope.traces import xplane

    real, seen = xplane.read_xplane, []

    def first_fails(path, **kw):
        seen.append(path)
        if len(seen) == 1:
            raise ValueError("truncated XSpace")
        return real(path, **kw)

    monkeypatch.setattr(xplane, "read_xplane", first_fails)
    prof, run = _custom_loop(tmp_path, n=12, schedule=TWO_WINDOWS)
    assert run.meta["traced_steps"] == {"tensorflow_profiler": [[7, 8]]}
    assert _steps_holding(run, S.CPU_OP) == [7, 8]
    assert seen[0].exists(), "the unconverted window stays on disk for the user"


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
    assert run.meta["traced_steps"] == {"tensorflow_profiler": [[3, 3]]}
    assert _steps_holding(run, S.CPU_OP) == [3]


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


def test_the_windows_allocator_events_are_recorded_in_the_memory_table(tmp_path):
    """TF's profiler writes its allocator calls into the XPlane: they land in the run's
    memory table (on this process, within the recorded steps), not among the ops. (TF's CPU
    allocator reports blocks of this size, 256 KiB; the tiny tensors of ``_custom_loop`` none.)"""
    w = tf.Variable(tf.random.normal([256, 256]))

    @tf.function
    def train_step(x):
        return tf.reduce_sum(tf.matmul(tf.random.normal([256, 256]), w) + x)

    with accelscope.profile(tmp_path / "run", framework="tensorflow", live=False, schedule=SCHEDULE) as prof:
        for i in prof.iter(range(8)):
            train_step(tf.constant(float(i)))
            prof.step()
    run = Run.open(prof.run_dir)
    mem, ev = run.memory, run.events
    recorded = ev.filter(pl.col("name").is_in(["ProfilerStep#3", "ProfilerStep#4"]))
    assert recorded.height == 2
    assert mem.height > 0 and set(mem["device"]) == {"cpu"} and set(mem["bytes"].abs()) == {256 * 256 * 4}
    assert mem["time_ns"].min() >= recorded["start_ns"].min()
    assert mem["time_ns"].max() < (recorded["start_ns"] + recorded["dur_ns"]).max()
    assert set(mem["pid"]) == {run.meta["pid"]}
    assert not set(ev["name"]) & {"MemoryAllocation", "MemoryDeallocation"}


def test_an_out_of_memory_error_is_recorded_at_its_step_and_propagates_unchanged(tmp_path):
    """TF's CPU allocator refusing 4 PiB (a float tensor of shape [2^20, 2^20, 2^10]) in step 3,
    a traced step: the ResourceExhaustedError comes out as the same object, the run records it
    at step 3 on the CPU with the bytes its shape and type ask for, and the window keeps step 3."""
    raised = []
    with pytest.raises(tf.errors.ResourceExhaustedError) as got:
        with accelscope.profile(tmp_path / "run", framework="tensorflow", live=False, schedule=SCHEDULE) as prof:
            for step in range(6):
                tf.reduce_sum(tf.ones([64, 64]))
                if step == 3:
                    try:
                        tf.random.normal([2**20, 2**20, 2**10])
                    except tf.errors.ResourceExhaustedError as exc:
                        raised.append(exc)
                        raise
                prof.step()
    assert got.value is raised[0]
    run = Run.open(prof.run_dir)
    oom = run.meta["oom"]
    assert (oom["step"], oom["device"], oom["kind"], oom["requested_bytes"]) == (3, "cpu", "tensorflow", 2**52)
    assert oom["error_type"].endswith("ResourceExhaustedError") and "OOM when allocating tensor" in oom["message"]
    assert run.meta["traced_steps"]["tensorflow_profiler"] == [[3, 3]], "the window open at the failure keeps the failing step"
