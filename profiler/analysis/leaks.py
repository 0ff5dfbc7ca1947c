"""Memory leaks: a device whose allocated memory grows step over step, by how much per step,
and the op that allocates what is never freed.

Tables in, a table out (columnar: as-of joins, window expressions, group-bys, and for leaking
devices only one inequality join):

* **Growth**: per (rank, device), the level of memory at the end of each analysed step
  (``levels``: the allocated timeline, ``memory.allocated``; on torch's CPU allocator, what
  the step's window allocated and still holds, ``held_in_window``). Its least-squares slope
  against the step number, within runs of consecutive steps (``fit``), is ``bytes_per_step``.
  A leak when the slope is material (``verdicts.LEAK_MIN_BYTES_PER_STEP`` or
  ``LEAK_MIN_PEAK_SHARE`` of the device's peak per step, whichever is smaller), and at
  least ``LEAK_GROWING_SHARE`` of the changes between consecutive steps grow (by at least
  ``LEAK_GROWING_PART`` of the slope), of at least ``LEAK_MIN_CHANGES``.
* **The op**: allocations (positive ``bytes`` with an address) made in the analysed steps and
  never freed within the trace (no later event at the same address on that device: a free,
  or the address handed out again, which means it was freed; the blocks of
  ``memory_live.lifetimes`` without a free), each attributed to the
  innermost host op (``cpu_op``) on the allocating thread holding it that is not one of
  torch's allocation primitives (``ALLOCATION_OPS``: the innermost op is usually
  ``aten::empty`` inside the op that wanted the memory), else to the innermost. The op with
  the most never-freed bytes is the leak's op. Traces without addresses (2021) name none.
"""

from __future__ import annotations

import polars as pl

from accelscope.analysis.memory import GROUP, allocated
from accelscope.analysis.memory_live import lifetimes
from accelscope.analysis.memory_ops import innermost, pairs_of
from accelscope.verdicts import LEAK_GROWING_PART, LEAK_GROWING_SHARE, LEAK_MIN_BYTES_PER_STEP, LEAK_MIN_CHANGES, LEAK_MIN_PEAK_SHARE

# torch's pure allocation ops: they allocate for the op that called them.
ALLOCATION_OPS = ("aten::empty", "aten::empty_strided", "aten::empty_like", "aten::resize_")

# Report.memory_leaks: one row per leaking (rank, device).
LEAKS_SCHEMA = {
    "rank": pl.Int32,
    "device": pl.String,
    "bytes_per_step": pl.Int64,  # the least-squares slope of allocated memory at the steps' ends
    "steps": pl.Int64,  # analysed steps the slope is fitted over (each window's first left out)
    "growing_share": pl.Float64,  # of the changes between consecutive steps, the share that grew (by half the slope or more)
    "op": pl.String,  # the host op holding the most never-freed bytes; null: none found (no addresses)
    "op_never_freed_bytes": pl.Int64,  # what it allocated in the analysed steps and never freed
}
# Per (rank, device) with allocator events: the fit, leak or not (``fit``); ``changes``: the
# step-to-step changes between consecutive steps (null fit without any).
FIT_SCHEMA = {"rank": pl.Int32, "device": pl.String, "bytes_per_step": pl.Int64, "steps": pl.Int64, "changes": pl.UInt32,
              "growing_share": pl.Float64, "peak_allocated_bytes": pl.Int64, "leak": pl.Boolean}


def empty() -> pl.DataFrame:
    """Report.memory_leaks of a run without leaks."""
    return pl.DataFrame(schema=LEAKS_SCHEMA)


def _spans(steps: pl.DataFrame) -> pl.DataFrame:
    return steps.select(pl.col("rank").cast(pl.Int32), pl.col("step").cast(pl.Int64), pl.col("start_ns").cast(pl.Int64),
                        end_ns=(pl.col("start_ns") + pl.col("dur_ns")).cast(pl.Int64))


def _windows(steps: pl.DataFrame) -> pl.DataFrame:
    """The steps' spans with ``_w``, the run of consecutive steps (a profiler window) each is
    in, per rank, and ``_first``: the run's first step."""
    spans = _spans(steps).sort("rank", "step").with_columns(_first=(pl.col("step").diff() != 1).fill_null(True).over("rank"))
    return spans.with_columns(_w=pl.col("_first").cast(pl.Int64).cum_sum().over("rank"))


def at_step_ends(memory: pl.DataFrame, steps: pl.DataFrame) -> pl.DataFrame:
    """Per (rank, device, step) of ``steps``: ``allocated_bytes`` after the device's last
    allocator event at or before the step's end (steps before its first event left out)."""
    timeline = (
        allocated(memory)
        .select(pl.col("rank").cast(pl.Int32), "device", "time_ns", "allocated_bytes")
        .group_by([*GROUP, "time_ns"], maintain_order=True)
        .last()  # the value after the last of the events at one instant (file order)
        .sort("time_ns")
    )
    ends = _spans(steps).join(timeline.select(GROUP).unique(), on="rank").sort("end_ns")
    out = ends.join_asof(timeline, left_on="end_ns", right_on="time_ns", by=GROUP, strategy="backward", check_sortedness=False)
    return out.filter(pl.col("allocated_bytes").is_not_null()).select(*GROUP, "step", "allocated_bytes").sort([*GROUP, "step"])


def held_in_window(memory: pl.DataFrame, steps: pl.DataFrame) -> pl.DataFrame:
    """Per (rank, device, step) of ``steps``, for the CPU allocator where its events all carry
    an address: ``held_bytes``, what was allocated in the step's window (its run of
    consecutive steps) up to the step's end and not freed by then. A free counts when the
    event before it at its address is an allocation in the same window.

    Why not torch's recorded total there: the CPU allocator counts only blocks allocated while
    memory profiling was on, so the frees of others go uncounted, and a block allocated in one
    window and freed between windows stays counted, its stale size taken off when another
    block at that address is freed later: the total drifts and jumps by whole blocks. The
    CUDA caching allocator reports its own exact totals, which ``at_step_ends`` reads."""
    memory = memory.with_columns(pl.col("rank").cast(pl.Int32))
    devices = (memory.filter(pl.col("device") == "cpu").group_by(GROUP).agg(pl.col("addr").is_not_null().all().alias("_ok"))
               .filter("_ok").select(GROUP))
    windows = _windows(steps)
    grid = windows.join(devices, on="rank").select(*GROUP, "step", "_w", "_first")
    if grid.height == 0:
        return grid.with_columns(held_bytes=pl.lit(0, pl.Int64))
    ev = (
        memory.join(devices, on=GROUP, how="semi")
        .sort("time_ns", maintain_order=True)
        .join_asof(windows.select("rank", "step", "start_ns", "end_ns", "_w").sort("start_ns"), left_on="time_ns", right_on="start_ns",
                   by="rank", strategy="backward", check_sortedness=False)
        .filter(pl.col("time_ns") < pl.col("end_ns"))
        .sort([*GROUP, "addr", "time_ns"], maintain_order=True)
    )
    block = [*GROUP, "addr"]
    before_bytes, before_w = pl.col("bytes").shift(1).over(block), pl.col("_w").shift(1).over(block)
    counted = pl.when(pl.col("bytes") > 0).then("bytes").when((before_bytes > 0) & (before_w == pl.col("_w"))).then("bytes").otherwise(0)
    per_step = ev.with_columns(_c=counted).group_by([*GROUP, "step"]).agg(_d=pl.col("_c").sum())
    return (
        grid.join(per_step, on=[*GROUP, "step"], how="left")
        .sort([*GROUP, "step"])
        .with_columns(held_bytes=pl.col("_d").fill_null(0).cum_sum().over([*GROUP, "_w"]).cast(pl.Int64))
        .drop("_d")
    )


def levels(memory: pl.DataFrame, steps: pl.DataFrame) -> pl.DataFrame:
    """Per (rank, device, step): ``level_bytes``, what the fit compares within each window
    (``_w``; ``_first``: the window's first step): ``held_in_window`` for the CPU allocator
    (with addresses), the allocated timeline at the step's end (``at_step_ends``) for the rest."""
    held = held_in_window(memory, steps).select(*GROUP, "step", "_w", "_first", level_bytes="held_bytes")
    rest = memory.with_columns(pl.col("rank").cast(pl.Int32)).join(held.select(GROUP).unique(), on=GROUP, how="anti")
    if rest.height == 0:
        return held
    ends = at_step_ends(rest, steps).join(_windows(steps).select("rank", "step", "_w", "_first"), on=["rank", "step"])
    return pl.concat([held, ends.select(*GROUP, "step", "_w", "_first", level_bytes="allocated_bytes")])


def fit(memory: pl.DataFrame, steps: pl.DataFrame) -> pl.DataFrame:
    """Per (rank, device): the growth of allocated memory over ``steps`` (the analysed steps
    allocator events were recorded in), the share of changes between consecutive steps that
    grew, the device's peak, and whether it is a leak (FIT_SCHEMA).

    Levels (``levels``) are compared only within a run of consecutive steps (a profiler
    window): between windows nothing is recorded (a relative trace's running sum misses what
    happened there; the CPU level starts again at each window). So the slope is least squares
    with one intercept per window, and each window's first step is left out: what was
    allocated before the window and is freed in it (last step's tensors) is not in its level."""
    if memory.height == 0 or steps.height == 0:
        return pl.DataFrame(schema=FIT_SCHEMA)
    peaks = allocated(memory).group_by(pl.col("rank").cast(pl.Int32), "device").agg(peak_allocated_bytes=pl.col("allocated_bytes").max())
    return fit_levels(levels(memory, steps), peaks)


def fit_levels(level_rows: pl.DataFrame, peaks: pl.DataFrame) -> pl.DataFrame:
    """``fit``'s table from the levels to compare (``level_rows``: ``levels``' columns: rank, device, step,
    ``_w``, ``_first``, ``level_bytes``) and each device's peak (rank, device,
    ``peak_allocated_bytes``): also the fit of the per-step samples (memory_samples.py)."""
    run = [*GROUP, "_w"]
    ends = (
        level_rows
        .filter(~pl.col("_first"))
        .filter(pl.len().over(run) >= 2)
        .sort([*GROUP, "step"])
        .with_columns(
            _x=pl.col("step").cast(pl.Float64) - pl.col("step").cast(pl.Float64).mean().over(run),
            _y=pl.col("level_bytes").cast(pl.Float64) - pl.col("level_bytes").cast(pl.Float64).mean().over(run),
            _dy=pl.col("level_bytes").diff().over(run),
        )
    )
    changes = pl.col("_dy").count()
    slope = (pl.col("_x") * pl.col("_y")).sum() / (pl.col("_x") ** 2).sum()
    per = ends.group_by(GROUP, maintain_order=True).agg(
        steps=pl.len().cast(pl.Int64),
        changes=changes,
        slope=slope,
        # a change grows when it adds at least LEAK_GROWING_PART of the slope: not the allocator's
        # kilobytes of noise from step to step
        growing_share=((pl.col("_dy") > 0) & (pl.col("_dy") >= LEAK_GROWING_PART * slope)).sum() / changes,
    )
    threshold = pl.min_horizontal(pl.lit(float(LEAK_MIN_BYTES_PER_STEP)), LEAK_MIN_PEAK_SHARE * pl.col("peak_allocated_bytes"))
    return (
        peaks.join(per, on=GROUP, how="left")
        .with_columns(
            steps=pl.col("steps").fill_null(0),
            leak=((pl.col("changes") >= LEAK_MIN_CHANGES) & (pl.col("slope") > 0) & (pl.col("slope") >= threshold)
                  & (pl.col("growing_share") >= LEAK_GROWING_SHARE)).fill_null(False),
            bytes_per_step=pl.col("slope").round(0).cast(pl.Int64),
        )
        .select(list(FIT_SCHEMA))
        .cast(FIT_SCHEMA)
        .sort(GROUP)
    )


def never_freed(memory: pl.DataFrame, steps: pl.DataFrame, devices: pl.DataFrame) -> pl.DataFrame:
    """The allocations on ``devices`` (rank, device) made inside ``steps`` and never freed
    within the trace: the blocks of ``memory_live.lifetimes`` (the one pairing of allocations
    and frees by address) with no free, by allocation time."""
    mine = memory.with_columns(pl.col("rank").cast(pl.Int32)).join(devices.select(GROUP), on=GROUP, how="semi")
    kept = lifetimes(mine).filter(pl.col("free_ns").is_null()).select(*GROUP, "pid", "tid", time_ns="alloc_ns", bytes="bytes")
    if kept.height == 0:
        return kept
    spans = _spans(steps).sort("start_ns")
    inside = kept.sort("time_ns", maintain_order=True).join_asof(spans.select("rank", "start_ns", "end_ns"), left_on="time_ns", right_on="start_ns",
                                                                by="rank", strategy="backward", check_sortedness=False)
    return inside.filter(pl.col("time_ns") < pl.col("end_ns")).select(*GROUP, "pid", "tid", "time_ns", "bytes")


def attribute(allocations: pl.DataFrame, held_ops: pl.DataFrame) -> pl.DataFrame:
    """Per (rank, device) of ``allocations`` (allocator events): the op holding the most
    never-freed bytes and those bytes (``op``, ``op_never_freed_bytes``). ``held_ops``:
    ``memory_ops.held`` of the events they are among, the run's one join to host ops."""
    schema = {"rank": pl.Int32, "device": pl.String, "op": pl.String, "op_never_freed_bytes": pl.Int64}
    if allocations.height == 0:
        return pl.DataFrame(schema=schema)
    a = allocations.with_row_index("_id").select("_id", pl.col("rank").cast(pl.Int32), "device", "bytes", "pid", "tid", "time_ns")
    # the innermost op holding each, the allocation primitives only where no other op holds it
    held = innermost(pairs_of(a, held_ops), last=ALLOCATION_OPS)
    per_op = a.join(held, on="_id", how="left").group_by([*GROUP, "name"]).agg(op_never_freed_bytes=pl.col("bytes").sum())
    # the op with most bytes (by name among equals); allocations under no op only when no op holds any
    ranked = per_op.sort([*GROUP, pl.col("name").is_null(), "op_never_freed_bytes", "name"], descending=[False, False, False, True, False])
    return ranked.group_by(GROUP, maintain_order=True).first().select(*GROUP, pl.col("name").alias("op"), "op_never_freed_bytes").cast(schema)


def leaks(fitted: pl.DataFrame, attributed: pl.DataFrame) -> pl.DataFrame:
    """Report.memory_leaks: the leaking devices of ``fit``'s table with their op."""
    found = fitted.filter(pl.col("leak")).select(*GROUP, "bytes_per_step", "steps", "growing_share")
    return found.join(attributed, on=GROUP, how="left").select(list(LEAKS_SCHEMA)).cast(LEAKS_SCHEMA).sort(GROUP)
