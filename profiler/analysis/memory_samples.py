"""Memory from per-step samples: the peaks and leaks of a device that has no allocator events
but was read at every step's end (light mode on CUDA, or full mode with ``profile_memory``
off; collectors/cuda_memory.py).

Tables in, tables out. The counters ``memory_allocated_bytes``, ``memory_reserved_bytes``,
``max_memory_allocated_bytes`` and ``max_memory_reserved_bytes`` (traces/counters.py) of one
(rank, device) are stamped at a step's end; each sample belongs to the step of its rank that
ended last at or before its time (``per_step``).

* **Peak** (``peaks``): the most of the per-step ``max_memory_allocated_bytes`` (the
  allocator's peak during the step, reset at each step's end), its step (the first to
  reach it) and that step's end as ``peak_time_ns`` (the peak lies somewhere in the step);
  ``peak_reserved_bytes``, the most of ``max_memory_reserved_bytes``. No op: nothing saw
  which one ran. Never ``relative``: the allocator's counts are absolute.
* **Leaks** (``fit``): ``memory_allocated_bytes`` at the end of each given step, fitted as
  allocator events are (``leaks.fit_levels``: the same slope, thresholds and growing share),
  within runs of consecutive steps; no step is left out at a run's start (a sample is the
  allocator's own total, not what a window saw allocated), and no op is named.

A device with allocator events keeps their figures (``exclude``): the samples are coarser.
"""

from __future__ import annotations

import polars as pl

from accelscope.analysis import leaks as LK
from accelscope.analysis.leaks import _windows
from accelscope.analysis.memory import GROUP, LATER, MEMORY_SCHEMA
from accelscope.traces import counters as K
from accelscope.verdicts import LEAK_MIN_CHANGES

SOURCE_EVENTS = "allocator events"
SOURCE_SAMPLES = "per-step samples"
_COLUMNS = {K.CUDA_ALLOCATED: "allocated_bytes", K.CUDA_RESERVED: "reserved_bytes", K.CUDA_MAX_ALLOCATED: "max_allocated_bytes",
            K.CUDA_MAX_RESERVED: "max_reserved_bytes"}
# per_step: one row per (rank, device, step) sampled; a figure not sampled is null.
PER_STEP_SCHEMA = {"rank": pl.Int32, "device": pl.String, "step": pl.Int64, "time_ns": pl.Int64, **{c: pl.Int64 for c in _COLUMNS.values()}}


def per_step(counters: pl.DataFrame, steps: pl.DataFrame, exclude: pl.DataFrame | None = None) -> pl.DataFrame:
    """The samples as one row per (rank, device, step) (PER_STEP_SCHEMA), for the devices not
    in ``exclude`` (rank, device: those with allocator events)."""
    rows = counters.filter(pl.col("name").is_in(list(_COLUMNS)) & pl.col("value").is_not_null())
    if exclude is not None and exclude.height and rows.height:
        rows = rows.with_columns(pl.col("rank").cast(pl.Int32)).join(exclude.select(pl.col("rank").cast(pl.Int32), "device").unique(), on=GROUP, how="anti")
    if rows.height == 0 or steps.height == 0:
        return pl.DataFrame(schema=PER_STEP_SCHEMA)
    wide = (
        rows.select(pl.col("rank").cast(pl.Int32), "device", "time_ns", pl.col("name").replace_strict(_COLUMNS), pl.col("value").cast(pl.Int64))
        .pivot(on="name", index=[*GROUP, "time_ns"], values="value", aggregate_function="last")
        .sort("time_ns")
    )
    wide = wide.with_columns(pl.lit(None, pl.Int64).alias(c) for c in _COLUMNS.values() if c not in wide.columns)
    ends = steps.select(pl.col("rank").cast(pl.Int32), pl.col("step").cast(pl.Int64), end_ns=(pl.col("start_ns") + pl.col("dur_ns")).cast(pl.Int64)).sort("end_ns")
    found = wide.join_asof(ends, left_on="time_ns", right_on="end_ns", by="rank", strategy="backward", check_sortedness=False)
    return (found.filter(pl.col("step").is_not_null()).select(list(PER_STEP_SCHEMA)).cast(PER_STEP_SCHEMA)
            .unique([*GROUP, "step"], keep="last", maintain_order=True).sort([*GROUP, "step"]))


def peaks(samples: pl.DataFrame) -> pl.DataFrame:
    """Per (rank, device) of ``per_step``'s table: the peak, its step and time (Report.memory's
    rows, their capacity null until ``memory.with_capacity`` adds it)."""
    peak = pl.coalesce("max_allocated_bytes", "allocated_bytes")
    at = peak.arg_max()
    return (
        samples.group_by(GROUP, maintain_order=True)
        .agg(
            peak_allocated_bytes=peak.max(),
            peak_reserved_bytes=pl.coalesce("max_reserved_bytes", "reserved_bytes").max(),
            peak_time_ns=pl.col("time_ns").get(at),
            peak_step=pl.col("step").get(at),
        )
        .with_columns(pl.lit(None, pl.String).alias("peak_op"), pl.lit(False).alias("relative"), *(pl.lit(None).alias(c) for c in LATER))
        .select(list(MEMORY_SCHEMA))
        .cast(MEMORY_SCHEMA)
        .sort(GROUP)
    )


def fit(samples: pl.DataFrame, steps: pl.DataFrame) -> pl.DataFrame:
    """``leaks.fit``'s table (FIT_SCHEMA) for the sampled devices, over ``steps`` (the steady
    steps: the samples were taken at every step)."""
    windows = _windows(steps).select("rank", "step", "_w", pl.lit(False).alias("_first"))
    level_rows = samples.join(windows, on=["rank", "step"]).select(*GROUP, "step", "_w", "_first", level_bytes="allocated_bytes")
    level_rows = level_rows.drop_nulls("level_bytes")
    if level_rows.height == 0:
        return pl.DataFrame(schema=LK.FIT_SCHEMA)
    return LK.fit_levels(level_rows, peaks(samples).select(*GROUP, "peak_allocated_bytes"))


def with_source(table: pl.DataFrame, source: str) -> pl.DataFrame:
    """``table`` (Report.memory or Report.memory_leaks rows) with ``source``: where its figures
    came from, SOURCE_EVENTS or SOURCE_SAMPLES."""
    return table.with_columns(source=pl.lit(source, pl.String))


def combine(from_events: pl.DataFrame, from_samples: pl.DataFrame) -> pl.DataFrame:
    """The rows of both sources, each with its ``source``, by (rank, device)."""
    return pl.concat([with_source(from_events, SOURCE_EVENTS), with_source(from_samples, SOURCE_SAMPLES)]).sort(GROUP)


def leaks(fitted: pl.DataFrame, from_events: pl.DataFrame, why_unknown: str | None) -> tuple[pl.DataFrame, str | None]:
    """(Report.memory_leaks, why leaks cannot be known or None) once the samples' ``fitted``
    (``fit``) join the allocator events' leaks and their reason (analyzer._leaks): leaks are
    known when either source has enough changes between steps."""
    found = combine(from_events, LK.leaks(fitted, pl.DataFrame(schema={"rank": pl.Int32, "device": pl.String, "op": pl.String,
                                                                        "op_never_freed_bytes": pl.Int64})))
    if fitted.height == 0 or why_unknown is None:
        return found, why_unknown
    changes = fitted["changes"].fill_null(0)
    if (changes >= LEAK_MIN_CHANGES).any():
        return found, None
    return found, (f"memory was sampled over fewer than {LEAK_MIN_CHANGES} changes from one steady step to the next "
                   f"(at most {changes.max()}): too few to tell growth from noise")
