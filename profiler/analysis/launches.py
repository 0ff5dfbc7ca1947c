"""How work reached the device: launch latency, queue depth and stream overlap, tables in/out.

Over an events table of one or more ranks (traces/schema.py):

* ``launch_latency``: for each device slice (kernel, memcpy, memset), the host runtime call
  that launched it (same rank, same correlation id) and the time from that call's start to
  the device start;
* ``queue_depth``: per stream, how many device operations were launched but not finished,
  as a step function (one row per change point);
* ``stream_overlap``: per device, how long compute, copy and communication ran at the same
  time (intersections of unions, never sums of durations);
* ``Launches``: the figures above summarised per device and per stream (the report's
  launch section; ``summary`` gives its JSON form for any events table).

Everything is columnar (Polars joins, group-bys and cumulative sums; numpy interval
arithmetic); the only Python loops are over (rank, device) groups. docs/analysis.md
("Scheduling") states every definition.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from accelscope.analysis import busy
from accelscope.analysis.breakdown import step_windows
from accelscope.analysis.busy import COMM, COMPUTE, COPY, OVERLAP_PAIRS
from accelscope.analysis.intervals import union
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
# Columns match_launches needs of device slices and of runtime (launch) slices.
DEVICE_COLUMNS = ("rank", "device", "stream", "name", "kind", "correlation_id", "start_ns", "dur_ns")
RUNTIME_COLUMNS = ("rank", "correlation_id", "start_ns", "dur_ns")


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


def runtime_slices(ev: pl.DataFrame) -> pl.DataFrame:
    """Host runtime calls that carry a correlation id: the launches device work can match."""
    return ev.filter((pl.col("kind") == S.RUNTIME) & pl.col("correlation_id").is_not_null())


def match_launches(device: pl.DataFrame, runtime: pl.DataFrame) -> pl.DataFrame:
    """Every device slice (``DEVICE_COLUMNS``) with its launching runtime call's start/end
    (null when none matched), in the order given, plus ``end_ns``.

    Match on (rank, correlation_id) among ``runtime`` (``RUNTIME_COLUMNS``); among several
    runtime slices with the id, the latest one starting at or before the device start,
    else (clock skew) the earliest after it.
    """
    dev = device.select(DEVICE_COLUMNS).with_row_index("_row").with_columns(end_ns=pl.col("start_ns") + pl.col("dur_ns")).sort("start_ns")
    rt = runtime.select(
        "rank",
        "correlation_id",
        pl.col("start_ns").alias("launch_start_ns"),
        (pl.col("start_ns") + pl.col("dur_ns")).alias("launch_end_ns"),
    ).sort("launch_start_ns")
    by = ["rank", "correlation_id"]
    back = dev.join_asof(rt, left_on="start_ns", right_on="launch_start_ns", by=by, strategy="backward", check_sortedness=False)
    missed = back.filter(pl.col("launch_start_ns").is_null() & pl.col("correlation_id").is_not_null())
    if missed.height:
        fwd = missed.drop("launch_start_ns", "launch_end_ns").join_asof(
            rt, left_on="start_ns", right_on="launch_start_ns", by=by, strategy="forward", check_sortedness=False
        )
        back = pl.concat([back.join(missed.select("_row"), on="_row", how="anti"), fwd], how="vertical")
    return back.sort("_row").drop("_row")


def _matched(ev: pl.DataFrame) -> pl.DataFrame:
    """``match_launches`` over a checked events table."""
    return match_launches(_device_slices(ev), runtime_slices(ev))


def launch_latency(events: pl.DataFrame) -> pl.DataFrame:
    """One row per device slice launched by a runtime call of the same rank (same correlation id).

    ``latency_ns`` = device start - runtime call start: the launch overhead plus the time
    the operation waited behind earlier work on its stream (large when the queue is deep).
    ``end_ns`` is the device end. Sorted by rank, device, stream, start.
    """
    return _latency(_matched(_checked(events)))


def _latency(matched: pl.DataFrame) -> pl.DataFrame:
    m = matched.filter(pl.col("launch_start_ns").is_not_null())
    return (
        m.with_columns(latency_ns=pl.col("start_ns") - pl.col("launch_start_ns"))
        .select(list(LAUNCH_SCHEMA))
        .cast(LAUNCH_SCHEMA)
        .sort("rank", "device", "stream", "start_ns", "correlation_id")
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
    return _depth_and_streams(m)[0]


def _depth_and_streams(m: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``queue_depth`` from matched launches, and per stream its maximum and time-weighted
    mean over its active span (``PER_STREAM_SCHEMA``). Per stream: +1 at each entry, -1 at
    each end, summed per distinct time (numpy: a stream's sweep is one sort)."""
    if m.height == 0:
        return pl.DataFrame(schema=DEPTH_SCHEMA), pl.DataFrame(schema=PER_STREAM_SCHEMA)
    keys = ["rank", "device", "stream"]
    enter = np.minimum(m["launch_start_ns"].fill_null(m["start_ns"]).to_numpy(), m["start_ns"].to_numpy())
    end = m["end_ns"].to_numpy()
    groups = m.select(keys).with_row_index("_i").group_by(keys).agg(pl.col("_i")).sort(keys)
    frames, rows = [], []
    for rank, device, stream, members in groups.iter_rows():  # one per stream
        i = np.asarray(members, dtype=np.int64)
        t = np.concatenate((enter[i], end[i]))
        delta = np.concatenate((np.ones(i.size, np.int64), np.full(i.size, -1, np.int64)))
        order = np.argsort(t, kind="stable")
        t, delta = t[order], delta[order]
        first = np.flatnonzero(np.r_[True, t[1:] != t[:-1]])
        summed = np.add.reduceat(delta, first)
        keep = summed != 0
        times, depth = t[first][keep], np.cumsum(summed[keep])
        n = times.size
        frames.append(pl.DataFrame({"rank": np.full(n, rank, np.int32), "device": [device] * n, "stream": [stream] * n, "time_ns": times, "depth": depth}, schema=DEPTH_SCHEMA))
        span = int(times[-1] - times[0]) if n else 0
        area = int((depth[:-1] * np.diff(times)).sum()) if n > 1 else 0
        rows.append({"rank": rank, "device": device, "stream": stream, "max_depth": int(depth.max()) if n else 0, "mean_depth": area / span if span else 0.0, "span_ns": span})
    return pl.concat(frames), pl.DataFrame(rows, schema=PER_STREAM_SCHEMA)


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
    return busy.stream_overlap(_device_slices(ev), _windows_by_rank(windows, ev))


def _us(x: Any) -> float | None:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return None
    return round(float(x) / 1000.0, 3)


def _ratio(x: Any) -> float | None:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return None
    return round(float(x), 4)


PER_DEVICE_SCHEMA = {
    "rank": pl.Int32, "device": pl.String, "device_ops": pl.UInt32, "matched": pl.UInt32,
    "median_ns": pl.Float64, "p90_ns": pl.Float64, "p99_ns": pl.Float64, "max_ns": pl.Int64,
}
PER_STREAM_SCHEMA = {"rank": pl.Int32, "device": pl.String, "stream": pl.Int64, "max_depth": pl.Int64, "mean_depth": pl.Float64, "span_ns": pl.Int64}


@dataclass
class Launches:
    """The report's launch section: every matched launch and the queue depth as tables (the
    dashboard draws them), and their summaries per device and per stream.

    ``latency``: ``launch_latency`` rows; ``depth``: ``queue_depth`` rows; ``per_device``:
    device operations, how many were matched to a launch, and latency percentiles (linear
    interpolation); ``per_stream``: maximum and time-weighted mean queue depth over the
    stream's active span; ``overlap``: ``stream_overlap`` over the analysed steps;
    ``median_ns``/``p90_ns``: over every matched launch of the run.
    """

    latency: pl.DataFrame
    depth: pl.DataFrame
    per_device: pl.DataFrame
    per_stream: pl.DataFrame
    overlap: pl.DataFrame
    median_ns: float | None
    p90_ns: float | None

    def to_dict(self) -> dict[str, Any]:
        """JSON form, times in µs (``summary`` plus the run-wide percentiles)."""
        return {
            "median_us": _us(self.median_ns),
            "p90_us": _us(self.p90_ns),
            "latency": [
                {
                    "rank": r["rank"],
                    "device": r["device"],
                    "device_ops": r["device_ops"],
                    "matched_share": _ratio(r["matched"] / r["device_ops"] if r["device_ops"] else None),
                    "median_us": _us(r["median_ns"]),
                    "p90_us": _us(r["p90_ns"]),
                    "p99_us": _us(r["p99_ns"]),
                    "max_us": _us(r["max_ns"]),
                }
                for r in self.per_device.iter_rows(named=True)
            ],
            "queue_depth": [
                {"rank": r["rank"], "device": r["device"], "stream": r["stream"], "max": int(r["max_depth"]), "mean": _ratio(r["mean_depth"]), "span_us": _us(r["span_ns"])}
                for r in self.per_stream.iter_rows(named=True)
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
                for r in self.overlap.iter_rows(named=True)
            ],
        }


def summarise(matched: pl.DataFrame, overlap: pl.DataFrame) -> Launches:
    """The launch section from ``match_launches`` rows (every device slice, launch or not) and an overlap table."""
    latency = _latency(matched)
    per_device = (
        matched.group_by("rank", "device")
        .agg(pl.len().alias("device_ops"))
        .join(
            latency.group_by("rank", "device").agg(
                pl.len().alias("matched"),
                *[pl.col("latency_ns").quantile(q, interpolation="linear").alias(n) for q, n in ((0.5, "median_ns"), (0.9, "p90_ns"), (0.99, "p99_ns"))],
                pl.col("latency_ns").max().alias("max_ns"),
            ),
            on=["rank", "device"],
            how="left",
        )
        .with_columns(pl.col("matched").fill_null(0))
        .select(list(PER_DEVICE_SCHEMA))
        .sort("rank", "device")
        .cast(PER_DEVICE_SCHEMA)  # type: ignore[arg-type]
    )
    depth, per_stream = _depth_and_streams(matched)
    values = latency["latency_ns"]
    median = float(values.quantile(0.5, interpolation="linear")) if values.len() else None
    p90 = float(values.quantile(0.9, interpolation="linear")) if values.len() else None
    return Launches(latency, depth, per_device, per_stream, overlap, median, p90)


def launches(events: pl.DataFrame, windows: pl.DataFrame | str | None = None) -> Launches:
    """The launch section of any events table; ``windows`` applies to the overlap only."""
    ev = _checked(events)
    return summarise(_matched(ev), stream_overlap(ev, windows))


def summary(events: pl.DataFrame, windows: pl.DataFrame | str | None = None) -> dict[str, Any]:
    """Launch latency percentiles, queue depth per stream and overlap shares, in µs, JSON-ready.

    Mean queue depth is time-weighted over the stream's active span (first launch to last
    finish). ``windows`` applies to the overlap only.
    """
    doc = launches(events, windows).to_dict()
    return {k: doc[k] for k in ("latency", "queue_depth", "overlap")}
