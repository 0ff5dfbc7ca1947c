"""Memory leaks: a device whose allocated memory grows step over step, by how much per step,
and the op that allocates what is never freed.

Tables in, a table out (columnar: an as-of join, a group-by, one inequality join):

* **Growth**: per (rank, device), allocated memory (``memory.allocated``) at the end of each
  analysed step: the value after the last allocator event at or before the step's end. The
  least-squares slope of it against the step number is ``bytes_per_step``. A leak when the
  slope is material (``verdicts.LEAK_MIN_BYTES_PER_STEP`` or ``LEAK_MIN_PEAK_SHARE`` of the
  device's peak per step, whichever is smaller), at least ``LEAK_GROWING_SHARE`` of the
  step-to-step changes grow, over at least ``LEAK_MIN_STEPS`` steps.
* **The op**: allocations (positive ``bytes`` with an address) made in the analysed steps and
  never freed within the trace (no later event at the same address on that device: a free,
  or the address handed out again, which means it was freed), each attributed to the
  innermost host op (``cpu_op``) on the allocating thread holding it that is not one of
  torch's allocation primitives (``ALLOCATION_OPS``: the innermost op is usually
  ``aten::empty`` inside the op that wanted the memory), else to the innermost. The op with
  the most never-freed bytes is the leak's op. Traces without addresses (2021) name none.
"""

from __future__ import annotations

import polars as pl

from accelscope.analysis.memory import GROUP, allocated
from accelscope.traces import schema as S
from accelscope.verdicts import LEAK_GROWING_SHARE, LEAK_MIN_BYTES_PER_STEP, LEAK_MIN_PEAK_SHARE, LEAK_MIN_STEPS

# torch's pure allocation ops: they allocate for the op that called them.
ALLOCATION_OPS = ("aten::empty", "aten::empty_strided", "aten::empty_like", "aten::resize_")

# Report.memory_leaks: one row per leaking (rank, device).
LEAKS_SCHEMA = {
    "rank": pl.Int32,
    "device": pl.String,
    "bytes_per_step": pl.Int64,  # the least-squares slope of allocated memory at the steps' ends
    "steps": pl.Int64,  # analysed steps the slope is fitted over
    "growing_share": pl.Float64,  # of the step-to-step changes, the share that grew
    "op": pl.String,  # the host op holding the most never-freed bytes; null: none found (no addresses)
    "op_never_freed_bytes": pl.Int64,  # what it allocated in the analysed steps and never freed
}
# Per (rank, device) with allocator events: the fit, leak or not (``fit``).
FIT_SCHEMA = {"rank": pl.Int32, "device": pl.String, "bytes_per_step": pl.Int64, "steps": pl.Int64, "growing_share": pl.Float64,
              "peak_allocated_bytes": pl.Int64, "leak": pl.Boolean}


def empty() -> pl.DataFrame:
    """Report.memory_leaks of a run without leaks."""
    return pl.DataFrame(schema=LEAKS_SCHEMA)


def _spans(steps: pl.DataFrame) -> pl.DataFrame:
    return steps.select(pl.col("rank").cast(pl.Int32), pl.col("step").cast(pl.Int64), pl.col("start_ns").cast(pl.Int64),
                        end_ns=(pl.col("start_ns") + pl.col("dur_ns")).cast(pl.Int64))


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


def fit(memory: pl.DataFrame, steps: pl.DataFrame) -> pl.DataFrame:
    """Per (rank, device): the slope of allocated memory over ``steps`` (the analysed steps),
    the share of step-to-step changes that grew, the device's peak, and whether it is a leak
    (FIT_SCHEMA)."""
    if memory.height == 0 or steps.height == 0:
        return pl.DataFrame(schema=FIT_SCHEMA)
    ends = at_step_ends(memory, steps).with_columns(pl.col("step").cast(pl.Float64).alias("_x"), pl.col("allocated_bytes").cast(pl.Float64).alias("_y"))
    peaks = allocated(memory).group_by(pl.col("rank").cast(pl.Int32), "device").agg(peak_allocated_bytes=pl.col("allocated_bytes").max())
    n = pl.len()
    per = ends.group_by(GROUP, maintain_order=True).agg(
        steps=n.cast(pl.Int64),
        slope=pl.when(n >= 2).then(pl.cov("_x", "_y") / pl.col("_x").var()),
        growing_share=pl.when(n >= 2).then((pl.col("_y").diff() > 0).sum() / (n - 1)),
    )
    threshold = pl.min_horizontal(pl.lit(float(LEAK_MIN_BYTES_PER_STEP)), LEAK_MIN_PEAK_SHARE * pl.col("peak_allocated_bytes"))
    return (
        per.join(peaks, on=GROUP, how="left")
        .with_columns(
            leak=((pl.col("steps") >= LEAK_MIN_STEPS) & (pl.col("slope") > 0) & (pl.col("slope") >= threshold)
                  & (pl.col("growing_share") >= LEAK_GROWING_SHARE)).fill_null(False),
            bytes_per_step=pl.col("slope").round(0).cast(pl.Int64),
        )
        .select(list(FIT_SCHEMA))
        .cast(FIT_SCHEMA)
        .sort(GROUP)
    )


def never_freed(memory: pl.DataFrame, steps: pl.DataFrame, devices: pl.DataFrame) -> pl.DataFrame:
    """The allocations on ``devices`` (rank, device) made inside ``steps`` and never freed
    within the trace: no later event at the same address on that device."""
    mine = memory.with_columns(pl.col("rank").cast(pl.Int32)).join(devices.select(GROUP), on=GROUP, how="semi").filter(pl.col("addr").is_not_null())
    if mine.height == 0:
        return mine.select(*GROUP, "pid", "tid", "time_ns", "bytes")
    by_block = [*GROUP, "addr"]
    last = mine.sort([*by_block, "time_ns"], maintain_order=True).filter(pl.col("time_ns").shift(-1).over(by_block).is_null())
    kept = last.filter(pl.col("bytes") > 0).sort("time_ns")
    spans = _spans(steps).sort("start_ns")
    inside = kept.join_asof(spans.select("rank", "start_ns", "end_ns"), left_on="time_ns", right_on="start_ns", by="rank", strategy="backward", check_sortedness=False)
    return inside.filter(pl.col("time_ns") < pl.col("end_ns")).select(*GROUP, "pid", "tid", "time_ns", "bytes")


def attribute(allocations: pl.DataFrame, ops: pl.DataFrame) -> pl.DataFrame:
    """Per (rank, device) of ``allocations``: the op holding the most never-freed bytes and
    those bytes (``op``, ``op_never_freed_bytes``). ``ops``: slices, only ``cpu_op`` ones count."""
    schema = {"rank": pl.Int32, "device": pl.String, "op": pl.String, "op_never_freed_bytes": pl.Int64}
    if allocations.height == 0:
        return pl.DataFrame(schema=schema)
    a = allocations.with_row_index("_id").select("_id", *GROUP, "bytes", pl.col("pid").alias("_pid"), pl.col("tid").alias("_tid"), "time_ns")
    o = ops.filter(pl.col("kind") == S.CPU_OP).select(
        pl.col("rank").cast(pl.Int32).alias("_rank"), "pid", "tid", "start_ns", "dur_ns", "name", end_ns=pl.col("start_ns") + pl.col("dur_ns"))
    holding = (
        a.join_where(o, pl.col("start_ns") <= pl.col("time_ns"), pl.col("end_ns") >= pl.col("time_ns"))
        .filter((pl.col("_rank") == pl.col("rank")) & (pl.col("pid") == pl.col("_pid")) & (pl.col("tid") == pl.col("_tid")))
        # innermost first (latest start, then shortest), the allocation primitives after the rest
        .sort(["_id", pl.col("name").is_in(ALLOCATION_OPS), "start_ns", "dur_ns"], descending=[False, False, True, False])
        .group_by("_id", maintain_order=True)
        .first()
        .select("_id", "name")
    )
    per_op = a.join(holding, on="_id", how="left").group_by([*GROUP, "name"]).agg(op_never_freed_bytes=pl.col("bytes").sum())
    # the op with most bytes (by name among equals); allocations under no op only when no op holds any
    ranked = per_op.sort([*GROUP, pl.col("name").is_null(), "op_never_freed_bytes", "name"], descending=[False, False, False, True, False])
    return ranked.group_by(GROUP, maintain_order=True).first().select(*GROUP, pl.col("name").alias("op"), "op_never_freed_bytes").cast(schema)


def op_filter(allocations: pl.DataFrame) -> pl.Expr:
    """A predicate for the slices ``attribute`` needs (host ops of the allocating threads),
    to push into the read (``Run.slices_where``)."""
    return (pl.col("kind") == S.CPU_OP) & pl.col("tid").is_in(allocations["tid"].drop_nulls().unique().to_list())


def leaks(fitted: pl.DataFrame, attributed: pl.DataFrame) -> pl.DataFrame:
    """Report.memory_leaks: the leaking devices of ``fit``'s table with their op."""
    found = fitted.filter(pl.col("leak")).select(*GROUP, "bytes_per_step", "steps", "growing_share")
    return found.join(attributed, on=GROUP, how="left").select(list(LEAKS_SCHEMA)).cast(LEAKS_SCHEMA).sort(GROUP)
