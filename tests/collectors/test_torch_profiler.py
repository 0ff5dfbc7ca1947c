"""Failures injected into the torch.profiler collector stay out of the training loop."""

from __future__ import annotations

import logging
import sys

import polars as pl
import pytest

import accelscope
from accelscope.schedule import Schedule
from accelscope.traces import schema as S
from accelscope.traces.run import Run

torch = pytest.importorskip("torch", reason="the torch extra is needed")
SCHEDULE = Schedule(skip_first=1, wait=1, warmup=1, active=2, repeat=2)


def _train(tmp_path, n=12, **kw):
    x = torch.randn(64, 64)
    kw.setdefault("schedule", SCHEDULE)
    with accelscope.profile(tmp_path / "r", framework="torch", live=False, **kw) as prof:
        for _ in prof.iter(range(n)):
            (x @ x).relu().sum()
            prof.step()
    return prof, Run.open(prof.run_dir)


def test_a_window_that_cannot_be_converted_is_kept_and_reported(tmp_path, monkeypatch, caplog):
    from accelscope.traces import kineto

    real = kineto.read_kineto
    seen = []

    def first_fails(path, **kw):
        seen.append(path)
        if len(seen) == 1:
            raise kineto.TraceFormatError(f"{path}: truncated JSON")
        return real(path, **kw)

    monkeypatch.setattr(kineto, "read_kineto", first_fails)
    with caplog.at_level(logging.WARNING, logger="accelscope"):
        prof, run = _train(tmp_path)
    assert prof.steps == 12
    assert run.meta["collectors"]["torch_profiler"]["status"] == "ok"
    assert any("could not convert torch.profiler window" in r.getMessage() for r in caplog.records)
    assert seen[0].exists(), "the unconverted window stays on disk for the user"
    ops = run.events.filter((pl.col("kind") == S.CPU_OP) & (pl.col("name") == "aten::mm"))
    assert ops.height == 2, "the second window still arrives"
    assert run.meta["traced_steps"] == {"torch_profiler": [list(SCHEDULE.windows(12)[1])]}, "the lost window's steps are not listed as traced"


def _steps_holding(run: Run, kind: str) -> list[int]:
    """The numbers of the steps in which a slice of ``kind`` starts."""
    ev = run.slices
    steps = ev.filter(pl.col("kind") == S.STEP).sort("start_ns")
    marks = ev.filter(pl.col("kind") == kind)
    hits = steps.join_where(marks.select(t="start_ns"), pl.col("t") >= pl.col("start_ns"), pl.col("t") < pl.col("start_ns") + pl.col("dur_ns"))
    return sorted({int(n.split("#")[1]) for n in hits["name"].to_list()})


def test_the_run_lists_the_steps_each_window_traced(tmp_path):
    prof, run = _train(tmp_path)
    windows = run.meta["traced_steps"]["torch_profiler"]
    assert windows == [list(w) for w in SCHEDULE.windows(12)]
    assert [s for first, last in windows for s in range(first, last + 1)] == _steps_holding(run, S.CPU_OP)


def test_host_work_between_a_steps_end_and_the_tracer_stopping_stays_out(tmp_path, monkeypatch):
    # torch stops tracing inside prof.step(), after the step's end was read: ops run in that
    # gap (here by a collector told about the step before torch.profiler) are traced but lie
    # in the next, untraced step. They are left out.
    from accelscope.collectors import registry
    from accelscope.collectors.base import Collector

    class OpOnStep(Collector):
        name = "op_on_step"

        def start(self, ctx) -> None:
            pass

        def on_step(self, step: int) -> None:
            torch.ones(2).add_(1)

    monkeypatch.setattr(registry, "REGISTRY", [registry.Entry("op_on_step", lambda s: True, lambda s: OpOnStep()), *registry.REGISTRY])
    prof, run = _train(tmp_path)
    assert run.meta["traced_steps"]["torch_profiler"] == [[3, 4], [7, 8]]
    assert _steps_holding(run, S.CPU_OP) == [3, 4, 7, 8]
    assert run.events.filter(pl.col("name") == "aten::mm").height == 4, "every traced step keeps its own ops"


def test_windows_from_step_zero_each_list_what_they_held(tmp_path):
    # No gap between windows: each save starts the next window inside the same prof.step().
    every = Schedule(skip_first=0, wait=0, warmup=0, active=2, repeat=0)
    prof, run = _train(tmp_path, n=5, schedule=every)
    assert run.meta["traced_steps"]["torch_profiler"] == [[0, 1], [2, 3], [4, 4]]
    assert _steps_holding(run, S.CPU_OP) == [0, 1, 2, 3, 4]


def test_a_window_cut_short_by_the_end_of_training_lists_the_steps_it_held(tmp_path):
    prof, run = _train(tmp_path, n=4)  # the first window (steps 3-4) ends after step 3
    assert run.meta["traced_steps"]["torch_profiler"] == [[3, 3]]
    assert _steps_holding(run, S.CPU_OP) == [3]


def test_profiler_step_raising_drops_the_collector_once(tmp_path, monkeypatch, caplog):
    from torch.profiler import profile

    calls = {"n": 0}
    real_step = profile.step

    def step_fails(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("Kineto lost its CUPTI subscriber")
        return real_step(self, *a, **k)

    monkeypatch.setattr(profile, "step", step_fails)
    with caplog.at_level(logging.WARNING, logger="accelscope"):
        prof, run = _train(tmp_path)
    assert prof.steps == 12 and run.meta["steps"] == 12
    status = run.meta["collectors"]["torch_profiler"]
    assert status["status"] == "dropped" and "CUPTI" in status["reason"]
    assert calls["n"] == 4, "a dropped collector is not called again"
    assert sum("torch_profiler" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING) == 1


def test_profiler_failing_to_start_leaves_light_recording_running(tmp_path, monkeypatch):
    from torch.profiler import profile

    def start_fails(self):
        raise RuntimeError("another profiler is already running")

    monkeypatch.setattr(profile, "start", start_fails)
    prof, run = _train(tmp_path)
    assert run.meta["collectors"]["torch_profiler"]["status"] == "dropped"
    assert run.events.filter(pl.col("kind") == S.STEP).height == 12
    assert run.events.filter(pl.col("kind") == S.INPUT_WAIT).height >= 12


def test_without_torch_the_collector_is_unavailable(tmp_path, monkeypatch):
    from accelscope.collectors.base import CollectorUnavailable
    from accelscope.collectors.torch_profiler import TorchProfilerCollector

    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(CollectorUnavailable, match=r"accelscope\[torch\]"):
        TorchProfilerCollector(SCHEDULE, tmp_path).start(None)


def test_full_mode_records_the_allocator_events_of_the_traced_steps(tmp_path):
    prof, run = _train(tmp_path)
    memory = run.memory
    assert memory.height > 0 and set(memory["device"].to_list()) == {"cpu"}
    steps = run.slices.filter(pl.col("kind") == S.STEP)
    held = steps.join_where(memory.select("time_ns"), pl.col("time_ns") >= pl.col("start_ns"), pl.col("time_ns") < pl.col("start_ns") + pl.col("dur_ns"))
    assert held.height == memory.height, "every allocator event lies inside a step"
    assert sorted({int(n.split("#")[1]) for n in held["name"].to_list()}) == [s for a, b in SCHEDULE.windows(12) for s in range(a, b + 1)]


def test_profile_memory_false_records_no_allocator_events(tmp_path):
    prof, run = _train(tmp_path, profile_memory=False)
    assert run.memory.height == 0
    assert run.events.filter(pl.col("name") == "aten::mm").height == 4, "the ops are still traced"


def test_allocator_events_that_cannot_be_written_cost_only_themselves(tmp_path, monkeypatch, caplog):
    from accelscope.collectors import torch_profiler

    def fails(memory, window):
        raise ValueError("memory table refused")

    monkeypatch.setattr(torch_profiler, "window_memory", fails)
    with caplog.at_level(logging.WARNING, logger="accelscope"):
        prof, run = _train(tmp_path)
    assert prof.steps == 12 and run.meta["collectors"]["torch_profiler"]["status"] == "ok"
    assert run.memory.height == 0 and run.events.filter(pl.col("name") == "aten::mm").height == 4
    assert run.meta["traced_steps"] == {"torch_profiler": [list(w) for w in SCHEDULE.windows(12)]}
    assert any("could not record the allocator events" in r.getMessage() for r in caplog.records)
