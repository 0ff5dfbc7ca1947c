"""The Overview's utilisation summary: for each device, how busy it was, why it sat idle,
its streams, and what its own counters said (NVML utilisation or TPU duty cycle, memory).

Tables in, rows out: the analyzer's report (busy shares per device and stream, idle gaps
with their causes) and the run's sampled counters; ``app.py`` and ``report.py`` draw them.
A CPU-only run has one row, its training thread, busy whenever it was not waiting.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from accelscope.analysis import Report
from accelscope.causes import CAUSE_TEXT, CAUSES
from accelscope.dashboard.metrics_view import GIB, MIB

# The counters that say how busy a device was by its own measure, and how much memory it used.
UTIL_COUNTERS = {"gpu_util_percent": "NVML utilisation", "tpu_duty_cycle_percent": "TPU duty cycle"}
USED_COUNTERS = ("memory_used_bytes", "hbm_used_bytes")
TOTAL_COUNTERS = ("memory_total_bytes", "hbm_total_bytes")
MAX_ROWS = 16  # a job of many ranks: the first ones, then one line for the rest


@dataclass(frozen=True)
class DeviceUse:
    rank: int
    device: str
    busy_share: float | None  # of the step time analysed (traced steps, when the profiler ran in windows); None: not in the trace
    idle_cause: str | None  # the cause of most of its idle time (CAUSES), None when never idle
    idle_cause_share: float | None  # that cause's share of its idle time
    streams: int
    busiest_stream: int | None
    busiest_stream_share: float | None
    sampled: str | None  # which counter ``sampled_percent`` is the mean of
    sampled_percent: float | None  # mean of the samples taken inside the steps analysed
    memory_peak_bytes: float | None
    memory_total_bytes: float | None


def _basis(report: Report) -> pl.DataFrame:
    """The steps the busy shares are of: the traced steady steps with device work (only
    they hold kernels), every steady step on a CPU-only run (waits are timed on each)."""
    return report.traced_steady if report.has_device else report.steps.filter(~pl.col("warmup"))


def _idle_causes(report: Report, basis: pl.DataFrame) -> dict[tuple[int, str], tuple[str, float]]:
    gaps = report.gaps.join(basis.select("rank", "step"), on=["rank", "step"], how="semi")
    if gaps.height == 0:
        return {}
    per_device = gaps.group_by("rank", "device").agg([pl.col(f"{c}_ns").sum() for c in CAUSES])
    out = {}
    for row in per_device.iter_rows(named=True):
        times = [row[f"{c}_ns"] for c in CAUSES]
        total = sum(times)
        if total > 0:
            top = max(range(len(CAUSES)), key=times.__getitem__)
            out[(row["rank"], row["device"])] = (CAUSES[top], times[top] / total)
    return out


def _sampled(counters: pl.DataFrame, basis: pl.DataFrame) -> tuple[dict, dict, dict]:
    """Per (rank, device): (counter, mean %) over the steps analysed; peak memory used; memory total."""
    util: dict[tuple[int, str], tuple[str, float]] = {}
    if counters.height == 0:
        return util, {}, {}
    # Only samples taken inside the steps analysed (not in warm-up, nor between profiler windows).
    steps = {int(rank): (g["start_ns"].to_numpy(), g["end_ns"].to_numpy()) for (rank,), g in basis.sort("start_ns").group_by(["rank"])}
    for name, label in UTIL_COUNTERS.items():
        samples = counters.filter((pl.col("name") == name) & pl.col("value").is_not_null())
        for (rank, device), g in samples.group_by(["rank", "device"]):
            if rank not in steps:
                continue
            starts, ends = steps[rank]
            t = g["time_ns"].to_numpy()
            k = np.searchsorted(starts, t, side="right") - 1
            inside = (k >= 0) & (t < ends[np.clip(k, 0, None)])
            if inside.any():
                util.setdefault((int(rank), device), (label, float(g["value"].to_numpy()[inside].mean())))

    def peak(names: tuple[str, ...]) -> dict[tuple[int, str], float]:
        rows = counters.filter(pl.col("name").is_in(list(names)) & pl.col("value").is_not_null())
        return {(r["rank"], r["device"]): float(r["value"]) for r in rows.group_by("rank", "device").agg(pl.col("value").max()).iter_rows(named=True)}

    return util, peak(USED_COUNTERS), peak(TOTAL_COUNTERS)


def device_use(report: Report | None, counters: pl.DataFrame) -> list[DeviceUse]:
    """One row per (rank, device) the analyzer measured or the counters sampled (a GPU
    sampled by NVML in a run whose trace holds no kernels, light mode's), in rank then
    device order."""
    if report is None:
        return []
    basis = _basis(report)
    causes = _idle_causes(report, basis)
    util, used, total = _sampled(counters, basis)
    busy = {(r["rank"], r["device"]): float(r["busy_share"]) for r in report.devices.iter_rows(named=True)}
    # Each rank's NVML samples every GPU it sees: a device only sampled gets a row only on a
    # rank whose trace holds no device work (light mode), where it cannot say which it used.
    traced_ranks = {rank for rank, device in busy if device != "cpu"}
    sampled_only = {k for k in (*util, *used, *total) if k[1] != "cpu" and k[0] not in traced_ranks}
    out = []
    for key in sorted(set(busy) | sampled_only):
        rank, device = key
        streams = report.streams.filter((pl.col("rank") == rank) & (pl.col("device") == device)).sort("busy_share", descending=True)
        cause = causes.get(key) if key in busy else None
        sampled = util.get(key)
        out.append(
            DeviceUse(
                rank=rank,
                device=device,
                busy_share=busy.get(key),
                idle_cause=cause[0] if cause else None,
                idle_cause_share=cause[1] if cause else None,
                streams=streams.height,
                busiest_stream=streams["stream"][0] if streams.height else None,
                busiest_stream_share=float(streams["busy_share"][0]) if streams.height else None,
                sampled=sampled[0] if sampled else None,
                sampled_percent=sampled[1] if sampled else None,
                memory_peak_bytes=used.get(key),
                memory_total_bytes=total.get(key),
            )
        )
    return out


def _bytes(n: float) -> str:
    return f"{n / GIB:,.1f} GiB" if n >= GIB else f"{n / MIB:,.0f} MiB"


def table_rows(uses: list[DeviceUse], has_device: bool) -> tuple[list[str], list[list[str]], str]:
    """The summary as text cells: (headers, rows, a line for the rows left out, or "")."""
    multi_rank = len({u.rank for u in uses}) > 1
    headers = ["device", "busy", "idle mostly", "streams", "device counters", "memory peak"]
    rows = []
    for u in uses[:MAX_ROWS]:
        name = f"{u.device} (training thread)" if u.device == "cpu" and not has_device else u.device
        if multi_rank:
            name = f"rank {u.rank} · {name}"
        if u.busy_share is None:
            busy, idle = "not traced", "—"
        else:
            busy = f"{u.busy_share:.1%}"
            idle = "never idle" if u.idle_cause is None else f"{CAUSE_TEXT[u.idle_cause]} ({u.idle_cause_share:.0%} of idle time)"
        if not u.streams:
            streams = "—"
        elif u.streams == 1:
            streams = f"stream {u.busiest_stream}"
        else:
            streams = f"{u.streams}; busiest: stream {u.busiest_stream} ({u.busiest_stream_share:.0%} busy)"
        sampled = "—" if u.sampled is None else f"{u.sampled} {u.sampled_percent:.0f}% (mean)"
        memory = "—"
        if u.memory_peak_bytes is not None:
            memory = _bytes(u.memory_peak_bytes) + (f" of {_bytes(u.memory_total_bytes)}" if u.memory_total_bytes else "")
        rows.append([name, busy, idle, streams, sampled, memory])
    rest = ""
    if len(uses) > MAX_ROWS:
        left = uses[MAX_ROWS:]
        shares = [u.busy_share for u in left if u.busy_share is not None]
        rest = f"and {len(left)} more devices" + (f", busy {min(shares):.1%} to {max(shares):.1%}" if shares else "")
    return headers, rows, rest
