"""Memory: when each device's allocated memory peaked, in which step, under which op.

Tables in, a table out. The input is the run's memory table (one row per allocator call,
signed bytes; traces/kineto_memory.py), the report's steps and the host ops of the threads
that allocated. Allocated memory over time, per (rank, device):

* where the trace records the allocator's ``Total Allocated`` (torch 1.11 on), that total;
* where it does not (2021 traces), the running sum of ``bytes`` since the trace began:
  what was allocated during the capture, with no baseline for what was already held, so
  such peaks are flagged ``relative``. A device whose events carry the total only at times
  gets the sum lined up on the totals it has.

The peak is the first time allocated memory reaches its maximum; its step is the step
whose span holds it, and its op the innermost host op (``cpu_op``) on the allocating
thread whose span holds it. Reserved memory (the caching allocator's segments) is the
maximum of ``Total Reserved``, null where the trace does not record it.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from accelscope.traces import schema as S

GROUP = ["rank", "device"]
# Report.memory: one row per (rank, device) with allocator events.
MEMORY_SCHEMA = {
    "rank": pl.Int32,
    "device": pl.String,
    "peak_allocated_bytes": pl.Int64,
    "peak_reserved_bytes": pl.Int64,  # null: the trace does not record reserved memory
    "peak_time_ns": pl.Int64,
    "peak_step": pl.Int64,  # null: the peak is outside every step
    "peak_op": pl.String,  # null: no host op of the allocating thread was running
    "relative": pl.Boolean,  # the peak counts only what was allocated since the trace began
    "memory_total_bytes": pl.Int64,  # the device's memory (NVML, deviceProperties, XPlane); null: unknown
    "peak_share": pl.Float64,  # the most held (allocated or reserved) over the total; null: no total, or a relative peak
    "fragmentation_bytes": pl.Int64,  # reserved but not allocated when reserved peaked; null: reserved not recorded
    "fragmentation_bytes_per_step": pl.Int64,  # its least-squares trend at the steps' ends; null: under FRAGMENTATION_MIN_STEPS steps
}
LATER = ("memory_total_bytes", "peak_share", "fragmentation_bytes", "fragmentation_bytes_per_step")  # added after the peaks
PEAK_COLUMNS = [c for c in MEMORY_SCHEMA if c not in LATER]
FRAGMENTATION_SCHEMA = {"rank": pl.Int32, "device": pl.String, "fragmentation_bytes": pl.Int64, "fragmentation_bytes_per_step": pl.Int64}
FRAGMENTATION_MIN_STEPS = 3  # steps' ends a trend is fitted over
_PEAKS_SCHEMA = {**{k: v for k, v in MEMORY_SCHEMA.items() if k in PEAK_COLUMNS and k != "peak_op"}, "pid": pl.Int64, "tid": pl.Int64}


def empty() -> pl.DataFrame:
    """Report.memory of a run without allocator events."""
    return pl.DataFrame(schema=MEMORY_SCHEMA)


def allocated(memory: pl.DataFrame) -> pl.DataFrame:
    """The memory table by (rank, device) and time (file order among equal times) with
    ``allocated_bytes``: the recorded total where there is one, else the running sum of
    ``bytes`` lined up on the device's recorded totals (or from 0 where it has none). A table
    that has the column already (this function's, or rows of it) is returned as it is:
    ``analyze`` makes it once for every figure that reads it."""
    if "allocated_bytes" in memory.columns:
        return memory
    ta = pl.col("total_allocated_bytes")
    rows = memory.sort([*GROUP, "time_ns"], maintain_order=True).with_columns(_sum=pl.col("bytes").cum_sum().over(GROUP))
    offset = (ta - pl.col("_sum")).forward_fill().backward_fill().over(GROUP)
    return rows.with_columns(allocated_bytes=pl.coalesce(ta, pl.col("_sum") + offset.fill_null(0))).drop("_sum")


def peaks(memory: pl.DataFrame, steps: pl.DataFrame) -> pl.DataFrame:
    """Per (rank, device): the peak, its time, step and allocating thread (``pid``, ``tid``),
    without the op (``memory_ops.with_peak_ops`` adds it)."""
    if memory.height == 0:
        return pl.DataFrame(schema=_PEAKS_SCHEMA)
    at_peak = pl.col("allocated_bytes").arg_max()
    out = (
        allocated(memory)
        .group_by(GROUP, maintain_order=True)
        .agg(
            peak_allocated_bytes=pl.col("allocated_bytes").max(),
            peak_reserved_bytes=pl.col("total_reserved_bytes").max(),
            peak_time_ns=pl.col("time_ns").get(at_peak),
            pid=pl.col("pid").get(at_peak),
            tid=pl.col("tid").get(at_peak),
            relative=pl.col("total_allocated_bytes").is_null().all(),
            **({"peak_stack": pl.col("stack").get(at_peak)} if "stack" in memory.columns else {}),  # the allocation at the peak's call stack
        )
        .with_columns(pl.col("rank").cast(pl.Int32))
        .sort(GROUP)
    )
    return _with_steps(out, steps)


def _with_steps(peaks: pl.DataFrame, steps: pl.DataFrame) -> pl.DataFrame:
    """``peak_step``: the step of the same rank whose [start, end) holds the peak (the latest
    to start, should steps overlap). A join on the rank: a few peaks against the steps."""
    spans = steps.select(pl.col("rank").cast(pl.Int32), pl.col("step").cast(pl.Int64).alias("peak_step"), "start_ns", end_ns=pl.col("start_ns") + pl.col("dur_ns"))
    holding = (
        peaks.select(*GROUP, "peak_time_ns")
        .join(spans, on="rank")
        .filter((pl.col("start_ns") <= pl.col("peak_time_ns")) & (pl.col("peak_time_ns") < pl.col("end_ns")))
        .sort("start_ns")
        .group_by(GROUP)
        .agg(pl.col("peak_step").last())
    )
    return peaks.join(holding, on=GROUP, how="left")


def with_capacity(memory: pl.DataFrame, totals: pl.DataFrame) -> pl.DataFrame:
    """Report.memory with each device's total memory (``totals``: rank, device,
    memory_total_bytes; the first known per device) and the peak's share of it: the most
    held at once, allocated or (the caching allocator's) reserved, over the total. A relative
    peak (2021 traces) gets no share: what was held before the capture is unknown."""
    totals = totals.drop_nulls("memory_total_bytes").filter(pl.col("memory_total_bytes") > 0).unique(GROUP, keep="first")
    out = memory.drop("memory_total_bytes", "peak_share").join(totals.select(pl.col("rank").cast(pl.Int32), "device", pl.col("memory_total_bytes").cast(pl.Int64)), on=GROUP, how="left")
    held = pl.max_horizontal("peak_allocated_bytes", "peak_reserved_bytes")
    share = pl.when(~pl.col("relative") & pl.col("memory_total_bytes").is_not_null()).then(held / pl.col("memory_total_bytes"))
    return out.with_columns(peak_share=share).select(list(MEMORY_SCHEMA)).cast(MEMORY_SCHEMA)


def fragmentation(memory: pl.DataFrame, steps: pl.DataFrame) -> pl.DataFrame:
    """Per (rank, device) whose trace records reserved memory: what the caching allocator
    reserved but had not allocated when its reservation peaked (``fragmentation_bytes``: what
    ``expandable_segments`` or fewer differently sized allocations could give back), and the
    trend of reserved less allocated at the ends of ``steps`` (least squares per step over
    the steps' ends, null under FRAGMENTATION_MIN_STEPS of them)."""
    rows = allocated(memory.filter(pl.col("total_reserved_bytes") > 0)).with_columns(pl.col("rank").cast(pl.Int32))
    if rows.height == 0:
        return pl.DataFrame(schema=FRAGMENTATION_SCHEMA)
    gap = pl.col("total_reserved_bytes") - pl.col("allocated_bytes")
    at_peak = rows.group_by(GROUP, maintain_order=True).agg(fragmentation_bytes=gap.get(pl.col("total_reserved_bytes").arg_max()))
    ends = steps.select(pl.col("rank").cast(pl.Int32), pl.col("step").cast(pl.Float64), end_ns=(pl.col("start_ns") + pl.col("dur_ns")).cast(pl.Int64))
    levels = (ends.join(rows.select(GROUP).unique(), on="rank").sort("end_ns")
              .join_asof(rows.select(*GROUP, "time_ns", _gap=gap).sort("time_ns"), left_on="end_ns", right_on="time_ns", by=GROUP,
                         strategy="backward", check_sortedness=False)
              .drop_nulls("_gap"))
    x, y = pl.col("step") - pl.col("step").mean(), pl.col("_gap").cast(pl.Float64) - pl.col("_gap").cast(pl.Float64).mean()
    trend = levels.group_by(GROUP).agg(_n=pl.len(), _slope=(x * y).sum() / (x * x).sum())
    trend = trend.select(*GROUP, fragmentation_bytes_per_step=pl.when(pl.col("_n") >= FRAGMENTATION_MIN_STEPS).then(pl.col("_slope").round(0)))
    return at_peak.join(trend, on=GROUP, how="left").select(list(FRAGMENTATION_SCHEMA)).cast(FRAGMENTATION_SCHEMA).sort(GROUP)


def with_fragmentation(memory: pl.DataFrame, frag: pl.DataFrame) -> pl.DataFrame:
    """Report.memory with ``fragmentation``'s columns (null where reserved memory is not recorded)."""
    out = memory.drop("fragmentation_bytes", "fragmentation_bytes_per_step").join(frag, on=GROUP, how="left")
    return out.select(list(MEMORY_SCHEMA)).cast(MEMORY_SCHEMA)


def rank_skew(memory: pl.DataFrame) -> dict[str, Any] | None:
    """Across the ranks of a job, the highest and lowest allocation peak on the same kind of
    device (accelerators where the run has them, else the CPU): which rank needs the most
    memory, and how uneven the ranks are (``skew``: highest over lowest). None for one rank."""
    kind = pl.col("device").str.extract(r"^([^:]+)")
    rows = memory.with_columns(_kind=kind)
    on_device = rows.filter(pl.col("_kind") != "cpu")
    rows = on_device if on_device.height else rows
    per_rank = rows.group_by("rank").agg(pl.col("peak_allocated_bytes").max()).sort("peak_allocated_bytes", "rank", descending=[True, False])
    if per_rank.height < 2:
        return None
    (hi_rank, hi), (lo_rank, lo) = per_rank.row(0), per_rank.row(-1)
    return {"max_rank": int(hi_rank), "max_peak_allocated_bytes": int(hi), "min_rank": int(lo_rank), "min_peak_allocated_bytes": int(lo),
            "skew": round(hi / lo, 6) if lo > 0 else None, "relative": bool(rows["relative"].any())}


def op_filter(rows: pl.DataFrame) -> pl.Expr:
    """A predicate for the slices that can hold ``rows`` (any table with a ``tid``: the host
    ops of those threads), to push into the read (``Run.slices_where``) instead of loading
    every slice: what the peaks' ops, memory by op and the leaks' ops need."""
    return (pl.col("kind") == S.CPU_OP) & pl.col("tid").is_in(rows["tid"].drop_nulls().unique().to_list())
