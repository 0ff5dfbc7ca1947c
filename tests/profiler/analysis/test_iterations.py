"""Steps for traces without host step markers (analysis/iterations.py through
breakdown.step_windows): device steps, GPU-side ProfilerStep annotations, repeated top-level
user annotations, iterations from the device's rhythm (XLA module runs, jitted calls, bursts
of device work), and only then equal windows. Expectations come from how each table is
built here, or from the raw trace files."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from accelscope.analysis import analyze
from accelscope.analysis.breakdown import FALLBACK_WINDOWS, WINDOW_NAME, step_windows
from accelscope.analysis.iterations import ITERATION_NAME, MIN_ITERATION_GAP_NS, TRAINING_OPS, periodic_windows, rhythm_windows
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
    assert "not steps" in notes[-1] and "per window" in notes[-1], "equal-window figures say what they are"


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


# ------------------------------------------------------------------- repeated annotations
HOST_ANN = ("start_ns", "dur_ns", "kind", "name", "device", "stream", "pid", "tid")


def _kernels(starts_ms: list[float]) -> list[tuple]:
    return [(*row, 0, 0) for row in _bursts(starts_ms)]


def test_a_repeated_host_annotation_gives_iterations_from_one_occurrence_to_the_next():
    starts = [1.0, 4.0, 7.0]
    rows = [(int(s * MS), 500 * US, "annotation", "serve_batch", "cpu", None, 1, 1) for s in starts]
    rows += _kernels([s + 0.6 for s in starts])  # the device works after each host call
    windows, notes = step_windows(event_table(rows, columns=HOST_ANN))
    assert windows["start_ns"].to_list() == [int(s * MS) for s in starts]
    # The last runs to the end of the device work after it (5 kernels of 40 µs, 2 µs apart).
    last_work_end = int(7.6 * MS) + 5 * 40 * US + 4 * 2 * US
    assert windows["end_ns"].to_list() == [int(4.0 * MS), int(7.0 * MS), last_work_end]
    assert windows["name"].str.starts_with(ITERATION_NAME).all()
    assert notes[0] == "no training steps in this trace" and "'serve_batch'" in notes[-1]


def test_device_annotations_the_host_never_recorded_are_not_user_annotations():
    """An XPlane's device lines (async copies, XLA ops) are annotations on the device with no
    host counterpart: no iterations from them, however often they repeat."""
    rows = [(int(t * MS), 2 * MS, "annotation", "async-copy", "cuda:0", 9, 0, 9) for t in (0, 3, 6)]
    rows += [(int(t * MS), 40 * US, "kernel", "k", "cuda:0", 7, 0, 7) for t in (0.5, 3.5, 6.5)]
    windows, notes = step_windows(event_table(rows, columns=HOST_ANN))
    assert windows["name"].str.starts_with(WINDOW_NAME).all() and "equal windows" in notes[-1]


def test_requests_served_concurrently_are_not_iterations():
    """The same annotation overlapping itself on two threads: requests in parallel, no one loop."""
    rows = [(int(t * MS), 2 * MS, "annotation", "handle", "cpu", None, 1, tid) for t, tid in ((0, 1), (1, 2), (3, 1), (4, 2))]
    rows += [(int(t * MS), 40 * US, "kernel", "k", "cuda:0", 7, 0, 7) for t in (0.5, 1.5, 3.5, 4.5)]
    windows, _ = step_windows(event_table(rows, columns=HOST_ANN))
    assert not windows["name"].str.starts_with(ITERATION_NAME).any()


def test_a_name_repeated_in_a_corner_of_the_trace_is_no_rhythm():
    """Two occurrences covering a small part of the device's work: not iterations."""
    rows = [(int(t * MS), 100 * US, "annotation", "warmup", "cpu", None, 1, 1) for t in (0.0, 0.2)]
    rows += [(i * 42 * US, 40 * US, "kernel", "k", "cuda:0", 7, 0, 7) for i in range(200)]
    windows, _ = step_windows(event_table(rows, columns=HOST_ANN))
    assert not windows["name"].str.starts_with(ITERATION_NAME).any()


def test_the_last_periodic_window_is_at_most_the_longest_iteration_and_at_least_its_marker():
    s = np.array([0, 10, 30])
    e = s + 2
    assert periodic_windows(s, e, 1_000)[1].tolist() == [10, 30, 50], "capped at the longest period (20)"
    assert periodic_windows(s, e, 35)[1].tolist() == [10, 30, 35], "to the end of the work after it"
    assert periodic_windows(s, np.array([2, 12, 40]), 35)[1].tolist() == [10, 30, 40], "never before its own end"


# ------------------------------------------------------------------------ training or not
def test_backward_and_gradient_ops_are_training_but_compiler_passes_named_after_optimizers_are_not():
    import polars as pl

    training = pl.Series(["autograd::engine::evaluate_function: MmBackward0", "MmBackward0", "ReluGrad", "BiasAddGrad",
                          "Optimizer.step#SGD.step", "ResourceApplyAdam", "jit(train)/transpose(jvp(dense))"])
    assert training.str.contains(TRAINING_OPS).all()
    # XLA pass names on the TPU inference trace's host (real names from that trace).
    passes = pl.Series(["optimizer-tpu-spmd-collectives", "collective-pipeliner-backward", "tpu_scatter_gather_optimizer", "gather_optimizer"])
    assert not passes.str.contains(TRAINING_OPS).any()


# ------------------------------------------------------------------- real traces, iterations
def _raw_xplane_line(path, plane_name: str, line_prefix: str) -> list[tuple[str, int, int]]:
    """(name, start ns, end ns) of the events on the lines of one plane whose name starts with
    ``line_prefix``, straight from the protobuf with the documented clock rule."""
    from accelscope.traces.xplane_proto import load_xspace, stats_of

    space = load_xspace(path)
    env = next(p for p in space.planes if p.name == "Task Environment")
    anchor = stats_of(env.stats, {sm.id: sm.name for sm in env.stat_metadata.values()})["profile_start_time"]
    plane = next(p for p in space.planes if p.name == plane_name)
    out = []
    for line in plane.lines:
        if line.name.startswith(line_prefix):
            base = anchor + line.timestamp_ns
            out += [(plane.event_metadata[e.metadata_id].name, base + e.offset_ps // 1000, base + e.offset_ps // 1000 + e.duration_ps // 1000)
                    for e in line.events]
    return out


def test_mi300_jax_iterations_are_its_jitted_calls(shared_dir, tmp_path):
    """The MI300 JAX trace has no step marker and no XLA Modules line; the host's ten calls of
    the jitted function (the outer of each nested pair of PjitFunction events) are its
    iterations, instead of ten equal 797 ms windows over a mostly idle capture."""
    path = shared_dir / TRACELENS / "mi300__jax_conv_minimal_legacy__chi-mi300x-013.ord.vultr.cpe.ice.amd.com.xplane.pb"
    raw = sorted((s, -e) for n, s, e in _raw_xplane_line(path, "/host:CPU", "python") if n == "PjitFunction(forward_3d_conv)")
    outer, reach = [], -1
    for s, neg_e in raw:
        if -neg_e > reach:
            outer.append(s)
            reach = -neg_e
    assert len(raw) == 20 and len(outer) == 10
    report = analyze(Run.open(import_traces([path], tmp_path / "r", progress=False)))
    assert report.steps.sort("start_ns")["start_ns"].to_list() == outer
    assert report.steps["name"].str.starts_with(ITERATION_NAME).all()
    assert any("jitted function forward_3d_conv" in n for n in report.notes)
    assert not any("equal windows" in n for n in report.notes)


def test_gpu_side_optimizer_annotations_give_the_iterations_of_a_training_trace_without_steps(shared_dir, tmp_path):
    """HTA's step_based trace has no ProfilerStep but repeats its optimizer annotations on the
    GPU: the GPU-side name with the most time gives the iterations, one per occurrence."""
    path = shared_dir / "traces/HolisticTraceAnalysis/tests/data/with_gpu_user_annotation/step_based_trace_2543932.json.gz"
    doc = json.load(gzip.open(path))
    gpu = [e for e in doc["traceEvents"] if e.get("cat") == "gpu_user_annotation"]
    total: dict[str, float] = {}
    for e in gpu:
        total[e["name"]] = total.get(e["name"], 0.0) + e["dur"]
    name = max(total, key=total.get)
    raw_us = sorted(e["ts"] for e in gpu if e["name"] == name)
    report = analyze(Run.open(import_traces([path], tmp_path / "r", progress=False)))
    starts = report.steps.sort("start_ns")["start_ns"].to_numpy()
    assert starts.size == len(raw_us) == 5
    assert np.allclose(np.diff(starts) / 1e3, np.diff(raw_us), atol=1.0)
    assert report.notes[0] == "no training steps in this trace" or "no training steps in this trace" in report.notes
    assert not any(n.startswith("inference trace") for n in report.notes), "it has a backward pass"
    assert any(f"'{name}'" in n and "GPU-side" in n for n in report.notes)


def test_an_inference_engine_is_named(shared_dir, tmp_path):
    path = shared_dir / TRACELENS / "inference__vllm_decode_full__graph_execution.json.gz"
    assert any(n.startswith("vllm/") for n in _raw_names(path) | {e.get("name", "") for e in json.load(gzip.open(path))["traceEvents"]})
    report = analyze(Run.open(import_traces([path], tmp_path / "r", progress=False)))
    assert any(n.startswith("inference trace (vLLM)") for n in report.notes)


@pytest.mark.parametrize("workers", ["0", "4"])
def test_an_old_training_trace_without_steps_is_cut_at_its_optimizer_steps(shared_dir, tmp_path, workers):
    """The autograd-API ResNet-50 traces (2021) mark no step and record `Optimizer.step#...`
    as an op: their iterations run from one optimizer step to the next, and each full
    iteration's busy time is the union of the raw kernel, memcpy and memset intervals in it
    (recomputed here from the JSON), instead of ten equal windows over a mostly idle capture."""
    path = shared_dir / f"traces/kineto/_history/0a1e4063/tb_plugin/samples/resnet50_autograd_api_num_workers_{workers}/worker0.pt.trace.json.gz"
    doc = json.load(gzip.open(path))
    raw = doc["traceEvents"] if isinstance(doc, dict) else doc
    opt_us = sorted(e["ts"] for e in raw if e.get("name", "").startswith("Optimizer.step#"))
    work = sorted((e["ts"], e["ts"] + e["dur"]) for e in raw if e.get("ph") == "X" and e.get("cat") in ("Kernel", "Memcpy", "Memset"))

    def busy_us(lo: float, hi: float) -> float:
        total, cur_s, cur_e = 0.0, None, None
        for s, e in ((max(s, lo), min(e, hi)) for s, e in work if e > lo and s < hi):
            if cur_e is None or s > cur_e:
                total += (cur_e - cur_s) if cur_e is not None else 0.0
                cur_s, cur_e = s, e
            else:
                cur_e = max(cur_e, e)
        return total + ((cur_e - cur_s) if cur_e is not None else 0.0)

    report = analyze(Run.open(import_traces([path], tmp_path / "r", progress=False)))
    steps = report.steps.sort("start_ns")
    assert steps.height == len(opt_us) == 6 and steps["name"].str.starts_with(ITERATION_NAME).all()
    assert np.allclose(np.diff(steps["start_ns"].to_numpy()) / 1e3, np.diff(opt_us), atol=1.0)
    expected = [busy_us(a, b) for a, b in zip(opt_us, opt_us[1:])]
    assert np.allclose(steps["busy_ns"].to_numpy()[:-1] / 1e3, expected, atol=2.0)


# -------------------------------------------------------------- what the steps are called
@pytest.mark.parametrize(
    ("source", "unit", "first_line"),
    [
        ("traces/kineto/tb_plugin/samples/resnet50_num_workers_0/worker0.1623143089861.pt.trace.json.gz", "steps", ": 6 steps, mean step "),
        ("traces/kineto/_history/0a1e4063/tb_plugin/samples/resnet50_autograd_api_num_workers_0/worker0.pt.trace.json.gz", "iterations", ": 6 iterations, mean iteration "),
        (f"{TRACELENS}/inference__sglang_decode__sglang_Qwen3-8B_decode.json.gz", "equal windows", f": {FALLBACK_WINDOWS} equal windows, mean window "),
    ],
)
def test_the_headline_json_and_advice_name_steps_iterations_and_equal_windows_as_such(shared_dir, tmp_path, source, unit, first_line):
    from rich.console import Console

    from accelscope.text import headline

    report = analyze(Run.open(import_traces([shared_dir / source], tmp_path / "r", progress=False)))
    assert report.step_unit == unit and report.to_dict()["step_unit"] == unit
    console = Console(width=200, record=True)
    console.print(headline(report)[0])
    assert first_line in console.export_text()
    word = {"steps": "step", "iterations": "iteration", "equal windows": "window"}[unit]
    assert report.advice and all(f"ms per {word}" in a.text for a in report.advice)
    if unit != "steps":
        assert not any("per step" in a.text or "of step time" in a.text for a in report.advice)
