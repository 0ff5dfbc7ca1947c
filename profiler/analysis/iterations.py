"""Steps for a rank that has no host step markers, in order of preference:

1. ``step`` slices on a device (an XPlane device's ``Steps`` line): those of the first
   device that has them (every device repeats the same steps);
2. GPU-side ``ProfilerStep#N`` annotations (Kineto's user annotation of each step on the
   device's timeline), of the first device that has them;
3. iterations from the device's rhythm: bursts of device work separated by idle periods
   much longer than the gaps inside the bursts (``rhythm_windows``), named "iteration N";

and only then (breakdown.py) equal windows. Each source says where its steps came from in a
note; traces without host or device steps also get "no training steps in this trace", and
"inference trace" when no backward pass or optimizer op was recorded.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from accelscope.analysis.intervals import union
from accelscope.traces import schema as S

ITERATION_NAME = "iteration "  # how rhythm iterations are named ("iteration 0", ...)
GPU_STEP_NAME = r"^ProfilerStep#\d+$"
# A gap between iterations is at least RHYTHM_RATIO times the longest gap inside a burst
# ("much longer than the gaps inside bursts") and at least MIN_ITERATION_GAP_NS (the host's
# turnaround between iterations; shorter gaps are a stream's own hiccups, as between the
# kernels of one CUDA graph replay), and every burst holds at least MIN_BURST_SLICES busy
# intervals (else the split is around stray kernels, not iterations).
RHYTHM_RATIO = 10.0
MIN_ITERATION_GAP_NS = 50_000
MIN_BURST_SLICES = 3
MIN_ITERATIONS = 2
# Names of host ops that only training runs: the backward pass and the optimizer.
TRAINING_OPS = r"(?i)backward|autograd::engine|optimizer|zero_grad|\badam|\bsgd\b|apply_gradients|jvp\(|transpose\(jvp"

_STEP_NUMBER = r"#(\d+)$"


def _frame(names: list[str] | pl.Series, steps: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> pl.DataFrame:
    return pl.DataFrame({"step": np.asarray(steps, dtype=np.int64), "name": names,
                         "start_ns": np.asarray(starts, dtype=np.int64), "end_ns": np.asarray(ends, dtype=np.int64)})


def _first_device(slices: pl.DataFrame) -> pl.DataFrame:
    """The slices of the first device (by name) that has any, sorted, duplicates dropped."""
    first = slices["device"].unique().sort()[0]
    return slices.filter(pl.col("device") == first).unique(["start_ns", "dur_ns"]).sort("start_ns")


def _numbered(slices: pl.DataFrame) -> pl.DataFrame:
    number = slices["name"].str.extract(_STEP_NUMBER).cast(pl.Int64, strict=False).to_numpy()
    number = np.where(np.isnan(number.astype(float)), np.arange(slices.height), np.nan_to_num(number.astype(float))).astype(np.int64)
    starts = slices["start_ns"].to_numpy()
    return _frame(slices["name"], number, starts, starts + slices["dur_ns"].to_numpy())


def device_step_windows(events: pl.DataFrame) -> tuple[pl.DataFrame, str] | None:
    """Windows from ``step`` slices on a device, with where they came from; None when there are none."""
    steps = events.filter((pl.col("kind") == S.STEP) & (pl.col("device") != "cpu")).select("device", "name", "start_ns", "dur_ns")
    if steps.height == 0:
        return None
    steps = _first_device(steps)
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
    n = win_s.size
    return _frame([f"{ITERATION_NAME}{i}" for i in range(n)], np.arange(n), win_s, win_e)


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
    """What to say about a rank with neither host nor device step markers."""
    notes = ["no training steps in this trace"]
    ops = events.filter(pl.col("device") == "cpu").select("name").unique()
    if ops.height and not ops["name"].str.contains(TRAINING_OPS).any():
        notes.append("inference trace: no backward pass or optimizer op recorded")
    return notes


def stepless_windows(events: pl.DataFrame) -> tuple[pl.DataFrame | None, list[str]]:
    """Windows for a rank without host steps: device steps, else GPU-side ProfilerStep
    annotations, else the device's rhythm; with their notes. None: equal windows it is."""
    found = device_step_windows(events)
    if found is not None:
        return found[0], [found[1]]
    notes = no_step_notes(events)
    for finder in (gpu_step_windows, device_rhythm_windows):
        found = finder(events)
        if found is not None:
            return found[0], [*notes, found[1]]
    return None, notes
