"""The CUDA allocator read at every step (collectors/cuda_memory.py), driven by a real CPU
torch training loop under ``accelscope.profile`` with only the few ``torch.cuda`` functions
it calls faked (the ``fake_cuda`` fixture: the loop says what the device holds)."""

from __future__ import annotations

import logging

import polars as pl
import pytest

import accelscope
from accelscope.collectors.cuda_memory import COUNTERS, CudaMemoryCollector
from accelscope.traces.run import Run
from tests.cuda_fake import MIB, train


def samples(prof) -> pl.DataFrame:
    """The run's per-step counters, one column each, one row per sample time, by time."""
    c = Run.open(prof.run_dir).counters.filter(pl.col("name").is_in(list(COUNTERS)))
    return c.pivot(on="name", index=["device", "time_ns", "rank"], values="value").sort("time_ns")


def step_ends(prof) -> list[int]:
    steps = Run.open(prof.run_dir).events.filter(pl.col("kind") == "step").sort("start_ns")
    return (steps["start_ns"] + steps["dur_ns"]).to_list()


def test_every_step_records_the_four_counters_on_the_current_device_at_its_end(tmp_path, fake_cuda):
    prof, _, _ = train(tmp_path / "r", fake_cuda)
    got = samples(prof)
    assert got.height == 6 and set(got.columns) >= set(COUNTERS)
    assert got["device"].unique().to_list() == ["cuda:0"] and got["rank"].unique().to_list() == [0]
    assert got["time_ns"].to_list() == step_ends(prof), "each stamped at the end of its step"
    assert Run.open(prof.run_dir).meta["collectors"]["cuda_memory"] == {"status": "ok"}


def test_the_samples_are_what_the_device_held_at_each_steps_end_and_most_during_it(tmp_path, fake_cuda):
    prof, held, peaks = train(tmp_path / "r", fake_cuda, transient=lambda step: (step + 1) * MIB)
    got = samples(prof)
    assert got["memory_allocated_bytes"].to_list() == [float(b) for b in held]
    assert got["max_memory_allocated_bytes"].to_list() == [float(b) for b in peaks], "the step's own peak: reset at each step's end"
    assert got["memory_reserved_bytes"].to_list() == got["max_memory_reserved_bytes"].to_list(), "this allocator never gives a segment back"
    assert (got["memory_reserved_bytes"] >= got["max_memory_allocated_bytes"]).all()


def test_the_peaks_are_reset_once_at_start_and_after_every_step(tmp_path, fake_cuda):
    train(tmp_path / "r", fake_cuda, steps=4)
    assert fake_cuda.reads == [0] * 4
    assert fake_cuda.resets == [0] * 5


def test_reset_peak_false_leaves_the_programs_peak_alone(tmp_path, fake_cuda):
    prof, _, peaks = train(tmp_path / "r", fake_cuda, transient=lambda step: 8 * MIB if step == 2 else MIB,
                           collectors=[CudaMemoryCollector(reset_peak=False)])
    assert fake_cuda.resets == []
    running = [float(max(peaks[: i + 1])) for i in range(len(peaks))]
    assert samples(prof)["max_memory_allocated_bytes"].to_list() == running


def test_named_devices_are_read_instead_of_the_current_one(tmp_path, fake_cuda):
    fake_cuda.device = 3
    prof, _, _ = train(tmp_path / "r", fake_cuda, steps=3, collectors=[CudaMemoryCollector(devices=[0])])
    assert fake_cuda.reads == [0, 0, 0]
    assert samples(prof)["device"].unique().to_list() == ["cuda:0"]


def test_nothing_is_read_before_the_program_initialises_cuda(tmp_path, fake_cuda):
    fake_cuda.initialized = False
    prof, _, _ = train(tmp_path / "r", fake_cuda, steps=3)
    assert fake_cuda.reads == [] and fake_cuda.resets == []
    assert samples(prof).height == 0
    assert Run.open(prof.run_dir).meta["collectors"]["cuda_memory"] == {"status": "ok"}


def test_a_sampler_that_raises_mid_run_is_dropped_once_and_training_goes_on(tmp_path, fake_cuda, caplog):
    fake_cuda.fail_after = 3
    with caplog.at_level(logging.WARNING, logger="accelscope"):
        prof, held, _ = train(tmp_path / "r", fake_cuda, steps=8)
    assert prof.steps == 8, "every step ran"
    assert len(fake_cuda.reads) == 4, "read no more once it failed"
    status = Run.open(prof.run_dir).meta["collectors"]["cuda_memory"]
    assert status["status"] == "dropped" and "illegal memory access" in status["reason"]
    assert len([r for r in caplog.records if "cuda_memory dropped" in r.getMessage()]) == 1
    assert samples(prof)["memory_allocated_bytes"].to_list() == [float(b) for b in held[:3]], "what it recorded is kept"


def test_a_cpu_only_run_never_starts_it(tmp_path):
    torch = pytest.importorskip("torch")
    assert not torch.cuda.is_available(), "this test needs a machine without CUDA"
    with accelscope.profile(tmp_path / "r", mode="light", framework="torch", live=False) as prof:
        for _ in prof.iter(range(3)):
            torch.randn(4).sum()
            prof.step()
        assert not any(c.name == "cuda_memory" for c in prof._step_collectors), "no work at any step"
    run = Run.open(prof.run_dir)
    assert "cuda_memory" not in run.meta["collectors"]
    assert run.counters.filter(pl.col("name").is_in(list(COUNTERS))).height == 0


def test_a_step_reads_through_functions_bound_at_start_not_the_dotted_path_door(tmp_path, fake_cuda, monkeypatch):
    from accelscope.collectors import torch_cuda

    called, door = [], torch_cuda.call
    monkeypatch.setattr(torch_cuda, "call", lambda path, *a: called.append(path) or door(path, *a))
    train(tmp_path / "r", fake_cuda, steps=4)
    assert fake_cuda.reads == [0] * 4 and fake_cuda.resets == [0] * 5
    per_step = {"cuda.current_device", "cuda.memory_stats_as_nested_dict", "cuda.reset_peak_memory_stats"}
    assert per_step.isdisjoint(called), "no dotted path walked for a step's read"
