"""How the device was scheduled: launch latency, queue depth and stream overlap, tables in/out.

Over an events table of one or more ranks (traces/schema.py):

* ``launch_latency``: for each device slice (kernel, memcpy, memset), the host runtime call
  that launched it (same rank, same correlation id) and the time from that call's start to
  the device start;
* ``queue_depth``: per stream, how many device operations were launched but not finished,
  as a step function (one row per change point);
* ``stream_overlap``: per device, how long compute, copy and communication ran at the same
  time (intersections of unions, never sums of durations);
* ``summary``: the figures above in µs, as a JSON-friendly dict.

Everything is columnar (Polars joins, group-bys and cumulative sums; numpy interval
arithmetic); the only Python loops are over (rank, device) groups. docs/analysis.md
("Scheduling") states every definition.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import polars as pl

from accelscope import causes as C
from accelscope.breakdown import step_windows
from accelscope.intervals import covered_within, union
from accelscope.traces import schema as S

REQUIRED_COLUMNS = ("start_ns", "dur_ns", "kind", "name", "device", "stream", "rank", "correlation_id")
_DTYPES = {
    "start_ns": pl.Int64,
    "dur_ns": pl.Int64,
    "kind": pl.String,
    "name": pl.String,
    "device": pl.String,
    "stream": pl.Int64,
    "rank": pl.Int32,
    "correlation_id": pl.Int64,
}

COMPUTE = "compute"
COPY = "copy"
COMM = "comm"
# Pairs reported by stream_overlap, as (first, second) classes.
OVERLAP_PAIRS = ((COMPUTE, COPY), (COMPUTE, COMM), (COPY, COMM))

LAUNCH_SCHEMA = {
    "rank": pl.Int32,
    "device": pl.String,
    "stream": pl.Int64,
    "name": pl.String,
    "kind": pl.String,
    "correlation_id": pl.Int64,
    "launch_start_ns": pl.Int64,
    "launch_end_ns": pl.Int64,
    "start_ns": pl.Int64,
    "end_ns": pl.Int64,
    "latency_ns": pl.Int64,
}
DEPTH_SCHEMA = {"rank": pl.Int32, "device": pl.String, "stream": pl.Int64, "time_ns": pl.Int64, "depth": pl.Int64}
OVERLAP_SCHEMA = {
    "rank": pl.Int32,
    "device": pl.String,
    "span_ns": pl.Int64,
    "compute_ns": pl.Int64,
    "copy_ns": pl.Int64,
    "comm_ns": pl.Int64,
    **{f"{a}_{b}_overlap_ns": pl.Int64 for a, b in OVERLAP_PAIRS},
    **{f"{a}_{b}_share": pl.Float64 for a, b in OVERLAP_PAIRS},
}


def _checked(events: pl.DataFrame) -> pl.DataFrame:
    """The columns this module needs, with the schema's dtypes; ValueError if any is missing."""
    if not isinstance(events, pl.DataFrame):
        raise ValueError(f"events must be a polars DataFrame, got {type(events).__name__}")
    missing = [c for c in REQUIRED_COLUMNS if c not in events.columns]
    if missing:
        raise ValueError(f"events table lacks column(s) {', '.join(missing)} (see traces/schema.py)")
    try:
        out = events.select([pl.col(c).cast(t) for c, t in _DTYPES.items()])
    except pl.exceptions.InvalidOperationError as exc:
        raise ValueError(f"events table has a column of the wrong type: {exc}") from None
    if out.height and (out["dur_ns"] < 0).any():
        raise ValueError("events table has negative durations (dur_ns < 0)")
    return out


def _device_slices(ev: pl.DataFrame) -> pl.DataFrame:
    return ev.filter(pl.col("kind").is_in(list(S.DEVICE_KINDS)) & (pl.col("device") != "cpu"))


def _matched(ev: pl.DataFrame) -> pl.DataFrame:
    """Every device slice with its launching runtime call's start/end (null when none matched).

    Match on (rank, correlation_id); among several runtime slices with the id, the latest
    one starting at or before the device start, else (clock skew) the earliest after it.
    """
    dev = (
        _device_slices(ev)
        .with_row_index("_row")
        .with_columns(end_ns=pl.col("start_ns") + pl.col("dur_ns"))
        .sort("start_ns")
    )
    rt = (
        ev.filter((pl.col("kind") == S.RUNTIME) & pl.col("correlation_id").is_not_null())
        .select(
            "rank",
            "correlation_id",
            pl.col("start_ns").alias("launch_start_ns"),
            (pl.col("start_ns") + pl.col("dur_ns")).alias("launch_end_ns"),
        )
        .sort("launch_start_ns")
    )
    by = ["rank", "correlation_id"]
    back = dev.join_asof(rt, left_on="start_ns", right_on="launch_start_ns", by=by, strategy="backward", check_sortedness=False)
    missed = back.filter(pl.col("launch_start_ns").is_null() & pl.col("correlation_id").is_not_null())
    if missed.height:
        fwd = missed.drop("launch_start_ns", "launch_end_ns").join_asof(
            rt, left_on="start_ns", right_on="launch_start_ns", by=by, strategy="forward", check_sortedness=False
        )
        back = pl.concat([back.join(missed.select("_row"), on="_row", how="anti"), fwd], how="vertical")
    return back.sort("_row").drop("_row")


def launch_latency(events: pl.DataFrame) -> pl.DataFrame:
    """One row per device slice launched by a runtime call of the same rank (same correlation id).

    ``latency_ns`` = device start - runtime call start: the launch overhead plus the time
    the operation waited behind earlier work on its stream (large when the queue is deep).
    ``end_ns`` is the device end. Sorted by rank, device, stream, start.
    """
    return _latency(_matched(_checked(events)))


def launch_latency_and_queue_depth(events: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``(launch_latency(events), queue_depth(events))``, matching launches to device work
    once for both (the matching is most of either's time)."""
    m = _matched(_checked(events))
    return _latency(m), _depth(m)


def _latency(matched: pl.DataFrame) -> pl.DataFrame:
    m = matched.filter(pl.col("launch_start_ns").is_not_null())
    return (
        m.with_columns(latency_ns=pl.col("start_ns") - pl.col("launch_start_ns"))
        .select(list(LAUNCH_SCHEMA))
        .cast(LAUNCH_SCHEMA)
        .sort("start_ns", "correlation_id")
        .sort("rank", "device", "stream", maintain_order=True)
    )


def queue_depth(events: pl.DataFrame) -> pl.DataFrame:
    """Per (rank, device, stream): operations launched but not finished, as a step function.

    +1 at the start of the launching runtime call (never later than the device start: a
    device slice whose device start precedes it, or that has no matched launch, counts from
    its own start), -1 at the device end. One row per change point, sorted; ``depth`` is
    the value from ``time_ns`` until the next row. Every series ends at 0.
    """
    return _depth(_matched(_checked(events)))


def _depth(m: pl.DataFrame) -> pl.DataFrame:
    if m.height == 0:
        return pl.DataFrame(schema=DEPTH_SCHEMA)
    keys = ["rank", "device", "stream"]
    enter = pl.min_horizontal(pl.col("launch_start_ns").fill_null(pl.col("start_ns")), pl.col("start_ns"))
    deltas = pl.concat(
        [
            m.select(*keys, enter.alias("time_ns"), pl.lit(1, dtype=pl.Int64).alias("delta")),
            m.select(*keys, pl.col("end_ns").alias("time_ns"), pl.lit(-1, dtype=pl.Int64).alias("delta")),
        ]
    )
    return (
        deltas.group_by(*keys, "time_ns")
        .agg(pl.col("delta").sum())
        .filter(pl.col("delta") != 0)
        # A stable sort on the keys after one on time: much cheaper than one multi-column sort with strings.
        .sort("time_ns")
        .sort(*keys, maintain_order=True)
        .with_columns(depth=pl.col("delta").cum_sum().over(keys))
        .select(list(DEPTH_SCHEMA))
        .cast(DEPTH_SCHEMA)
    )


def _windows_by_rank(windows: pl.DataFrame | str | None, ev: pl.DataFrame) -> dict[int | None, tuple[np.ndarray, np.ndarray]] | None:
    """Merged (sorted, disjoint) windows per rank; key None applies to every rank."""
    if windows is None:
        return None
    if isinstance(windows, str):
        if windows != "steps":
            raise ValueError(f"windows must be a DataFrame, None or 'steps', got {windows!r}")
        out: dict[int | None, tuple[np.ndarray, np.ndarray]] = {}
        for (rank,), g in ev.group_by(["rank"], maintain_order=True):
            w, _ = step_windows(g)
            out[int(rank)] = union(w["start_ns"].to_numpy(), w["end_ns"].to_numpy())
        return out
    if not isinstance(windows, pl.DataFrame):
        raise ValueError(f"windows must be a DataFrame with start_ns and end_ns, got {type(windows).__name__}")
    missing = [c for c in ("start_ns", "end_ns") if c not in windows.columns]
    if missing:
        raise ValueError(f"windows lacks column(s) {', '.join(missing)}")
    if windows["start_ns"].null_count() or windows["end_ns"].null_count():
        raise ValueError("windows has null start_ns/end_ns")
    if (windows["end_ns"] < windows["start_ns"]).any():
        raise ValueError("windows has end_ns < start_ns")
    if "rank" not in windows.columns:
        return {None: union(windows["start_ns"].to_numpy(), windows["end_ns"].to_numpy())}
    return {
        int(rank): union(g["start_ns"].to_numpy(), g["end_ns"].to_numpy())
        for (rank,), g in windows.group_by(["rank"], maintain_order=True)
    }


def _covered_ns(s: np.ndarray, e: np.ndarray, win: tuple[np.ndarray, np.ndarray] | None) -> int:
    """Length of the union of [s, e), inside the merged windows when given."""
    if win is None:
        us, ue = union(s, e)
        return int((ue - us).sum())
    return int(covered_within(s, e, win[0], win[1]).sum())


def _share(overlap: int, a: int, b: int) -> float | None:
    smaller = min(a, b)
    return overlap / smaller if smaller > 0 else None


def stream_overlap(events: pl.DataFrame, windows: pl.DataFrame | str | None = None) -> pl.DataFrame:
    """Per (rank, device): time in compute, copy and communication, and how much they overlap.

    compute = kernels that are not communication (``causes.is_comm_kernel``), copy = memcpy
    and memset, comm = communication kernels. ``*_ns`` are unions; ``a_b_overlap_ns`` is the
    length of union(a) ∩ union(b); ``a_b_share`` = overlap / the smaller of the two (null
    when either is 0). ``windows``: a DataFrame with start_ns, end_ns (and optionally rank)
    or ``"steps"`` (each rank's step windows) restricts everything to those windows
    (overlapping windows are merged first); ``span_ns`` is the time considered.
    """
    ev = _checked(events)
    wins = _windows_by_rank(windows, ev)
    dev = _device_slices(ev).with_columns(
        end_ns=pl.col("start_ns") + pl.col("dur_ns"),
        cls=pl.when(pl.col("kind") != S.KERNEL).then(pl.lit(COPY)).when(C.is_comm_kernel()).then(pl.lit(COMM)).otherwise(pl.lit(COMPUTE)),
    )
    rows = []
    for (rank, device), g in dev.group_by(["rank", "device"], maintain_order=True):
        if wins is None:
            win = None
            span = int(g["end_ns"].max() - g["start_ns"].min())
        else:
            win = wins.get(int(rank), wins.get(None))
            if win is None:  # no window for this rank: nothing of it is inside the windows
                win = (np.empty(0, np.int64), np.empty(0, np.int64))
            span = int((win[1] - win[0]).sum())
        parts = g.partition_by("cls", as_dict=True)
        empty = g.clear()
        iv = {c: (parts.get((c,), empty)["start_ns"].to_numpy(), parts.get((c,), empty)["end_ns"].to_numpy()) for c in (COMPUTE, COPY, COMM)}
        length = {c: _covered_ns(*iv[c], win) for c in iv}
        row: dict[str, Any] = {"rank": rank, "device": device, "span_ns": span, **{f"{c}_ns": length[c] for c in (COMPUTE, COPY, COMM)}}
        for a, b in OVERLAP_PAIRS:
            both = _covered_ns(np.concatenate((iv[a][0], iv[b][0])), np.concatenate((iv[a][1], iv[b][1])), win)
            ov = length[a] + length[b] - both  # |A ∩ B| = |A| + |B| - |A ∪ B|
            row[f"{a}_{b}_overlap_ns"] = ov
            row[f"{a}_{b}_share"] = _share(ov, length[a], length[b])
        rows.append(row)
    return pl.DataFrame(rows, schema=OVERLAP_SCHEMA).sort("rank", "device")


def _us(x: Any) -> float | None:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return None
    return round(float(x) / 1000.0, 3)


def _ratio(x: Any) -> float | None:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return None
    return round(float(x), 4)


def summary(events: pl.DataFrame, windows: pl.DataFrame | str | None = None) -> dict[str, Any]:
    """Launch latency percentiles, queue depth per stream and overlap shares, in µs, JSON-ready.

    Mean queue depth is time-weighted over the stream's active span (first launch to last
    finish). ``windows`` applies to the overlap only.
    """
    ev = _checked(events)
    m = _matched(ev)
    lat = m.with_columns(latency_ns=pl.col("start_ns") - pl.col("launch_start_ns"))
    lat_rows = (
        lat.group_by("rank", "device")
        .agg(
            pl.len().alias("device_ops"),
            pl.col("latency_ns").count().alias("matched"),
            *[pl.col("latency_ns").quantile(q, interpolation="linear").alias(n) for q, n in ((0.5, "median"), (0.9, "p90"), (0.99, "p99"))],
            pl.col("latency_ns").max().alias("max"),
        )
        .sort("rank", "device")
        .to_dicts()
    )
    depth = queue_depth(ev)
    keys = ["rank", "device", "stream"]
    depth_rows = (
        depth.with_columns(held_ns=(pl.col("time_ns").shift(-1).over(keys) - pl.col("time_ns")).fill_null(0))
        .group_by(keys)
        .agg(
            pl.col("depth").max().alias("max"),
            (pl.col("depth") * pl.col("held_ns")).sum().alias("area"),
            (pl.col("time_ns").max() - pl.col("time_ns").min()).alias("span_ns"),
        )
        .sort(keys)
        .to_dicts()
    )
    overlap = stream_overlap(ev, windows)
    return {
        "launch_latency_us": [
            {
                "rank": r["rank"],
                "device": r["device"],
                "device_ops": r["device_ops"],
                "matched_share": _ratio(r["matched"] / r["device_ops"] if r["device_ops"] else None),
                "median": _us(r["median"]),
                "p90": _us(r["p90"]),
                "p99": _us(r["p99"]),
                "max": _us(r["max"]),
            }
            for r in lat_rows
        ],
        "queue_depth": [
            {
                "rank": r["rank"],
                "device": r["device"],
                "stream": r["stream"],
                "max": int(r["max"]),
                "mean": _ratio(r["area"] / r["span_ns"] if r["span_ns"] else 0.0),
                "span_us": _us(r["span_ns"]),
            }
            for r in depth_rows
        ],
        "overlap": [
            {
                "rank": r["rank"],
                "device": r["device"],
                "span_us": _us(r["span_ns"]),
                **{f"{c}_us": _us(r[f"{c}_ns"]) for c in (COMPUTE, COPY, COMM)},
                **{f"{a}_{b}_overlap_us": _us(r[f"{a}_{b}_overlap_ns"]) for a, b in OVERLAP_PAIRS},
                **{f"{a}_{b}_share": _ratio(r[f"{a}_{b}_share"]) for a, b in OVERLAP_PAIRS},
            }
            for r in overlap.to_dicts()
        ],
    }
