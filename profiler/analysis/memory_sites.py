"""Allocation sites: the code that allocated, named from the call stacks the allocator
recorded (the memory table's ``stack``: PyTorch memory snapshots), for runs whose allocator
events no host op holds (a snapshot records no ops).

A row's site (``site``) is the innermost Python frame of its stack outside torch's own
package (``.../torch/...``), as ``file.py:42 function`` (the file's name without its
directory); a stack of C++ frames only (autograd's backward thread) is named by its
autograd node or ATen op. Memory by op (memory_ops.py) then has one row per site: *self*
for the events whose site it is, *total* for the events with it anywhere on their stack
(each event once per name), as host ops nest.
"""

from __future__ import annotations

import polars as pl

GROUP = ["rank", "device"]
_TORCH_FRAME = r"[/\\]torch[/\\]"  # a frame in torch's own package
_PY_FRAME = r"\.py:\d+ "  # a Python frame (C++ frames name a .cpp file, or none)


def _short(frame: pl.Expr) -> pl.Expr:
    """``/path/to/train.py:42 forward`` -> ``train.py:42 forward``."""
    return frame.str.replace(r"^[^ ]*[/\\]", "")


def site(stack: pl.Expr) -> pl.Expr:
    """The site of each stack (null for a null stack): its innermost Python frame outside
    torch; for a stack of C++ frames only (autograd's backward thread), the autograd node
    (``SubBackward0``), else the ATen op (``aten::neg``); else its innermost frame."""
    frames = stack.str.split("\n")
    own = frames.list.eval(pl.element().filter(pl.element().str.contains(_PY_FRAME) & ~pl.element().str.contains(_TORCH_FRAME))).list.first()
    node = stack.str.extract(r"autograd::generated::(\w+)::apply")
    op = pl.lit("aten::") + stack.str.extract(r"at::_ops::(\w+)::call")
    return pl.coalesce(_short(own), node, op, _short(frames.list.first()))


def table(memory: pl.DataFrame, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """Memory by op (``schema``: memory_ops.MEMORY_OPS_SCHEMA) with sites for ops: empty
    where the events carry no stacks."""
    if "stack" not in memory.columns:
        return pl.DataFrame(schema=schema)
    rows = memory.filter(pl.col("stack").is_not_null()).select(pl.col("rank").cast(pl.Int32), "device", "bytes", "stack").with_row_index("_id")
    if rows.height == 0:
        return pl.DataFrame(schema=schema)
    allocated = pl.col("bytes").clip(lower_bound=0)
    own_rows = rows.with_columns(name=site(pl.col("stack")))
    own = own_rows.group_by([*GROUP, "name"]).agg(
        allocations=(pl.col("bytes") > 0).sum(), allocated_bytes=allocated.sum(), self_increase_bytes=pl.col("bytes").sum())
    # Under every Python frame of the stack, and under its own site (once each).
    python = pl.col("stack").str.split("\n").list.eval(_short(pl.element().filter(pl.element().str.contains(_PY_FRAME))))
    frames = own_rows.with_columns(name=python.list.concat(pl.concat_list("name"))).explode("name").unique(["_id", "name"])
    under = frames.group_by([*GROUP, "name"]).agg(total_allocated_bytes=allocated.sum(), total_increase_bytes=pl.col("bytes").sum())
    own_cols = ["allocations", "allocated_bytes", "self_increase_bytes"]
    return (under.join(own, on=[*GROUP, "name"], how="left").with_columns(pl.col(own_cols).fill_null(0))
            .select(list(schema)).cast(schema))
