"""Time per name: the report's top kernels and ops tables, and names short enough to print."""

from __future__ import annotations

import polars as pl

NAME_TABLE_SCHEMA = {"name": pl.String, "kind": pl.String, "count": pl.UInt32, "total_ns": pl.Int64, "mean_ns": pl.Float64, "max_ns": pl.Int64, "share_of_step_time": pl.Float64}


def short_name(name: str, width: int = 60) -> str:
    """A kernel or op name short enough for a table: no ``void``, no trailing argument list."""
    if name.startswith("void "):
        name = name[5:]
    if name.endswith(")"):
        depth = 0
        for i in range(len(name) - 1, -1, -1):  # the "(" that opens the final argument list
            depth += {")": 1, "(": -1}.get(name[i], 0)
            if depth == 0:
                if i > 0:
                    name = name[:i]
                break
    return name if len(name) <= width else name[: width - 1] + "…"


PARTIAL_SCHEMA = {"name": pl.String, "kind": pl.String, "count": pl.UInt32, "total_ns": pl.Int64, "max_ns": pl.Int64}


def partial_names(slices: pl.LazyFrame) -> pl.DataFrame:
    """Per name of some slices (name, kind, dur_ns): count, total and max, to merge across ranks."""
    return (
        slices.group_by("name")
        .agg(pl.col("kind").first(), pl.len().alias("count"), pl.col("dur_ns").sum().alias("total_ns"), pl.col("dur_ns").max().alias("max_ns"))
        .collect()
        .cast(PARTIAL_SCHEMA)  # type: ignore[arg-type]
    )


def merge_names(parts: list[pl.DataFrame], total_ns: int) -> pl.DataFrame:
    """``partial_names`` of several ranks as one table (``NAME_TABLE_SCHEMA``): every name,
    longest total first, ties by name; shares of ``total_ns``."""
    both = pl.concat(parts) if len(parts) > 1 else parts[0]
    if len(parts) > 1:
        both = both.group_by("name").agg(pl.col("kind").first(), pl.col("count").sum(), pl.col("total_ns").sum(), pl.col("max_ns").max())
    return (
        both.with_columns(mean_ns=pl.col("total_ns") / pl.col("count"), share_of_step_time=pl.col("total_ns") / max(total_ns, 1))
        .select(list(NAME_TABLE_SCHEMA))
        .sort(["total_ns", "name"], descending=[True, False])
        .cast(NAME_TABLE_SCHEMA)  # type: ignore[arg-type]
    )
