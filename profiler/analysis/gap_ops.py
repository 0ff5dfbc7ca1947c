"""The host work behind each idle gap: which op the threads that drive the device were in
while the device sat idle.

"host compute / late launches" says why in general; the op says where. For each idle gap
of at least ``MIN_GAP_NS``, the host ops (``cpu_op``, ``python_function``) on the rank's
driving threads that overlap it are found, with their nesting depth; the gap "sits under"
the deepest op that covers at least ``COVER_SHARE`` of it (a 15 ms gap inside DDP's
``aten::unflatten_dense_tensors`` names that op, not its hundreds of tiny views), or, when
no op covers that much (many short ops), the one that covers most. Per cause, the ops the
cause's gaps sat under, by the gap time they cover, are what the cause table and the
recommendation name.

All of it is columnar: nesting depth from sorted starts and ends per thread, and the
gap x op overlap as one inequality join per rank.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from accelscope.traces import schema as S

MIN_GAP_NS = 20_000  # gaps shorter than this carry no host op
COVER_SHARE = 0.5  # an op a gap "sits under" covers at least this share of it
TOP_OPS_PER_CAUSE = 3
OP_KINDS = [S.CPU_OP, S.PYTHON]
BY_CAUSE_SCHEMA = {"cause": pl.String, "name": pl.String, "self_ns": pl.Int64}  # self_ns: gap time under the op


def driver_ops(events: pl.DataFrame) -> pl.DataFrame:
    """The host ops (rank, pid, tid, name, start_ns, end_ns) on the threads that drive each
    rank's devices: those that call the runtime or run the training loop (all of a rank's
    threads when none does)."""
    from accelscope.analysis.breakdown import launch_threads

    host = events.filter(pl.col("device") == "cpu").select("rank", "pid", "tid", "kind", "name", "start_ns", "dur_ns")
    drivers = pl.concat([launch_threads(h).with_columns(rank=pl.lit(r, dtype=h["rank"].dtype)) for (r,), h in host.group_by(["rank"])]
                        or [host.select("rank", "pid", "tid").clear()], how="diagonal")
    return (
        host.filter(pl.col("kind").is_in(OP_KINDS)).join(drivers, on=["rank", "pid", "tid"], how="semi")
        .select("rank", "pid", "tid", "name", "start_ns", end_ns=pl.col("start_ns") + pl.col("dur_ns"))
    )


def ops_of(by_cause: pl.DataFrame, cause: str) -> list[tuple[str, int]]:
    """(op name, gap ns) of one cause from ``host_ops_in_gaps``'s per-cause table, most first."""
    rows = by_cause.filter(pl.col("cause") == cause)
    return list(zip(rows["name"].to_list(), rows["self_ns"].to_list()))


def with_depth(ops: pl.DataFrame) -> pl.DataFrame:
    """``ops`` (rank, pid, tid, name, start_ns, end_ns) with ``depth``: how many ops of its
    thread enclose it (0: top level). For properly nested slices: its position in start
    order (outer first on ties) minus the ops of its thread that ended by its start."""
    ops = ops.sort("rank", "pid", "tid", "start_ns", pl.col("end_ns"), descending=[False, False, False, False, True])
    thread = ops.select(pl.struct("rank", "pid", "tid").rank("dense").cast(pl.Int64) - 1).to_series().to_numpy()
    start = ops["start_ns"].to_numpy()
    end = ops["end_ns"].to_numpy()
    lo = min(int(start.min()), int(end.min())) if start.size else 0
    shift = np.int64(1) << np.int64(45)  # per-thread keys: thread * 2^45 + time since the first event (< 9.7 h)
    key_start = thread * shift + (start - lo)
    key_end = np.sort(thread * shift + (end - lo))
    first_of_thread = np.searchsorted(thread, thread, side="left")
    position = np.arange(start.size) - first_of_thread
    ended = np.searchsorted(key_end, key_start, side="right") - np.searchsorted(key_end, thread * shift, side="left")
    return ops.with_columns(depth=pl.Series(np.maximum(position - ended, 0), dtype=pl.Int64))


def host_ops_in_gaps(gaps: pl.DataFrame, ops: pl.DataFrame, basis: pl.DataFrame | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(``gaps`` with ``host_op`` and ``host_op_ns``, the top ops per cause ``BY_CAUSE_SCHEMA``).

    ``gaps``: rank, device, step, start_ns, end_ns, cause (``breakdown``'s gaps); ``ops``: the
    host ops on the threads that drive the device (``driver_ops``); ``basis``: the (rank,
    step) the per-cause figures are over (all gaps when None)."""
    gaps = gaps.with_row_index("_gap")
    empty = gaps.with_columns(host_op=pl.lit(None, dtype=pl.String), host_op_ns=pl.lit(None, dtype=pl.Int64)).drop("_gap")
    long = gaps.filter(pl.col("dur_ns") >= MIN_GAP_NS).select("_gap", "rank", "step", pl.col("start_ns").alias("_gs"), pl.col("end_ns").alias("_ge"), "cause")
    if long.height == 0 or ops.height == 0:
        return empty, pl.DataFrame(schema=BY_CAUSE_SCHEMA)
    ops = ops.with_row_index("_op")
    # One inequality join per rank (an equality in the same join makes it a cross join).
    parts = [
        g.join_where(ops.filter(pl.col("rank") == rank).drop("rank", "pid", "tid", "name"), pl.col("start_ns") < pl.col("_ge"), pl.col("end_ns") > pl.col("_gs"))
        for (rank,), g in long.group_by(["rank"])
    ]
    pairs = pl.concat([p for p in parts if p.height]) if any(p.height for p in parts) else pl.DataFrame()
    if pairs.height == 0:
        return empty, pl.DataFrame(schema=BY_CAUSE_SCHEMA)
    # Depth among the ops that overlap some gap is their depth among all: an op's enclosing
    # ops overlap every gap it overlaps, and any other op that started before it has ended.
    touched = ops.join(pairs.select("_op").unique(), on="_op", how="semi")
    pairs = pairs.join(with_depth(touched).select("_op", "depth"), on="_op")
    pairs = pairs.with_columns(overlap_ns=pl.min_horizontal("end_ns", "_ge") - pl.max_horizontal("start_ns", "_gs"))
    # The op a gap sits under: the deepest one covering at least COVER_SHARE of it; when
    # none does (many short ops), the one covering most of it. Ties (ops on two threads
    # alike) go to the earliest, then by name: the join's row order varies from run to run.
    covers = pl.col("overlap_ns") >= COVER_SHARE * (pl.col("_ge") - pl.col("_gs"))
    pairs = pairs.join(ops.select("_op", "name", "pid", "tid"), on="_op")
    pairs = (
        pairs.sort(["_gap", pl.when(covers).then(pl.col("depth")).otherwise(-1), "overlap_ns", "start_ns", "end_ns", "name", "pid", "tid"],
                   descending=[False, True, True, False, False, False, False, False])
        .group_by("_gap", maintain_order=True).first()
    )
    top = pairs.select("_gap", host_op=pl.col("name"), host_op_ns=pl.col("overlap_ns"))
    counted = pairs if basis is None else pairs.join(basis.select("rank", "step"), on=["rank", "step"], how="semi")
    by_cause = (
        counted.group_by("cause", "name").agg(self_ns=pl.col("overlap_ns").sum())
        .filter(pl.col("self_ns") > 0)
        .sort(["cause", "self_ns", "name"], descending=[False, True, False])
        .group_by("cause", maintain_order=True).head(TOP_OPS_PER_CAUSE)
    )
    out = gaps.join(top, on="_gap", how="left").drop("_gap")
    return out, by_cause.cast(BY_CAUSE_SCHEMA)  # type: ignore[arg-type]
