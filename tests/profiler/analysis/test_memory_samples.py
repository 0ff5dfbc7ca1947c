"""Memory from per-step samples (analysis/memory_samples.py): light-mode runs of a real CPU
torch loop under ``accelscope.profile`` with the CUDA allocator faked at its boundary
(``fake_cuda``), read back through ``accelscope analyze --json`` and the text report."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from accelscope.analysis import analyze
from accelscope.analysis import memory_samples as MS
from accelscope.cli import main
from accelscope.text import print_report
from accelscope.traces.run import Run
from tests.cuda_fake import MIB, TOTAL_BYTES, train

BIG_STEP = 6  # the step whose activation is largest: the run's peak


def _spiky(step: int) -> int:
    return 32 * MIB if step == BIG_STEP else 4 * MIB


def _json(prof, capsys) -> dict:
    assert main(["analyze", str(prof.run_dir), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def leaking(tmp_path, fake_cuda):
    """12 steps keeping 1 MiB each, on top of 100 MiB held before profiling began (the model)."""
    fake_cuda.allocate(100 * MIB)
    return train(tmp_path / "r", fake_cuda, steps=12, kept=MIB, transient=_spiky)


def test_the_peak_is_the_most_any_step_held_in_the_step_that_held_it(leaking, capsys):
    prof, _, peaks = leaking
    (row,) = _json(prof, capsys)["memory"]["devices"]
    assert (row["device"], row["rank"]) == ("cuda:0", 0)
    assert row["peak_allocated_bytes"] == max(peaks) == 100 * MIB + (BIG_STEP + 1) * MIB + 32 * MIB
    assert row["peak_step"] == BIG_STEP
    assert row["peak_op"] is None and row["relative"] is False, "absolute: what was held before the run counts"
    assert row["source"] == "per-step samples"


def test_the_peak_reserved_is_the_most_the_allocator_held(leaking, capsys, fake_cuda):
    prof, _, _ = leaking
    (row,) = _json(prof, capsys)["memory"]["devices"]
    assert row["peak_reserved_bytes"] == fake_cuda.reserved == 140 * MIB, "whole 2 MiB segments, never given back"
    assert row["memory_total_bytes"] == TOTAL_BYTES
    assert row["peak_share"] == pytest.approx(140 * MIB / TOTAL_BYTES, abs=1e-6)


def test_a_loop_keeping_1_mib_per_step_leaks_1_mib_per_step(leaking, capsys):
    prof, _, _ = leaking
    doc = _json(prof, capsys)
    (leak,) = doc["memory"]["leaks"]
    assert leak["device"] == "cuda:0" and leak["bytes_per_step"] == MIB
    assert leak["steps"] == 11, "the steady steps: step 0 is warm-up"
    assert leak["op"] is None and leak["source"] == "per-step samples"
    assert doc["memory_leak_bytes_per_step"] == MIB


def test_the_same_loop_keeping_nothing_has_no_leak(tmp_path, fake_cuda, capsys):
    prof, _, _ = train(tmp_path / "r", fake_cuda, steps=12, kept=0, transient=_spiky)
    doc = _json(prof, capsys)
    assert doc["memory"]["leaks"] == [] and doc["memory_leak_bytes_per_step"] == 0
    assert doc["memory"]["devices"][0]["peak_step"] == BIG_STEP


def test_without_the_per_step_reset_the_peak_and_its_step_are_the_same(tmp_path, fake_cuda, capsys):
    from accelscope.collectors.cuda_memory import CudaMemoryCollector

    prof, _, peaks = train(tmp_path / "r", fake_cuda, steps=12, transient=_spiky, collectors=[CudaMemoryCollector(reset_peak=False)])
    (row,) = _json(prof, capsys)["memory"]["devices"]
    assert (row["peak_allocated_bytes"], row["peak_step"]) == (max(peaks), BIG_STEP)


def test_too_few_steps_leave_leaks_unknown_and_say_why(tmp_path, fake_cuda, capsys):
    prof, _, _ = train(tmp_path / "r", fake_cuda, steps=3)
    doc = _json(prof, capsys)
    assert doc["memory_leak_bytes_per_step"] is None
    assert "memory was sampled over fewer than 3 changes" in doc["unknown"]["memory_leak_bytes_per_step"]


def test_each_sample_belongs_to_the_step_it_ended(leaking):
    prof, held, _ = leaking
    run = Run.open(prof.run_dir)
    got = MS.per_step(run.counters, analyze(run).steps)
    assert got["step"].to_list() == list(range(12))
    assert got["allocated_bytes"].to_list() == held


def test_a_device_with_allocator_events_keeps_their_figures(leaking):
    prof, _, _ = leaking
    run = Run.open(prof.run_dir)
    steps = analyze(run).steps
    with_events = MS.per_step(run.counters, steps).select("rank", "device").unique()
    assert MS.per_step(run.counters, steps, exclude=with_events).height == 0


def test_the_text_report_shows_the_sampled_peak_and_the_leak(leaking):
    prof, _, _ = leaking
    buf = io.StringIO()
    print_report(analyze(Run.open(prof.run_dir)), Console(file=buf, width=200, color_system=None))
    out = buf.getvalue()
    assert "Memory peaks" in out and "cuda:0" in out and "per-step samples" in out
    assert "memory grows 1.0 MiB per step on cuda:0 (per-step samples" in out
    assert "record with mode='full', whose allocator events name it" in out, "the leak's advice says how to see the op"
