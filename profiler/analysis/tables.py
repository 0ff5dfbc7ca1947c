"""Time per name: the report's top kernels and ops tables, and names short enough to print."""

from __future__ import annotations

import numpy as np
import polars as pl

# total_ns sums every instance (instances on several devices or threads at once add up);
# wall_ns is the time during which at least one instance ran, and the share of step time is
# that over the steps' time: never above 100 %, however many devices or threads ran it.
NAME_TABLE_SCHEMA = {"name": pl.String, "kind": pl.String, "count": pl.UInt32, "total_ns": pl.Int64, "mean_ns": pl.Float64, "max_ns": pl.Int64,
                     "wall_ns": pl.Int64, "share_of_step_time": pl.Float64}


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


def middle_name(name: str, width: int) -> str:
    """``short_name`` of ``name``, then shortened in the middle to ``width`` characters: the
    start (namespace, kernel family) and the end (tile sizes, variant) both tell kernels apart."""
    name = short_name(name, width=10**9)
    if len(name) <= width:
        return name
    if width < 5:
        return name[:width]
    head = (width - 1) * 2 // 3
    return name[:head] + "…" + name[len(name) - (width - 1 - head):]


PARTIAL_SCHEMA = {"name": pl.String, "kind": pl.String, "count": pl.UInt32, "total_ns": pl.Int64, "max_ns": pl.Int64, "wall_ns": pl.Int64}


def partial_names(slices: pl.LazyFrame, win_s: np.ndarray, win_e: np.ndarray) -> pl.DataFrame:
    """Per name of one rank's slices (name, kind, start_ns, dur_ns) that start inside the
    windows [``win_s``, ``win_e``) (sorted, not overlapping): count, total, max, and the
    wall time the name covers within them (the union of its instances, each clipped to its
    window's end), to merge across ranks."""
    windows = pl.LazyFrame({"_ws": np.asarray(win_s, dtype=np.int64), "_we": np.asarray(win_e, dtype=np.int64)}).sort("_ws")
    df = (
        slices.select("name", "kind", "start_ns", "dur_ns").sort("start_ns")
        .join_asof(windows, left_on="start_ns", right_on="_ws", strategy="backward")
        .filter(pl.col("start_ns") < pl.col("_we"))
        .with_columns(_code=pl.col("name").cast(pl.Categorical).to_physical().cast(pl.Int64))
        .collect()
    )
    if df.height == 0:
        return pl.DataFrame(schema=PARTIAL_SCHEMA)
    # Integer codes for names: sorting and summing by them is many times cheaper than by strings.
    codes = df["_code"].to_numpy()
    _, code = np.unique(codes, return_inverse=True)
    start = df["start_ns"].to_numpy()
    dur = df["dur_ns"].to_numpy()
    end = np.minimum(start + dur, df["_we"].to_numpy())
    # Union per name, incrementally: in start order, each instance adds what it reaches
    # beyond every earlier instance of its name (a running max, restarted per name by
    # offsetting each name's times above the previous name's).
    order = np.lexsort((start, code))
    c, s, e = code[order], start[order], end[order]
    lo = min(int(s.min()), int(e.min()))
    span = int(max(s.max(), e.max())) - lo + 1
    reach = np.maximum.accumulate((e - lo) + c * span) - c * span + lo
    prev = np.empty_like(reach)
    prev[0] = np.iinfo(np.int64).min
    prev[1:] = reach[:-1]
    prev[np.flatnonzero(np.diff(c)) + 1] = np.iinfo(np.int64).min  # first instance of each name
    added = np.maximum(e - np.maximum(s, prev), 0)
    n = int(code.max()) + 1
    first = np.full(n, -1, dtype=np.int64)
    first[code[::-1]] = np.arange(code.size - 1, -1, -1)  # the first row of each name, for its name and kind
    maxes = np.zeros(n, dtype=np.int64)
    np.maximum.at(maxes, code, dur)
    return pl.DataFrame({
        "name": df["name"].gather(first), "kind": df["kind"].gather(first),
        "count": np.bincount(code, minlength=n), "total_ns": np.bincount(code, weights=dur, minlength=n).astype(np.int64),
        "max_ns": maxes, "wall_ns": np.bincount(c, weights=added, minlength=n).astype(np.int64),
    }).cast(PARTIAL_SCHEMA)  # type: ignore[arg-type]


def merge_names(parts: list[pl.DataFrame], total_ns: int) -> pl.DataFrame:
    """``partial_names`` of several ranks as one table (``NAME_TABLE_SCHEMA``): every name,
    longest total first, ties by name; shares: each rank's wall time of the name, summed
    over ranks, of ``total_ns`` (every rank's step time)."""
    both = pl.concat(parts) if len(parts) > 1 else parts[0]
    if len(parts) > 1:
        both = both.group_by("name").agg(pl.col("kind").first(), pl.col("count").sum(), pl.col("total_ns").sum(), pl.col("max_ns").max(), pl.col("wall_ns").sum())
    return (
        both.with_columns(mean_ns=pl.col("total_ns") / pl.col("count"), share_of_step_time=pl.col("wall_ns") / max(total_ns, 1))
        .select(list(NAME_TABLE_SCHEMA))
        .sort(["total_ns", "name"], descending=[True, False])
        .cast(NAME_TABLE_SCHEMA)  # type: ignore[arg-type]
    )
