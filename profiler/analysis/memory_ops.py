"""Memory by op: per (rank, device, host op name), what the op allocated itself and what was
allocated under it, like the memory view of TensorBoard's removed PyTorch plugin.

Tables in, a table out. The input is the run's memory table (one row per allocator call,
signed bytes) and the host ops (``cpu_op`` slices) of the threads that allocated. Each
allocator event (an allocation, or a free) is held by every host op on its own rank, process
and thread whose [start, end] holds its time (``holding``: one inequality join); the
innermost of them (latest start, then shortest: ``innermost``) is the one it is *self* to.

* ``allocations``, ``allocated_bytes``: the allocations (positive ``bytes``) self to the op,
  their count and bytes. torch allocates through its allocation primitives, so these are
  mostly ``aten::empty`` and kin (``leaks.ALLOCATION_OPS``); the op that wanted the memory
  shows in the totals.
* ``self_increase_bytes``: the signed bytes of every event self to the op: its allocations
  less the frees made while it was the innermost op.
* ``total_allocated_bytes``, ``total_increase_bytes``: the same over every event an op of
  that name holds, its children's included (each event once per name, however deeply an op
  nests in an op of the same name).

Events outside every host op count for no op. Steps (``ProfilerStep#N``) and annotations
(``record_function``) are not host ops and get no row.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from accelscope.analysis import memory_sites
from accelscope.analysis.memory import GROUP, LATER, MEMORY_SCHEMA, PEAK_COLUMNS
from accelscope.traces import schema as S

TOP_N = 50  # Report.memory_ops: the ops allocating most on each device
TEXT_ROWS = 10  # analyze's "Memory by op" table

# Report.memory_ops: one row per (rank, device, host op name) holding allocator events.
MEMORY_OPS_SCHEMA = {
    "rank": pl.Int32,
    "device": pl.String,
    "name": pl.String,
    "allocations": pl.Int64,  # allocations whose innermost host op is this one
    "allocated_bytes": pl.Int64,  # their bytes
    "self_increase_bytes": pl.Int64,  # those less the frees whose innermost host op is this one
    "total_allocated_bytes": pl.Int64,  # bytes allocated while an op of this name held the thread, its children's included
    "total_increase_bytes": pl.Int64,  # those less the frees made meanwhile
}
_KEY = [*GROUP, "name"]
_THREAD = ["rank", "pid", "tid"]
INSTANT = [*_THREAD, "time_ns"]  # an allocator event's instant on its thread: all that decides which ops hold it
_PAIRS_SCHEMA = {"_id": pl.UInt32, "name": pl.String, "start_ns": pl.Int64, "dur_ns": pl.Int64}
_BAND_LIMIT = 2**62  # bands of time per thread stay below Int64's limit


def empty() -> pl.DataFrame:
    """Report.memory_ops of a run without allocator events (or without host ops holding any)."""
    return pl.DataFrame(schema=MEMORY_OPS_SCHEMA)


def holding(rows: pl.DataFrame, ops: pl.DataFrame) -> pl.DataFrame:
    """(``_id``, ``name``, ``start_ns``, ``dur_ns``): per row of ``rows`` (``_id``, rank,
    pid, tid, time_ns), each host op of the same rank, process and thread whose [start, end]
    holds its time. ``ops``: slices, only ``cpu_op`` ones count.

    One inequality join, with each thread's times moved into a band of their own (the
    thread's index times the span of all the times) so that only ops of the row's own thread
    can hold it: no pairs across threads or ranks to filter out afterwards."""
    rows = rows.with_columns(pl.col("rank").cast(pl.Int32))
    threads = rows.select(_THREAD).unique().sort(_THREAD).with_row_index("_g")
    o = (ops.filter(pl.col("kind") == S.CPU_OP)
         .select(pl.col("rank").cast(pl.Int32), "pid", "tid", "name", pl.col("start_ns").cast(pl.Int64), pl.col("dur_ns").cast(pl.Int64))
         .join(threads, on=_THREAD))
    r = rows.join(threads, on=_THREAD).select("_id", "_g", "time_ns")
    if o.height == 0 or r.height == 0:
        return pl.DataFrame(schema=_PAIRS_SCHEMA)
    lo = min(int(r["time_ns"].min()), int(o["start_ns"].min()))
    band = max(int(r["time_ns"].max()), int((o["start_ns"] + o["dur_ns"]).max())) - lo + 1
    per_join = max(1, _BAND_LIMIT // band)  # threads per join (all of them but for days-long runs of many threads)
    parts = []
    for first in range(0, threads.height, per_join):
        g = pl.col("_g").cast(pl.Int64) - first
        mine = pl.col("_g").is_between(first, first + per_join - 1)
        rs = r.filter(mine).select("_id", _t=g * band + pl.col("time_ns") - lo)
        spans = o.filter(mine).select("name", "start_ns", "dur_ns", _s=g * band + pl.col("start_ns") - lo,
                                      _e=g * band + pl.col("start_ns") + pl.col("dur_ns") - lo)
        parts.append(rs.join_where(spans, pl.col("_s") <= pl.col("_t"), pl.col("_e") >= pl.col("_t")).select(list(_PAIRS_SCHEMA)))
    return pl.concat(parts).cast({k: v for k, v in _PAIRS_SCHEMA.items() if k != "_id"})


def held(rows: pl.DataFrame, ops: pl.DataFrame) -> pl.DataFrame:
    """(rank, pid, tid, time_ns, ``name``, ``start_ns``, ``dur_ns``): per instant of ``rows``
    (allocator events: rank, pid, tid, time_ns), each host op of its thread holding it
    (``holding``, run once per instant). The one join of a run's allocator events to their
    host ops: ``analyze`` makes it once, and memory by op (``table``) and the lifetimes' ops
    (``memory_live.with_ops``) both read it. ``ops``: slices, only ``cpu_op`` ones count."""
    instants = rows.select(pl.col("rank").cast(pl.Int32), "pid", "tid", "time_ns").unique().with_row_index("_id")
    return instants.join(holding(instants, ops), on="_id").drop("_id")


def pairs_of(rows: pl.DataFrame, held_ops: pl.DataFrame) -> pl.DataFrame:
    """``holding``'s pairs for ``rows`` (``_id``, rank, pid, tid, time_ns), read from ``held``'s
    table (``held_ops``) of events that include them."""
    return rows.select("_id", pl.col("rank").cast(pl.Int32), "pid", "tid", "time_ns").join(held_ops, on=INSTANT).select(list(_PAIRS_SCHEMA))


def innermost(pairs: pl.DataFrame, last: Sequence[str] = ()) -> pl.DataFrame:
    """(``_id``, ``name``): per row of ``holding``'s pairs, the innermost op holding it
    (latest start, then shortest); ops named in ``last`` only where no other op holds it."""
    order = ["_id", pl.col("name").is_in(list(last)), "start_ns", "dur_ns"]
    return pairs.sort(order, descending=[False, False, True, False]).group_by("_id", maintain_order=True).first().select("_id", "name")


def with_peak_ops(peaks: pl.DataFrame, held_ops: pl.DataFrame) -> pl.DataFrame:
    """Report.memory (MEMORY_SCHEMA, totals still unknown) from ``memory.peaks``: each
    peak's ``peak_op``, the innermost host op of its thread holding the peak's time. A peak
    is an allocator event's instant, so ``held_ops`` (``held`` of the same events) has its ops."""
    rows = peaks.select(*GROUP, "pid", "tid", pl.col("peak_time_ns").alias("time_ns")).with_row_index("_id")
    named = rows.join(innermost(pairs_of(rows, held_ops)), on="_id").select(*GROUP, pl.col("name").alias("peak_op"))
    out = peaks.join(named, on=GROUP, how="left")
    if "peak_stack" in out.columns:  # no op holding the peak: the site that allocated it, where stacks were recorded
        out = out.with_columns(peak_op=pl.coalesce("peak_op", memory_sites.site(pl.col("peak_stack"))))
    out = out.select(PEAK_COLUMNS)
    return out.with_columns(pl.lit(None).alias(c) for c in LATER).select(list(MEMORY_SCHEMA)).cast(MEMORY_SCHEMA)


def table(memory: pl.DataFrame, held_ops: pl.DataFrame) -> pl.DataFrame:
    """Every (rank, device, host op name) holding allocator events of ``memory``, with its
    self and total figures (MEMORY_OPS_SCHEMA), unranked. ``held_ops``: ``held(memory, ops)``,
    ``ops`` the slices of the allocating threads (``memory.op_filter``)."""
    rows = memory.select(pl.col("rank").cast(pl.Int32), "device", "pid", "tid", "time_ns", "bytes").with_row_index("_id")
    pairs = pairs_of(rows, held_ops)
    if pairs.height == 0:  # no host op holds any: where the events carry stacks (a snapshot), their sites
        return memory_sites.table(memory, MEMORY_OPS_SCHEMA)
    allocated = pl.col("bytes").clip(lower_bound=0)
    own = rows.join(innermost(pairs), on="_id").group_by(_KEY).agg(
        allocations=(pl.col("bytes") > 0).sum(), allocated_bytes=allocated.sum(), self_increase_bytes=pl.col("bytes").sum())
    under = rows.join(pairs.select("_id", "name").unique(), on="_id").group_by(_KEY).agg(
        total_allocated_bytes=allocated.sum(), total_increase_bytes=pl.col("bytes").sum())
    own_cols = ["allocations", "allocated_bytes", "self_increase_bytes"]
    return (under.join(own, on=_KEY, how="left")
            .with_columns(pl.col(own_cols).fill_null(0))
            .select(list(MEMORY_OPS_SCHEMA))
            .cast(MEMORY_OPS_SCHEMA))


def ranked(ops: pl.DataFrame) -> pl.DataFrame:
    """``table``'s rows by device, then most allocated (self, then total) first, by name among equals."""
    return ops.sort([*GROUP, "allocated_bytes", "total_allocated_bytes", "name"], descending=[False, False, True, True, False])


def top(ops: pl.DataFrame, n: int = TOP_N) -> tuple[pl.DataFrame, int]:
    """(Report.memory_ops, how many rows were left out): the ``n`` ops of each (rank, device)
    that allocated most themselves (then under them), by device."""
    kept = ranked(ops).filter(pl.int_range(pl.len()).over(GROUP) < n)
    return kept, ops.height - kept.height


def most(ops: pl.DataFrame, n: int = TEXT_ROWS) -> pl.DataFrame:
    """The ``n`` rows of Report.memory_ops that allocated most themselves (then under them), any device."""
    return ops.sort(["allocated_bytes", "total_allocated_bytes", "rank", "device", "name"], descending=[True, True, False, False, False]).head(n)

