"""The per-rank work of an analysis, as tasks: each reads one rank's events and returns what
the cross-rank step needs, in threads here or on a Dask cluster (``analyze(run, cluster=)``).

Two passes per rank of a multi-rank run: ``collective_pass`` (its step windows and the host
launches of its collectives' kernels, for matching collectives across ranks once), then
``rank_pass`` (``breakdown.analyze_rank`` with the waits that matching found, and the small
tables the report adds). On a cluster a task opens the run by its path, so the run must be on
storage the workers can read, and reads only its rank (``Run.rank_slices``).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from accelscope.analysis.breakdown import RankResult, analyze_rank, step_windows
from accelscope.analysis.capture import capture_figures
from accelscope.analysis.gap_ops import driver_ops
from accelscope.traces import schema as S
from accelscope.traces.run import Run

# Host calls that put work on a device: a trace with these and no device work did not capture the device side.
DEVICE_LAUNCH_NAME = r"^(cuda|cu|hip|hipModule)(LaunchKernel|LaunchKernelExC|LaunchCooperativeKernel|GraphLaunch|MemcpyAsync|MemsetAsync)(_v\d+)?$"


@dataclass
class RankPass:
    """What one rank's events give besides ``analyze_rank``'s result."""

    result: RankResult
    driver_ops: pl.DataFrame
    capture: pl.DataFrame | None
    device_launches: int  # host calls that put work on a device (for a trace without device work)
    negative: int  # slices with negative durations, left out
    first_ns: int | None  # the rank's first start and last end (of every slice, as read)
    last_ns: int | None


def collective_pass(ev: pl.DataFrame, rank: int, collective_ids: pl.Series) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """A rank's step windows, and the runtime calls that launched its collectives' kernels."""
    ev = ev.filter(pl.col("dur_ns") >= 0) if (ev["dur_ns"] < 0).any() else ev
    windows = step_windows(ev)[0].with_columns(rank=pl.lit(rank, dtype=pl.Int32))
    launches = ev.filter((pl.col("kind") == S.RUNTIME) & pl.col("correlation_id").is_in(collective_ids.implode())) if collective_ids.len() else None
    return windows, launches


def rank_pass(ev: pl.DataFrame, rank: int, waits: tuple[np.ndarray, np.ndarray] | None) -> RankPass:
    """``analyze_rank`` of one rank's events (``waits``: its time waiting for other ranks
    inside collectives), with the host ops that drive its devices and its capture figures."""
    first = int(ev["start_ns"].min()) if ev.height else None
    last = int((ev["start_ns"] + ev["dur_ns"]).max()) if ev.height else None
    negative = int((ev["dur_ns"] < 0).sum())
    if negative:
        ev = ev.filter(pl.col("dur_ns") >= 0)
    result = analyze_rank(ev, rank, waits)
    capture = capture_figures(ev) if result.has_device else None
    launches = device_launches(ev) if not result.has_device else 0  # only a rank without device work needs them
    return RankPass(result, driver_ops(ev), capture, launches, negative, first, last)


def device_launches(events: pl.DataFrame) -> int:
    """Host calls that put work on a device (kernel launches, async copies)."""
    return events.filter((pl.col("kind") == S.RUNTIME) & pl.col("name").str.contains(DEVICE_LAUNCH_NAME)).height


def _on_worker(fn: Callable[..., Any], run_path: str, rank: int, *args: Any) -> Any:
    """A cluster task: ``fn`` of one rank's events, read by the worker from the run at ``run_path``."""
    return fn(Run.open(run_path).rank_slices(rank), rank, *args)


def map_ranks(fn: Callable[..., Any], args: Callable[[int], tuple], rank_ids: list[int], events_of: Callable[[int], pl.DataFrame],
              threads: int, cluster: Any = None, run_path: str = "") -> list[Any]:
    """``fn(events_of(rank), rank, *args(rank))`` for every rank, in ``threads`` threads; with
    ``cluster``, as one task per rank on that Dask cluster, whose worker reads the rank itself
    from ``run_path``. In rank order."""
    if cluster is not None:
        from accelscope.traces.cluster import map_on_cluster

        return map_on_cluster(cluster, _on_worker, [(fn, run_path, r, *args(r)) for r in rank_ids])

    def local(rank: int) -> Any:
        return fn(events_of(rank), rank, *args(rank))

    if threads > 1:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            return list(pool.map(local, rank_ids))
    return [local(r) for r in rank_ids]
