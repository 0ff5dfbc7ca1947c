"""Steps for traces without host step markers (analysis/iterations.py through
breakdown.step_windows): device steps, GPU-side ProfilerStep annotations, iterations from
the device's rhythm, and only then equal windows. Expectations come from how each table
is built here, or from the raw trace files."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from accelscope.analysis import analyze
from accelscope.analysis.breakdown import FALLBACK_WINDOWS, WINDOW_NAME, step_windows
from accelscope.analysis.iterations import ITERATION_NAME, MIN_ITERATION_GAP_NS, rhythm_windows
from accelscope.traces.importer import import_traces
from accelscope.traces.run import Run, write_run
from tests.builders import DEVICE_SLICE, event_table

US = 1_000
MS = 1_000_000
TRACELENS = "traces/more/tracelens"


def _bursts(starts_ms: list[float], kernels: int = 5, kernel_us: int = 40, gap_us: int = 2) -> list[tuple]:
    """Bursts of ``kernels`` kernels on cuda:0, ``gap_us`` apart, each burst at ``starts_ms``."""
    rows = []
    for b in starts_ms:
        t = int(b * MS)
        for _ in range(kernels):
            rows.append((t, kernel_us * US, "kernel", "gemm", "cuda:0", 7))
            t += (kernel_us + gap_us) * US
    return rows


def test_bursts_of_device_work_are_iterations_from_one_burst_to_the_next():
    starts = [0.0, 3.0, 6.5, 9.0]
    ev = event_table(_bursts(starts) + [(0, 200, "cpu_op", "aten::mm", "cpu", None)], columns=DEVICE_SLICE)
    windows, notes = step_windows(ev)
    assert windows["name"].to_list() == [f"{ITERATION_NAME}{i}" for i in range(4)]
    assert windows["start_ns"].to_list() == [int(s * MS) for s in starts]
    # Each iteration runs to the next burst's first kernel; the last ends with its work.
    last_end = int(9.0 * MS) + 5 * 40 * US + 4 * 2 * US
    assert windows["end_ns"].to_list() == [int(s * MS) for s in starts[1:]] + [last_end]
    assert notes[0] == "no training steps in this trace"
    assert any(n.startswith("inference trace") for n in notes)
    assert any("rhythm" in n and "cuda:0" in n for n in notes)


def test_a_backward_op_means_not_an_inference_trace():
    ev = event_table(_bursts([0.0, 3.0, 6.0]) + [(0, 200, "cpu_op", "autograd::engine::evaluate_function: MmBackward0", "cpu", None)],
                     columns=DEVICE_SLICE)
    _, notes = step_windows(ev)
    assert notes[0] == "no training steps in this trace"
    assert not any(n.startswith("inference trace") for n in notes)


@pytest.mark.parametrize(
    "rows, why",
    [
        ([(i * 42 * US, 40 * US, "kernel", "k", "cuda:0", 7) for i in range(40)], "kernels 2 µs apart everywhere: no burst stands out"),
        ([(int(t * MS), 40 * US, "kernel", "k", "cuda:0", 7) for t in (0, 5, 10, 15)], "single kernels are not bursts"),
    ],
)
def test_no_rhythm_falls_back_to_equal_windows(rows, why):
    windows, notes = step_windows(event_table(rows, columns=DEVICE_SLICE))
    assert windows.height == FALLBACK_WINDOWS and windows["name"].str.starts_with(WINDOW_NAME).all(), why
    assert notes[0] == "no training steps in this trace" and "equal windows" in notes[-1]


def test_gaps_shorter_than_a_host_turnaround_do_not_cut_iterations():
    """Kernels back to back with a few µs hiccups (one CUDA graph replay): no iterations,
    however large the ratio to the nanosecond gaps inside."""
    t, rows = 0, []
    for hiccup in (0, 5 * US, 10 * US, 0):
        t += hiccup
        for _ in range(20):
            rows.append((t, 10 * US, "kernel", "k", "cuda:0", 7))
            t += 10 * US + 1
    starts = np.array([r[0] for r in rows])
    assert rhythm_windows(starts, starts + 10 * US) is None
    assert 10 * US < MIN_ITERATION_GAP_NS


def test_gpu_side_profiler_step_annotations_are_the_steps():
    rows = [
        (1 * MS, 4 * MS, "annotation", "ProfilerStep#7", "cuda:0", 7),
        (5 * MS, 3 * MS, "annotation", "ProfilerStep#8", "cuda:0", 7),
        (1 * MS, 4 * MS, "annotation", "ProfilerStep#7", "cuda:1", 9),  # another GPU: same steps, counted once
        (2 * MS, 1 * MS, "kernel", "gemm", "cuda:0", 7),
        (6 * MS, 1 * MS, "kernel", "gemm", "cuda:0", 7),
    ]
    windows, notes = step_windows(event_table(rows, columns=DEVICE_SLICE))
    assert windows.select("step", "name", "start_ns", "end_ns").rows() == [(7, "ProfilerStep#7", 1 * MS, 5 * MS), (8, "ProfilerStep#8", 5 * MS, 8 * MS)]
    assert notes[0] == "no training steps in this trace" and "GPU-side ProfilerStep" in notes[-1]


def test_device_step_slices_come_before_annotations_and_rhythm():
    rows = _bursts([0.0, 3.0, 6.0]) + [
        (0, 2 * MS, "step", "ProfilerStep#1", "tpu:0", 1),
        (2 * MS, 7 * MS, "step", "ProfilerStep#2", "tpu:0", 1),
        (0, 9 * MS, "step", "ProfilerStep#1", "tpu:1", 1),
    ]
    windows, notes = step_windows(event_table(rows, columns=DEVICE_SLICE))
    assert windows.select("step", "start_ns", "end_ns").rows() == [(1, 0, 2 * MS), (2, 2 * MS, 9 * MS)]
    assert len(notes) == 1 and "tpu:0" in notes[0] and "device-side" in notes[0]


def test_host_steps_win_over_everything():
    rows = _bursts([0.0, 3.0, 6.0]) + [(0, 9 * MS, "step", "ProfilerStep#4", "cpu", None)]
    windows, notes = step_windows(event_table(rows, columns=DEVICE_SLICE))
    assert windows["name"].to_list() == ["ProfilerStep#4"] and not notes


def test_analysis_reports_iterations_and_busy_share_over_them(tmp_path):
    starts = [0.0, 3.0, 6.0, 9.0]
    ev = event_table(_bursts(starts), columns=DEVICE_SLICE)
    write_run(tmp_path / "r", ev, None, {"complete": True})
    report = analyze(Run.open(tmp_path / "r"))
    assert report.steps["name"].str.starts_with(ITERATION_NAME).all()
    # Iteration i: 5 kernels of 40 µs in a 3 ms window (the last: its own work only).
    busy = report.steps.sort("start_ns")["busy_ns"].to_list()
    assert busy == [5 * 40 * US] * 4


# ----------------------------------------------------------------------------- real traces
def _raw_names(path) -> set[str]:
    doc = json.load(gzip.open(path))
    return {e.get("name", "") for e in (doc["traceEvents"] if isinstance(doc, dict) else doc) if e.get("ph") == "X"}


@pytest.mark.parametrize("name", ["inference__vllm_decode_full__graph_execution.json.gz", "inference__sglang_decode__sglang_Qwen3-8B_decode.json.gz"])
def test_real_inference_traces_say_so(shared_dir, tmp_path, name):
    path = shared_dir / TRACELENS / name
    raw = _raw_names(path)
    assert not any(n.startswith("ProfilerStep#") for n in raw)
    assert not any("backward" in n.lower() or "optimizer" in n.lower() for n in raw)
    report = analyze(Run.open(import_traces([path], tmp_path / "r", progress=False)))
    assert report.notes[0] == "no training steps in this trace" or "no training steps in this trace" in report.notes
    assert any(n.startswith("inference trace") for n in report.notes)


def test_gpu_side_step_of_the_qwen_trace_is_the_window_tracelens_measures(shared_dir, tmp_path):
    """The HF Qwen trace without its host ProfilerStep#6: the GPU-side annotation gives the
    step, 34.892 ms long as TraceLens measures it (shared README), where the raw file has it."""
    import polars as pl

    path = shared_dir / TRACELENS / "h100__Qwen_Qwen1.5-0.5B-Chat__1016005.json.gz"
    doc = json.load(gzip.open(path))
    raw = [e for e in doc["traceEvents"] if e.get("cat") == "gpu_user_annotation" and e.get("name") == "ProfilerStep#6"]
    assert len(raw) == 1
    events = Run.open(import_traces([path], tmp_path / "r", progress=False)).events
    windows, notes = step_windows(events.filter(~((pl.col("kind") == "step") & (pl.col("device") == "cpu"))))
    assert windows["name"].to_list() == ["ProfilerStep#6"] and windows["step"].to_list() == [6]
    dur_us = (windows["end_ns"][0] - windows["start_ns"][0]) / 1e3
    assert dur_us == pytest.approx(34_892, abs=1) and dur_us == pytest.approx(raw[0]["dur"], abs=1)
    assert "GPU-side ProfilerStep" in notes[-1]
