"""The Overview's utilisation table: the report's per-device rows as text cells, for the
dashboard and the HTML report (both render; the analyzer computed every figure)."""

from __future__ import annotations

import polars as pl

from accelscope.analysis.causes import CAUSE_TEXT
from accelscope.dashboard.metrics_view import GIB, MIB

MAX_ROWS = 16  # a job of many ranks: the first ones, then one line for the rest


def _bytes(n: float) -> str:
    return f"{n / GIB:,.1f} GiB" if n >= GIB else f"{n / MIB:,.0f} MiB"


def table_rows(devices: pl.DataFrame, has_device: bool) -> tuple[list[str], list[list[str]], str]:
    """``Report.devices`` as text cells: (headers, rows, a line for the rows left out, or "")."""
    multi_rank = devices["rank"].n_unique() > 1 if devices.height else False
    headers = ["device", "busy", "idle mostly", "streams", "device counters", "memory peak"]
    rows = []
    for u in devices.head(MAX_ROWS).iter_rows(named=True):
        name = f"{u['device']} (training thread)" if u["device"] == "cpu" and not has_device else u["device"]
        if multi_rank:
            name = f"rank {u['rank']} · {name}"
        if u["busy_share"] is None:
            busy, idle = "not traced", "—"
        else:
            busy = f"{u['busy_share']:.1%}"
            idle = "never idle" if u["idle_cause"] is None else f"{CAUSE_TEXT[u['idle_cause']]} ({u['idle_cause_share']:.0%} of idle time)"
        if not u["streams"]:
            streams = "—"
        elif u["streams"] == 1:
            streams = f"stream {u['busiest_stream']}"
        else:
            streams = f"{u['streams']}; busiest: stream {u['busiest_stream']} ({u['busiest_stream_share']:.0%} busy)"
        sampled = "—" if u["sampled_counter"] is None else f"{u['sampled_counter']} {u['sampled_mean_percent']:.0f}% (mean)"
        memory = "—"
        if u["memory_peak_bytes"] is not None:
            memory = _bytes(u["memory_peak_bytes"]) + (f" of {_bytes(u['memory_total_bytes'])}" if u["memory_total_bytes"] else "")
        rows.append([name, busy, idle, streams, sampled, memory])
    rest = ""
    if devices.height > MAX_ROWS:
        left = devices.slice(MAX_ROWS)
        shares = left["busy_share"].drop_nulls()
        rest = f"and {left.height} more devices" + (f", busy {shares.min():.1%} to {shares.max():.1%}" if shares.len() else "")
    return headers, rows, rest
