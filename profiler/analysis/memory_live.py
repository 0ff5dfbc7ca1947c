"""Allocation lifetimes: each allocator block from its allocation to its free, and what was
live at an instant (the dashboard's click on a memory curve, the categories at the peak).

Tables in, a table out. The input is the run's memory table (one row per allocator call,
signed bytes, the block's address). Blocks are paired by (rank, device, address):

* an allocation lives until the next event at its address: its free, or (where the free was
  not recorded) the address handed out again, which means it was freed by then;
* a free with no allocation before it at its address is a block allocated before the trace
  began (or while recording was off): it lives from the start (``alloc_ns`` null) to its free.

Events without an address (2021 traces) pair with nothing: such devices have no lifetimes,
and what was live on them is unknown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl

from accelscope.analysis.memory import GROUP
from accelscope.analysis.memory_ops import held, innermost, pairs_of

# One row per block seen allocated or freed.
LIFETIMES_SCHEMA = {
    "rank": pl.Int32,
    "device": pl.String,
    "addr": pl.Int64,
    "pid": pl.Int64,  # the allocating thread (for a block from before the trace: the freeing one)
    "tid": pl.Int64,
    "alloc_ns": pl.Int64,  # null: allocated before the trace (or while recording was off)
    "free_ns": pl.Int64,  # null: not freed within the trace
    "bytes": pl.Int64,
    "freed_seen": pl.Boolean,  # the free itself was recorded (else the address's reuse ends the block)
}
# live_at: what held a device's memory at an instant, per (op, category).
LIVE_SCHEMA = {"op": pl.String, "category": pl.String, "live_bytes": pl.Int64, "allocations": pl.Int64}
BLOCK = [*GROUP, "addr"]


@dataclass(frozen=True)
class Live:
    """What held a device at an instant (``live_at``): the largest (op, category) rows, and
    the figures of the rows left out and of them all, so that a reader lists and sums nothing."""

    rows: pl.DataFrame  # the largest (op, category) rows, most bytes first (LIVE_SCHEMA)
    more_rows: int  # (op, category) rows left out of ``rows``
    more_bytes: int  # their live bytes
    more_allocations: int  # their allocations
    total_bytes: int  # live bytes of every row, ``rows``' and the rest's
    total_allocations: int  # allocations of every row


def lifetimes(memory: pl.DataFrame) -> pl.DataFrame:
    """Every block of ``memory`` with an address, from allocation to free (LIFETIMES_SCHEMA),
    in the memory table's order (by device, then allocation time; blocks from before the
    trace first)."""
    rows = memory.filter(pl.col("addr").is_not_null() & (pl.col("bytes") != 0)).with_columns(pl.col("rank").cast(pl.Int32))
    if rows.height == 0:
        return pl.DataFrame(schema=LIFETIMES_SCHEMA)
    rows = rows.sort([*BLOCK, "time_ns"], maintain_order=True).with_columns(
        _next_ns=pl.col("time_ns").shift(-1).over(BLOCK),
        _next_free=(pl.col("bytes").shift(-1).over(BLOCK) < 0),
        _after_alloc=(pl.col("bytes").shift(1).over(BLOCK) > 0).fill_null(False),
    )
    allocs = rows.filter(pl.col("bytes") > 0).select(
        *BLOCK, "pid", "tid", alloc_ns="time_ns", free_ns="_next_ns", bytes="bytes", freed_seen=pl.col("_next_free").fill_null(False))
    before = rows.filter((pl.col("bytes") < 0) & ~pl.col("_after_alloc")).select(
        *BLOCK, "pid", "tid", alloc_ns=pl.lit(None, pl.Int64), free_ns="time_ns", bytes=-pl.col("bytes"), freed_seen=pl.lit(True))
    return pl.concat([before, allocs]).select(list(LIFETIMES_SCHEMA)).cast(LIFETIMES_SCHEMA).sort([*GROUP, "alloc_ns"], nulls_last=False,
                                                                                                   maintain_order=True)


def alive(lives: pl.DataFrame, time_ns: int | pl.Expr) -> pl.Expr:
    """Whether a block of ``lifetimes`` held memory at ``time_ns``: allocated at or before it
    (or before the trace), not freed by then."""
    return (pl.col("alloc_ns").is_null() | (pl.col("alloc_ns") <= time_ns)) & (pl.col("free_ns").is_null() | (pl.col("free_ns") > time_ns))


def with_ops(lives: pl.DataFrame, ops: pl.DataFrame | None, last: tuple[str, ...] = (), held_ops: pl.DataFrame | None = None) -> pl.DataFrame:
    """``lives`` with ``op``: the innermost host op of the allocating thread holding each
    allocation (``last``: ops named only where no other op holds it, torch's allocation
    primitives); blocks from before the trace, and allocations under no op, get null.
    ``held_ops``: ``memory_ops.held`` of the memory table ``lives`` came from, where the
    caller has it (``analyze``); else the allocations are joined to ``ops`` here."""
    lives = lives.with_row_index("_id")
    if ops is None or ops.height == 0:
        return lives.drop("_id").with_columns(op=pl.lit(None, pl.String))
    seen = lives.filter(pl.col("alloc_ns").is_not_null()).select("_id", "rank", "pid", "tid", time_ns="alloc_ns")
    pairs = pairs_of(seen, held_ops if held_ops is not None else held(seen, ops))
    named = innermost(pairs, last=last).rename({"name": "op"})
    return lives.join(named, on="_id", how="left").drop("_id")


def summarised(table: pl.DataFrame, n: int) -> Live:
    """``Live`` of ``table`` (LIVE_SCHEMA rows: every (op, category) live at an instant): its
    ``n`` largest rows, most bytes first (by op, then category, among equals), the figures of
    the rest and the totals of them all."""
    table = table.sort(["live_bytes", "op", "category"], descending=[True, False, False], nulls_last=True).cast(LIVE_SCHEMA)
    rest = table.slice(n)
    return Live(rows=table.head(n), more_rows=rest.height, more_bytes=int(rest["live_bytes"].sum()), more_allocations=int(rest["allocations"].sum()),
                total_bytes=int(table["live_bytes"].sum()), total_allocations=int(table["allocations"].sum()))


def live_at(run: Any, rank: int, device: str, time_ns: int, n: int = 20) -> Live:
    """What held ``device`` of ``rank`` at ``time_ns`` (the run's clock): per (op, category)
    the live bytes and allocations, the ``n`` largest, and the rest's and all rows' totals
    (``summarised``). The op is the allocating host op (torch's allocation primitives only
    where nothing else holds the allocation); the category is ``memory_categories``'
    inference; what the allocator held that no block seen accounts for is one
    ``before_trace`` row without an op. No rows where the device's events carry no
    addresses. The steps are the run's step slices."""
    from accelscope.analysis import memory_categories as MC
    from accelscope.analysis.leaks import ALLOCATION_OPS
    from accelscope.analysis.memory import allocated, op_filter

    memory = run.memory.filter((pl.col("rank") == rank) & (pl.col("device") == device))
    lives = lifetimes(memory)
    if lives.height == 0:
        return summarised(pl.DataFrame(schema=LIVE_SCHEMA), n)
    ops = run.slices_where(op_filter(memory) | MC.phase_filter())
    categorised = MC.categorise(with_ops(lives, ops, ALLOCATION_OPS), ops, MC.step_spans(run, rank))
    now = categorised.filter(alive(categorised, time_ns))
    table = now.group_by("op", "category").agg(live_bytes=pl.col("bytes").sum(), allocations=pl.len())
    # what the allocator held that no block seen accounts for: held since before the trace
    level = allocated(memory).filter(pl.col("time_ns") <= time_ns).select(pl.col("allocated_bytes").last()).item() if memory.height else None
    rest = (level or 0) - int(now["bytes"].sum())
    if rest > 0:
        table = pl.concat([table, pl.DataFrame({"op": [None], "category": ["before_trace"], "live_bytes": [rest], "allocations": [0]}).cast(table.schema)])
    return summarised(table.group_by("op", "category").agg(pl.col("live_bytes").sum(), pl.col("allocations").sum()), n)
