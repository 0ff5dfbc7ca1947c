"""Steps for a rank that has no host step markers, in order of preference:

1. ``step`` slices on a device (an XPlane device's ``Steps`` line): those of the first
   device that has them (every device repeats the same steps). These are real steps.

Otherwise the trace has no training steps (the first note says so, then "inference trace"
when no backward pass or optimizer op was recorded, naming the inference engine whose code
shows in the names), and:

2. GPU-side ``ProfilerStep#N`` annotations (Kineto's user annotation of each step on the
   device's timeline), of the first device that has them;
3. a top-level user annotation that repeats (GPU-side first, then host-side; PyTorch's
   ``Optimizer.step#...`` too): one iteration from each occurrence's start to the next's
   (``annotation_windows``);
4. iterations from the device's rhythm: on XLA devices the runs of the device's main XLA
   module (the XPlane reader marks them as device ``step`` slices named "iteration N:
   module"; ``module_windows``), else the host's calls of the main jitted function (JAX's
   ``PjitFunction(f)``; ``jit_call_windows``), else bursts of device work separated by
   idle periods much longer than the gaps inside the bursts (``rhythm_windows``);

and only then (breakdown.py) equal windows. Iterations (3, 4) are named "iteration N": real
iterations, unlike the equal "window N" (advice.py withholds projections on those).
docs/analysis.md ("Checked against XProf") states the rules and what each shared trace gets.
"""

from __future__ import annotations

import re

import numpy as np
import polars as pl

from accelscope.analysis.intervals import covered_within, union
from accelscope.traces import schema as S
from accelscope.traces.xplane import ITERATION_NAME  # "iteration ": the XPlane reader names module runs so too

GPU_STEP_NAME = r"^ProfilerStep#\d+$"
NO_TRAINING_STEPS = "no training steps in this trace"
# A gap between iterations is at least RHYTHM_RATIO times the longest gap inside a burst
# ("much longer than the gaps inside bursts") and at least MIN_ITERATION_GAP_NS (the host's
# turnaround between iterations; shorter gaps are a stream's own hiccups, as between the
# kernels of one CUDA graph replay), and every burst holds at least MIN_BURST_SLICES busy
# intervals (else the split is around stray kernels, not iterations).
RHYTHM_RATIO = 10.0
MIN_ITERATION_GAP_NS = 50_000
MIN_BURST_SLICES = 3
MIN_ITERATIONS = 2
# Iterations from a repeated annotation must hold at least this share of the device's work
# (of the host's activity without a device): a name repeated in a corner is no rhythm.
MIN_COVERAGE = 0.5
# Names of ops that only training runs: the backward pass and the optimizer (host ops,
# JAX's transposed jvp on the device).
TRAINING_OPS = r"autograd::engine|Backward\d*\b|\.backward\b|: backward$|Optimizer\.(step|zero_grad)|zero_grad|optim/\w+\.py|ResourceApply|apply_gradients|[a-z0-9]Grad\b|Backprop(Input|Filter)|transpose\(jvp\(|\bjvp\("
# Inference engines, recognisable by their code's paths in Python-tracer or annotation names.
INFERENCE_ENGINES = {"vLLM": r"(?i)\bvllm[/.]", "SGLang": r"(?i)\bsglang[/.]", "TensorRT-LLM": r"(?i)\btensorrt_llm[/.]",
                     "Hugging Face generate": r"generation/utils\.py\(\d+\): generate$"}

# PyTorch's record_function around each optimizer.step(): once per training iteration.
OPTIMIZER_STEP = "Optimizer.step#"
# JAX's dispatch of a jitted function on the host, one per call (nested twice per call).
JIT_CALL = r"^PjitFunction\((.+)\)$"

_STEP_NUMBER = r"#(\d+)$"


def _frame(names: list[str] | pl.Series, steps: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> pl.DataFrame:
    return pl.DataFrame({"step": np.asarray(steps, dtype=np.int64), "name": names,
                         "start_ns": np.asarray(starts, dtype=np.int64), "end_ns": np.asarray(ends, dtype=np.int64)})


def _iterations(starts: np.ndarray, ends: np.ndarray) -> pl.DataFrame:
    n = starts.size
    return _frame([f"{ITERATION_NAME}{i}" for i in range(n)], np.arange(n), starts, ends)


def _first_device(slices: pl.DataFrame) -> pl.DataFrame:
    """The slices of the first device (by name) that has any, sorted, duplicates dropped."""
    first = slices["device"].unique().sort()[0]
    return slices.filter(pl.col("device") == first).unique(["start_ns", "dur_ns"]).sort("start_ns")


def _numbered(slices: pl.DataFrame) -> pl.DataFrame:
    number = slices["name"].str.extract(_STEP_NUMBER).cast(pl.Int64, strict=False).to_numpy()
    number = np.where(np.isnan(number.astype(float)), np.arange(slices.height), np.nan_to_num(number.astype(float))).astype(np.int64)
    starts = slices["start_ns"].to_numpy()
    return _frame(slices["name"], number, starts, starts + slices["dur_ns"].to_numpy())


def _work(events: pl.DataFrame, device: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Union of the device work (of ``device``, else of every device); of the host's slices
    when the rank has no device work."""
    on_device = pl.col("kind").is_in(list(S.DEVICE_KINDS)) & (pl.col("device") != "cpu")
    work = events.filter(on_device & (pl.col("device") == device) if device else on_device).select("start_ns", "dur_ns")
    if work.height == 0:
        work = events.filter((pl.col("device") == "cpu") & (pl.col("kind") != S.ANNOTATION)).select("start_ns", "dur_ns")
    s = work["start_ns"].to_numpy()
    return union(s, s + work["dur_ns"].to_numpy())


def periodic_windows(starts: np.ndarray, ends: np.ndarray, work_end_ns: int) -> tuple[np.ndarray, np.ndarray]:
    """Iterations from occurrences of one marker [starts, ends) (sorted by start): each from
    its start to the next one's, so the idle time between belongs to an iteration as in a
    step; the last to the end of the work after it (``work_end_ns``), at most as long as
    the longest earlier iteration, and at least to its own end."""
    s = np.asarray(starts, dtype=np.int64)
    e = np.asarray(ends, dtype=np.int64)
    win_e = np.empty_like(s)
    win_e[:-1] = s[1:]
    longest = int(np.diff(s).max()) if s.size > 1 else int(e[-1] - s[-1])
    win_e[-1] = max(int(e[-1]), min(int(s[-1]) + longest, int(work_end_ns)), int(s[-1]) + 1)  # never empty
    return s, win_e


def device_step_windows(events: pl.DataFrame) -> tuple[pl.DataFrame, str] | None:
    """Windows from ``step`` slices on a device, with where they came from; None when there are none."""
    steps = events.filter((pl.col("kind") == S.STEP) & (pl.col("device") != "cpu") & ~pl.col("name").str.starts_with(ITERATION_NAME))
    if steps.height == 0:
        return None
    steps = _first_device(steps.select("device", "name", "start_ns", "dur_ns"))
    return _numbered(steps), (f"no host step markers: steps are {steps['device'][0]}'s device-side steps "
                              "(the run's step_source says where they came from)")


def gpu_step_windows(events: pl.DataFrame) -> tuple[pl.DataFrame, str] | None:
    """Windows from GPU-side ``ProfilerStep#N`` annotations; None when there are none."""
    steps = events.filter((pl.col("kind") == S.ANNOTATION) & (pl.col("device") != "cpu") & pl.col("name").str.contains(GPU_STEP_NAME)).select(
        "device", "name", "start_ns", "dur_ns")
    if steps.height == 0:
        return None
    steps = _first_device(steps)
    return _numbered(steps), f"steps from the GPU-side ProfilerStep annotations on {steps['device'][0]}"


def top_level(slices: pl.DataFrame, lane: list[str]) -> pl.DataFrame:
    """The slices that no other slice of their lane contains (sorted by lane and start)."""
    ordered = slices.with_columns(end_ns=pl.col("start_ns") + pl.col("dur_ns")).sort([*lane, "start_ns", "dur_ns"], descending=[*([False] * len(lane)), False, True])
    reach = pl.col("end_ns").cum_max().shift(1).over(lane)
    return ordered.filter(reach.is_null() | (pl.col("end_ns") > reach)).drop("end_ns")


def _one_loop(occ: pl.DataFrame) -> tuple[np.ndarray, np.ndarray] | None:
    """Starts and ends of one marker's occurrences (duplicates dropped, in time order), or
    None when there are too few or they overlap: occurrences on several threads at once are
    requests served concurrently, not the iterations of one loop."""
    occ = occ.unique("start_ns").sort("start_ns")
    s = occ["start_ns"].to_numpy()
    e = s + occ["dur_ns"].to_numpy()
    if s.size < MIN_ITERATIONS or (s[1:] < np.maximum.accumulate(e)[:-1]).any():
        return None
    return s, e


def annotation_windows(events: pl.DataFrame) -> tuple[pl.DataFrame, str] | None:
    """Iterations from the top-level user annotation that repeats and covers the most time,
    GPU-side (per device) before host-side (per thread): each from one occurrence's start to
    the next's. A GPU-side user annotation is the device's copy of a host one (Kineto's
    ``gpu_user_annotation`` of a ``record_function``), so only device annotations whose
    name the host also recorded count: an XPlane's device lines (XLA ops, async copies)
    are the device's own record, not user annotations. None when no repeated name holds
    at least MIN_COVERAGE of the work."""
    # PyTorch's optimizer step is a user annotation too, though older Kineto traces record it as an op.
    optimizer = (pl.col("kind") == S.CPU_OP) & (pl.col("device") == "cpu") & pl.col("name").str.starts_with(OPTIMIZER_STEP)
    ann = events.filter(((pl.col("kind") == S.ANNOTATION) | optimizer) & ~pl.col("name").str.contains(GPU_STEP_NAME))
    host_names = ann.filter(pl.col("device") == "cpu")["name"].unique()
    ann = ann.filter((pl.col("device") == "cpu") | pl.col("name").is_in(host_names.implode()))
    if ann.height < MIN_ITERATIONS:
        return None
    ann = ann.select("device", pl.col("pid").fill_null(-1), pl.col("tid").fill_null(-1), "name", "start_ns", "dur_ns").with_columns(
        pid=pl.when(pl.col("device") == "cpu").then("pid").otherwise(-1), tid=pl.when(pl.col("device") == "cpu").then("tid").otherwise(-1))
    tops = top_level(ann, ["device", "pid", "tid"])
    cands = (tops.group_by(["device", "name"]).agg(n=pl.len(), total_ns=pl.col("dur_ns").sum(), first_ns=pl.col("start_ns").min())
             .filter(pl.col("n") >= MIN_ITERATIONS)
             .sort([pl.col("device") == "cpu", "total_ns", "first_ns", "name"], descending=[False, True, False, False]))
    for device, name, *_ in cands.head(8).iter_rows():  # a handful of names, not events
        loop = _one_loop(tops.filter((pl.col("device") == device) & (pl.col("name") == name)))
        if loop is None:
            continue
        s, e = loop
        ws, we = _work(events, None if device == "cpu" else device)
        if ws.size == 0:
            continue
        win_s, win_e = periodic_windows(s, e, int(we[-1]))
        if covered_within(ws, we, win_s, win_e, merged=True).sum() < MIN_COVERAGE * (we - ws).sum():
            continue
        where = f"GPU-side on {device}" if device != "cpu" else "host-side"
        return _iterations(win_s, win_e), (f"steps are {s.size} iterations, each from one {name!r} annotation ({where}, "
                                           "a top-level user annotation that repeats) to the next, not marked steps")
    return None


def module_windows(events: pl.DataFrame) -> tuple[pl.DataFrame, str] | None:
    """Iterations from the runs of a device's main XLA module, which the XPlane reader marks
    as device ``step`` slices named "iteration N" (traces/xplane.py, step source d): each
    run to the next, so the host's turnaround between runs belongs to an iteration. None
    without them."""
    runs = events.filter((pl.col("kind") == S.STEP) & (pl.col("device") != "cpu") & pl.col("name").str.starts_with(ITERATION_NAME))
    if runs.height == 0:
        return None
    runs = _first_device(runs.select("device", "name", "start_ns", "dur_ns"))
    device = runs["device"][0]
    module = runs["name"][0].partition(": ")[2] or "its main XLA module"
    s = runs["start_ns"].to_numpy()
    _, we = _work(events, device)
    win_s, win_e = periodic_windows(s, s + runs["dur_ns"].to_numpy(), int(we[-1]) if we.size else int(s[-1]))
    # Named as the reader named them ("iteration N: module").
    return _frame(runs["name"], np.arange(s.size), win_s, win_e), (f"steps are {s.size} iterations: the runs of XLA module {module} on {device} "
                                       "(the device's rhythm), each from one run's start to the next's; not marked steps")


def jit_call_windows(events: pl.DataFrame) -> tuple[pl.DataFrame, str] | None:
    """Iterations from the host's calls of the main jitted function (``PjitFunction(f)``,
    the outermost per call; the function with the most host time among those called at
    least MIN_ITERATIONS times, its calls one after another): each call to the next, as
    XLA module runs are when the device records none. None without them."""
    calls = events.filter((pl.col("device") == "cpu") & (pl.col("kind") == S.CPU_OP) & pl.col("name").str.contains(JIT_CALL))
    if calls.height < MIN_ITERATIONS:
        return None
    tops = top_level(calls.select("pid", "tid", "name", "start_ns", "dur_ns"), ["pid", "tid"])
    best = (tops.group_by("name").agg(n=pl.len(), total_ns=pl.col("dur_ns").sum()).filter(pl.col("n") >= MIN_ITERATIONS)
            .sort(["total_ns", "name"], descending=True))
    if best.height == 0:
        return None
    name = best["name"][0]
    loop = _one_loop(tops.filter(pl.col("name") == name))
    if loop is None:
        return None
    s, e = loop
    _, we = _work(events)
    win_s, win_e = periodic_windows(s, e, int(we[-1]) if we.size else int(e[-1]))
    function = re.match(JIT_CALL, name).group(1)  # type: ignore[union-attr]
    return _iterations(win_s, win_e), (f"steps are {s.size} iterations: the host's calls of jitted function {function} "
                                       "(JAX PjitFunction), each from one call's start to the next's; not marked steps")


def rhythm_windows(starts: np.ndarray, ends: np.ndarray) -> pl.DataFrame | None:
    """Iterations from one device's work intervals [starts, ends): bursts separated by idle
    gaps at least RHYTHM_RATIO times longer than every gap inside a burst (the largest
    relative jump in the sorted gap lengths) and MIN_ITERATION_GAP_NS long, each burst at
    least MIN_BURST_SLICES busy intervals. Iteration i runs from its burst's first work to
    the next burst's (the idle after a burst belongs to its iteration, as in a step); the
    last ends with its work. None when no such rhythm (fewer than MIN_ITERATIONS bursts)."""
    if starts.size < 2:
        return None
    us, ue = union(np.asarray(starts, dtype=np.int64), np.asarray(ends, dtype=np.int64))
    if us.size < MIN_ITERATIONS:
        return None
    gaps = us[1:] - ue[:-1]
    order = np.sort(gaps)
    # The largest relative jump between consecutive gap lengths (up to a gap long enough to
    # be between iterations) separates the gaps inside bursts from the gaps between them.
    ratio = order[1:] / np.maximum(order[:-1], 1).astype(np.float64)
    ratio[order[1:] < MIN_ITERATION_GAP_NS] = 0.0
    if ratio.size == 0 or ratio.max() < RHYTHM_RATIO:
        return None
    threshold = order[int(np.argmax(ratio)) + 1]
    cut = np.flatnonzero(gaps >= threshold)  # burst boundaries: after interval cut[i]
    first = np.concatenate(([0], cut + 1))
    sizes = np.diff(np.concatenate((first, [us.size])))
    if first.size < MIN_ITERATIONS or sizes.min() < MIN_BURST_SLICES:
        return None
    win_s = us[first]
    win_e = np.concatenate((win_s[1:], [ue[-1]]))
    return _iterations(win_s, win_e)


def device_rhythm_windows(events: pl.DataFrame) -> tuple[pl.DataFrame, str] | None:
    """Iterations from the rhythm of one rank's busiest device (devices driven together share
    it; a union over devices would blur it); None when none shows."""
    work = events.filter(pl.col("kind").is_in(list(S.DEVICE_KINDS)) & (pl.col("device") != "cpu")).select("device", "start_ns", "dur_ns")
    if work.height < 2:
        return None
    busiest = work.group_by("device").agg(pl.col("dur_ns").sum()).sort(["dur_ns", "device"], descending=[True, False])["device"][0]
    work = work.filter(pl.col("device") == busiest)
    s = work["start_ns"].to_numpy()
    found = rhythm_windows(s, s + work["dur_ns"].to_numpy())
    if found is None:
        return None
    return found, (f"steps are {found.height} iterations found from {busiest}'s rhythm (bursts of device work "
                   "separated by idle periods much longer than the gaps inside them), not marked steps")


def no_step_notes(events: pl.DataFrame) -> list[str]:
    """What to say about a rank with neither host nor device step markers: that, and whether
    it is an inference trace (no backward pass or optimizer op anywhere; the engine named
    when its code shows), so that its iterations are read as iterations, not training steps."""
    notes = [NO_TRAINING_STEPS]
    names = events.select(pl.col("name").unique())["name"]
    if names.len() == 0 or names.str.contains(TRAINING_OPS).any():
        return notes
    engines = [engine for engine, pattern in INFERENCE_ENGINES.items() if names.str.contains(pattern).any()]
    if engines:
        notes.append(f"inference trace ({', '.join(engines)}): its iterations are requests or decode steps, not training steps")
    else:
        notes.append("inference trace: no backward pass or optimizer op recorded, so its iterations are not training steps")
    return notes


def stepless_windows(events: pl.DataFrame) -> tuple[pl.DataFrame | None, list[str]]:
    """Windows for a rank without host steps: device steps, else GPU-side ProfilerStep
    annotations, a repeated top-level annotation, XLA module runs, jitted calls or the
    device's rhythm;
    with their notes. None: equal windows it is."""
    found = device_step_windows(events)
    if found is not None:
        return found[0], [found[1]]
    notes = no_step_notes(events)
    for finder in (gpu_step_windows, annotation_windows, module_windows, jit_call_windows, device_rhythm_windows):
        found = finder(events)
        if found is not None:
            return found[0], [*notes, found[1]]
    return None, notes
