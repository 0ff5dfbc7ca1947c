"""Utilisation per device: how busy each device was, why it sat idle, its streams, and what its
own counters said (NVML utilisation or TPU duty cycle, memory), all over the analysed steps.

A table in, a table out: the analyzer's busy shares per device and stream, its idle gaps
with their causes, the analysed steps and the run's sampled counters give one row per
device (``DEVICE_SCHEMA``). A CPU-only run has one row, its training thread, busy whenever
it was not waiting.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from accelscope.analysis.causes import CAUSES
from accelscope.traces import counters as K

# The counters that say how busy a device was by its own measure, and how much memory it used.
UTIL_COUNTERS = K.UTILISATION_SOURCE  # name -> what people call it ("NVML utilisation")
USED_COUNTERS = K.with_role(K.MEMORY_USED)
TOTAL_COUNTERS = K.with_role(K.MEMORY_TOTAL)

DEVICE_SCHEMA = {
    "rank": pl.Int32,
    "device": pl.String,
    "busy_ns": pl.Int64,  # null: the device was sampled but none of its work was traced
    "busy_share": pl.Float64,
    "idle_cause": pl.String,  # the cause of most of its idle time; null when never idle
    "idle_cause_share": pl.Float64,  # that cause's share of its idle time
    "streams": pl.UInt32,
    "busiest_stream": pl.Int64,
    "busiest_stream_share": pl.Float64,
    "sampled_counter": pl.String,  # what sampled_mean_percent is the mean of ("NVML utilisation")
    "sampled_mean_percent": pl.Float64,  # mean of the samples taken inside the analysed steps
    "memory_peak_bytes": pl.Float64,
    "memory_total_bytes": pl.Float64,
}


def _idle_causes(gaps: pl.DataFrame, basis: pl.DataFrame) -> dict[tuple[int, str], tuple[str, float]]:
    gaps = gaps.join(basis.select("rank", "step"), on=["rank", "step"], how="semi")
    if gaps.height == 0:
        return {}
    per_device = gaps.group_by("rank", "device").agg([pl.col(f"{c}_ns").sum() for c in CAUSES])
    out = {}
    for row in per_device.iter_rows(named=True):  # one row per device
        times = [row[f"{c}_ns"] for c in CAUSES]
        total = sum(times)
        if total > 0:
            top = max(range(len(CAUSES)), key=times.__getitem__)
            out[(row["rank"], row["device"])] = (CAUSES[top], times[top] / total)
    return out


def _sampled(counters: pl.DataFrame, basis: pl.DataFrame) -> tuple[dict, dict, dict]:
    """Per (rank, device): (counter, mean %) over the analysed steps; peak memory used; memory total."""
    util: dict[tuple[int, str], tuple[str, float]] = {}
    if counters.height == 0:
        return util, {}, {}
    # Only samples taken inside the analysed steps (not in warm-up, nor between profiler windows).
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


def device_utilisation(busy: pl.DataFrame, streams: pl.DataFrame, gaps: pl.DataFrame, basis: pl.DataFrame, counters: pl.DataFrame) -> pl.DataFrame:
    """One row per (rank, device) the analyzer measured (``busy``: rank, device, busy_ns,
    busy_share) or the counters sampled, in rank then device order (``DEVICE_SCHEMA``).

    Each rank's NVML samples every GPU it sees: a device only sampled gets a row only on a
    rank whose trace holds no device work (light mode), where it cannot say which it used.
    """
    causes = _idle_causes(gaps, basis)
    util, used, total = _sampled(counters, basis)
    measured = {(r["rank"], r["device"]): (r["busy_ns"], r["busy_share"]) for r in busy.iter_rows(named=True)}
    traced_ranks = {rank for rank, device in measured if device != "cpu"}
    sampled_only = {k for k in (*util, *used, *total) if k[1] != "cpu" and k[0] not in traced_ranks}
    rows = []
    for key in sorted(set(measured) | sampled_only):  # one row per device
        rank, device = key
        st = streams.filter((pl.col("rank") == rank) & (pl.col("device") == device)).sort("busy_share", descending=True)
        cause = causes.get(key) if key in measured else None
        sampled = util.get(key)
        busy_ns, busy_share = measured.get(key, (None, None))
        rows.append({
            "rank": rank,
            "device": device,
            "busy_ns": busy_ns,
            "busy_share": busy_share,
            "idle_cause": cause[0] if cause else None,
            "idle_cause_share": cause[1] if cause else None,
            "streams": st.height,
            "busiest_stream": st["stream"][0] if st.height else None,
            "busiest_stream_share": float(st["busy_share"][0]) if st.height else None,
            "sampled_counter": sampled[0] if sampled else None,
            "sampled_mean_percent": sampled[1] if sampled else None,
            "memory_peak_bytes": used.get(key),
            "memory_total_bytes": total.get(key),
        })
    return pl.DataFrame(rows, schema=DEVICE_SCHEMA)
