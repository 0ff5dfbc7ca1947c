"""Where each step's time went, and why the accelerator sat idle: tables in, tables out.

For one rank's events:

* ``step_windows``: one row per step (from host ``step`` slices; else device steps or
  iterations, iterations.py; fixed windows when there are none);
* device busy time: the union of kernel, memcpy and memset slices (TPU ops are kernels),
  per device and per stream, never a sum of durations;
* ``gaps``: every idle interval of every device inside the steps, with a primary cause
  and the time per cause, from what the host did during the gap (see causes.py);
* a per-step breakdown whose categories sum to the step time.

CPU-only ranks (no device slices) are analysed on their compute thread(s) instead: the
host's own work plays the device's part. docs/analysis.md states every rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from accelscope.analysis import causes as C
from accelscope.analysis.busy import CLASS_CODE, COMM, COMPUTE, DEVICE_STEPS_SCHEMA, STREAM_STEPS_SCHEMA, busy_per_step, with_class
from accelscope.analysis.intervals import covered_within, gaps_within, subtract, union
from accelscope.analysis.iterations import stepless_windows
from accelscope.analysis.tables import partial_names
from accelscope.traces import schema as S

# Per-step categories, in priority order: each instant of a step counts once, for the
# first category active then (the former TensorBoard plugin's rule, extended).
KERNEL = "kernel"
RANK_WAIT = "rank_wait"  # inside a collective, waiting for the last rank to arrive (collectives.py)
COMMUNICATION = "communication"
MEMCPY = "memcpy"
MEMSET = "memset"
RUNTIME = "runtime"
INPUT_WAIT = "input_wait"
HOST_COMPUTE = "host_compute"
OTHER_IDLE = "other_idle"
BREAKDOWN = (KERNEL, RANK_WAIT, COMMUNICATION, MEMCPY, MEMSET, RUNTIME, INPUT_WAIT, HOST_COMPUTE, OTHER_IDLE)
DEVICE_CATEGORIES = (KERNEL, COMMUNICATION, MEMCPY, MEMSET)

FALLBACK_WINDOWS = 10
WARMUP_STEP = "ProfilerStep#0"  # warm-up (start-up, lazy initialisation) when a rank has at least MIN_STEPS_FOR_WARMUP steps
MIN_STEPS_FOR_WARMUP = 3
WINDOW_NAME = "window "  # how fallback windows are named ("window 0", ...): not steps
# What a run's steps are (``step_unit``), and one of them in words.
STEP_WORDS = {"steps": "step", "iterations": "iteration", "equal windows": "window"}


def step_unit(step_names: pl.Series) -> str:
    """What the analysed steps are, from their names: "equal windows" ("window N": nothing
    repeating was found, the capture cut into equal parts), "iterations" ("iteration N...":
    a trace without training steps, its own iterations, iterations.py) or "steps" (marked
    steps, host or device)."""
    from accelscope.analysis.iterations import ITERATION_NAME

    for prefix, unit in ((WINDOW_NAME, "equal windows"), (ITERATION_NAME, "iterations")):
        if step_names.len() and step_names.str.starts_with(prefix).all():
            return unit
    return "steps"
_STEP_NUMBER = r"#(\d+)$"


@dataclass
class RankResult:
    rank: int
    steps: pl.DataFrame
    gaps: pl.DataFrame
    device_steps: pl.DataFrame  # busy.DEVICE_STEPS_SCHEMA: per device and step (a CPU-only rank: its training thread)
    stream_steps: pl.DataFrame  # busy.STREAM_STEPS_SCHEMA
    has_device: bool
    device_slices: pl.DataFrame  # launches.DEVICE_COLUMNS, for matching launches
    runtime: pl.DataFrame  # launches.RUNTIME_COLUMNS
    kernel_names: pl.DataFrame  # tables.partial_names of the device slices
    op_names: pl.DataFrame  # tables.partial_names of the cpu_op slices
    host_names: pl.Series  # every distinct host slice name
    notes: list[str] = field(default_factory=list)
    # The breakdown's layers, for ``categories_within`` any window (stragglers.py).
    layers: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    @property
    def n_devices(self) -> int:
        return max(self.device_steps["device"].n_unique(), 1) if self.device_steps.height else 1


def _ends(df: pl.DataFrame) -> np.ndarray:
    return (df["start_ns"] + df["dur_ns"]).to_numpy()


def step_windows(events: pl.DataFrame) -> tuple[pl.DataFrame, list[str]]:
    """Host step slices of one rank as windows; without them, device steps, GPU-side step
    annotations or iterations from the device's rhythm (iterations.py); fixed windows over
    the trace when there are none of these."""
    notes: list[str] = []
    steps = events.filter((pl.col("kind") == S.STEP) & (pl.col("device") == "cpu")).sort("start_ns")
    if steps.height:
        number = steps["name"].str.extract(_STEP_NUMBER).cast(pl.Int64, strict=False)
        number = pl.Series(np.where(number.is_null().to_numpy(), np.arange(steps.height), number.fill_null(0).to_numpy()))
        starts = steps["start_ns"].to_numpy()
        ends = _ends(steps)
        # Overlapping step slices (a nested or duplicated marker) would count time twice.
        if steps.height > 1 and (starts[1:] < ends[:-1]).any():
            notes.append("some step slices overlap; each is analysed as recorded, so overlapping time counts in both")
        return pl.DataFrame({"step": number.cast(pl.Int64), "name": steps["name"], "start_ns": starts, "end_ns": ends}), notes
    found, notes = stepless_windows(events)
    if found is not None:
        return found, notes
    lo = int(events["start_ns"].min())
    hi = int(_ends(events).max())
    edges = np.linspace(lo, hi, FALLBACK_WINDOWS + 1).astype(np.int64)
    notes.append(f"no step markers, repeated annotation or device rhythm: analysed in {FALLBACK_WINDOWS} equal windows of "
                 f"{(hi - lo) / FALLBACK_WINDOWS / 1e6:.1f} ms, not steps, so every per-step figure is per window "
                 "(mark steps with prof.step() or ProfilerStep annotations)")
    return pl.DataFrame({"step": np.arange(FALLBACK_WINDOWS, dtype=np.int64), "name": [f"{WINDOW_NAME}{i}" for i in range(FALLBACK_WINDOWS)], "start_ns": edges[:-1], "end_ns": edges[1:]}), notes


def launch_threads(host: pl.DataFrame) -> pl.DataFrame:
    """Host threads (pid, tid) that drive the device: those that call the runtime, plus the
    training loop. ``host``: a rank's host slices (pid, tid, kind)."""
    drivers = host.filter(pl.col("kind").is_in([S.RUNTIME, S.STEP, S.INPUT_WAIT])).select("pid", "tid").unique()
    if drivers.height == 0:
        drivers = host.select("pid", "tid").unique()
    return drivers


def _intervals(df: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    return df["start_ns"].to_numpy(), _ends(df)


def _exclusive(layers: list[tuple[np.ndarray, np.ndarray]], win_s: np.ndarray, win_e: np.ndarray) -> list[np.ndarray]:
    """Per window, the time each layer covers that no earlier layer covers."""
    out = []
    acc_s = np.empty(0, dtype=np.int64)
    acc_e = np.empty(0, dtype=np.int64)
    prev = np.zeros(win_s.shape, dtype=np.int64)
    for s, e in layers:
        acc_s, acc_e = union(np.concatenate((acc_s, s)), np.concatenate((acc_e, e)))
        cov = covered_within(acc_s, acc_e, win_s, win_e, merged=True)
        out.append(cov - prev)
        prev = cov
    return out


def categories_within(layers: dict[str, tuple[np.ndarray, np.ndarray]], has_device: bool, win_s: np.ndarray, win_e: np.ndarray) -> dict[str, np.ndarray]:
    """Time per breakdown category in each window [win_s, win_e): each instant once, for
    the first category active then. With a device, its work comes first; on CPU-only
    ranks the training thread computes whenever it is not waiting (for input, another
    rank, a collective or a sync), since light-mode runs record no ops."""
    dur = np.asarray(win_e, dtype=np.int64) - np.asarray(win_s, dtype=np.int64)
    if has_device:
        order = [c for c in BREAKDOWN if c != OTHER_IDLE]
        excl = dict(zip(order, _exclusive([layers[c] for c in order], win_s, win_e)))
        excl[OTHER_IDLE] = dur - sum(excl.values())
        return excl
    order = [INPUT_WAIT, RANK_WAIT, OTHER_IDLE]
    excl = {c: np.zeros(dur.shape, dtype=np.int64) for c in BREAKDOWN}
    excl.update(zip(order, _exclusive([layers[c] for c in order], win_s, win_e)))
    excl[HOST_COMPUTE] = dur - sum(excl[c] for c in order)
    return excl


def analyze_rank(events: pl.DataFrame, rank: int, rank_wait: tuple[np.ndarray, np.ndarray] | None = None) -> RankResult:
    """Steps, gaps and busy time of one rank's events. ``rank_wait``: the intervals this
    rank spent in collectives waiting for the last rank to arrive (collectives.py)."""
    windows, notes = step_windows(events)
    win_s = windows["start_ns"].to_numpy()
    win_e = windows["end_ns"].to_numpy()
    dur = win_e - win_s

    device_ev = (
        events.lazy().filter(pl.col("kind").is_in(list(S.DEVICE_KINDS)) & (pl.col("device") != "cpu"))
        .select("rank", "device", "stream", "name", "kind", "correlation_id", "start_ns", "dur_ns").collect()
    )
    has_device = device_ev.height > 0
    device_ev = with_class(device_ev)
    # Only the columns the layers need, selected before filtering (a filter copies every column
    # it is given; a 10M-event trace has 4.7M host slices, filtered a dozen times).
    host = events.lazy().filter(pl.col("device") == "cpu").select("start_ns", "dur_ns", "kind", "name", "pid", "tid", "correlation_id").collect()
    drivers = launch_threads(host)
    runtime = (
        host.lazy().filter((pl.col("kind") == S.RUNTIME) & pl.col("correlation_id").is_not_null())
        .select(pl.lit(rank, dtype=pl.Int32).alias("rank"), "correlation_id", "start_ns", "dur_ns").collect()
        if has_device else None
    )
    # The name tables are over the steady steps (not the warm-up step, not outside any step).
    steady = windows.filter(~((pl.col("name") == WARMUP_STEP) & pl.lit(windows.height >= MIN_STEPS_FOR_WARMUP)))
    steady_s, steady_e = steady["start_ns"].to_numpy(), steady["end_ns"].to_numpy()
    op_names = partial_names(host.lazy().filter(pl.col("kind") == S.CPU_OP), steady_s, steady_e)
    host = C.classify_host(host.drop("correlation_id"))  # cause: a code (C.CODE)
    host_names = host["name"].unique()
    host = host.drop("name")
    on_drivers = host.join(drivers, on=["pid", "tid"], how="semi")
    code = C.CODE
    inputs = host.filter(pl.col("cause") == code[C.INPUT_WAIT])

    # -- per-step breakdown ------------------------------------------------------------------
    kernel = device_ev.filter(pl.col("cls") == CLASS_CODE[COMPUTE])
    communication = device_ev.filter(pl.col("cls") == CLASS_CODE[COMM])
    wait_s, wait_e = rank_wait if rank_wait is not None else (np.empty(0, np.int64), np.empty(0, np.int64))
    layers = {
        KERNEL: _intervals(kernel),
        RANK_WAIT: (wait_s, wait_e),
        COMMUNICATION: _intervals(communication),
        MEMCPY: _intervals(device_ev.filter(pl.col("kind") == S.MEMCPY)),
        MEMSET: _intervals(device_ev.filter(pl.col("kind") == S.MEMSET)),
        RUNTIME: _intervals(on_drivers.filter(pl.col("kind") == S.RUNTIME)),
        INPUT_WAIT: _intervals(inputs),
        HOST_COMPUTE: _intervals(on_drivers.filter(pl.col("cause") != code[C.INPUT_WAIT])),
        # CPU-only ranks: the training thread's waits on collectives and syncs.
        OTHER_IDLE: _intervals(on_drivers.filter(pl.col("cause").is_in([code[C.COLLECTIVE], code[C.SYNC]]))),
    }
    excl = categories_within(layers, has_device, win_s, win_e)
    busy = sum(excl[c] for c in DEVICE_CATEGORIES) if has_device else excl[HOST_COMPUTE]
    steps = windows.with_columns(
        pl.Series("rank", np.full(windows.height, rank, dtype=np.int32)),
        pl.Series("dur_ns", dur),
        *[pl.Series(f"{c}_ns", excl[c].astype(np.int64)) for c in BREAKDOWN],
        pl.Series("busy_ns", busy.astype(np.int64)),
    )

    # -- busy per device and per stream, step by step ------------------------------------------
    if has_device:
        device_steps, stream_steps, busy_unions = busy_per_step(device_ev, rank, windows["step"].to_numpy(), win_s, win_e)
    else:  # the training thread: busy whenever it is not waiting
        device_steps = pl.DataFrame(
            {"rank": np.full(windows.height, rank, dtype=np.int32), "device": ["cpu"] * windows.height, "step": windows["step"], "busy_ns": busy.astype(np.int64)}
        ).with_columns([pl.lit(0, dtype=pl.Int64).alias(c) for c in DEVICE_STEPS_SCHEMA if c not in ("rank", "device", "step", "busy_ns")]).select(list(DEVICE_STEPS_SCHEMA)).cast(DEVICE_STEPS_SCHEMA)  # type: ignore[arg-type]
        stream_steps = pl.DataFrame(schema=STREAM_STEPS_SCHEMA)
        notes.append("no device activity recorded: analysed the training thread instead (busy whenever it is not waiting for input, a collective or a sync)")

    # -- idle gaps and their causes ------------------------------------------------------------
    # One layer per host cause in the table's priority order; the remainder is what is left.
    cause_layers = [
        (wait_s, wait_e) if c.cross_rank else _intervals((host if c.any_thread else on_drivers).filter(pl.col("cause") == code[c.name]))
        for c in C.HOST_CAUSES
    ]
    if has_device:
        # A collective waiting for the last rank keeps the device occupied but not working.
        idle_targets = list(busy_unions.items())
        if wait_s.size:
            ks, ke = (np.concatenate(x) for x in zip(layers[KERNEL], layers[MEMCPY], layers[MEMSET]))
            only_s, only_e = subtract(wait_s, wait_e, ks, ke)
            idle_targets = [(d, subtract(bs, be, only_s, only_e)) for d, (bs, be) in idle_targets]
            # ... so busy time per device leaves it out too (its occupancy is the comm class).
            busy_by_device = pl.concat([
                pl.DataFrame({"device": [d] * win_s.size, "step": windows["step"], "_busy": covered_within(bs, be, win_s, win_e, merged=True)})
                for d, (bs, be) in idle_targets
            ])
            device_steps = device_steps.join(busy_by_device, on=["device", "step"], how="left").with_columns(
                busy_ns=pl.coalesce("_busy", "busy_ns")).drop("_busy")
    else:
        # Idle = waiting: the busy time is everything else in the steps.
        ws, we = (np.concatenate(x) for x in zip(layers[INPUT_WAIT], layers[RANK_WAIT], layers[OTHER_IDLE]))
        busy_s, busy_e, _ = gaps_within(ws, we, win_s, win_e)
        idle_targets = [("cpu", (busy_s, busy_e))]
    gap_frames = []
    for device, (bs, be) in idle_targets:
        gs, ge, step_idx = gaps_within(bs, be, win_s, win_e, merged=True)
        if gs.size == 0:
            continue
        per_cause = _exclusive(cause_layers, gs, ge)
        by_cause = np.vstack(per_cause + [(ge - gs) - sum(per_cause)])
        primary = np.asarray(C.CAUSES)[np.argmax(by_cause, axis=0)]
        gap_frames.append(
            pl.DataFrame(
                {
                    "rank": np.full(gs.size, rank, dtype=np.int32),
                    "device": [device] * gs.size,
                    "step": windows["step"].to_numpy()[step_idx],
                    "start_ns": gs,
                    "end_ns": ge,
                    "dur_ns": ge - gs,
                    "cause": primary,
                    **{f"{c}_ns": by_cause[i].astype(np.int64) for i, c in enumerate(C.CAUSES)},
                }
            )
        )
    gaps = pl.concat(gap_frames) if gap_frames else empty_gaps()

    if runtime is None:
        runtime = device_ev.clear().select("rank", "correlation_id", "start_ns", "dur_ns")
    kernel_names = partial_names(device_ev.lazy(), steady_s, steady_e)
    return RankResult(rank, steps, gaps, device_steps, stream_steps, has_device, device_ev, runtime, kernel_names, op_names, host_names, notes, layers)


def empty_gaps() -> pl.DataFrame:
    schema = {"rank": pl.Int32, "device": pl.String, "step": pl.Int64, "start_ns": pl.Int64, "end_ns": pl.Int64, "dur_ns": pl.Int64, "cause": pl.String}
    schema.update({f"{c}_ns": pl.Int64 for c in C.CAUSES})
    return pl.DataFrame(schema=schema)
