"""Whole-capture device figures: how busy each device was over what the trace captured,
whether or not the trace has host steps (inference servers, CUDA-graph replays and
microbenchmarks have none).

Per device: busy time = the union of its kernels, copies and memsets; over the GPU-side
``ProfilerStep#N`` annotations where the trace has them on that device (Kineto writes them
as ``gpu_user_annotation``: the step as the device saw it), else over the span of the
device's own activity, first start to last end. The same definition as TraceLens's
``gpu_timeline`` (busy_time / total_time), so the figures can be checked against it.
"""

from __future__ import annotations

import polars as pl

from accelscope.analysis.intervals import covered_within, union
from accelscope.traces import schema as S

GPU_STEP_NAME = r"^ProfilerStep#\d+$"
CAPTURE_SCHEMA = {"rank": pl.Int32, "device": pl.String, "capture_busy_ns": pl.Int64, "capture_span_ns": pl.Int64,
                  "capture_busy_share": pl.Float64, "capture_window": pl.String}
WINDOW_TEXT = {"steps": "the GPU-side ProfilerStep windows", "span": "the span of its activity"}


def capture_figures(events: pl.DataFrame) -> pl.DataFrame:
    """Per (rank, device) with device work: busy time, the time it is over and the share
    (``CAPTURE_SCHEMA``; ``capture_window``: "steps" or "span", keys of ``WINDOW_TEXT``)."""
    on_device = events.filter(pl.col("device") != "cpu").select("rank", "device", "kind", "name", "start_ns", "dur_ns")
    work = on_device.filter(pl.col("kind").is_in(list(S.DEVICE_KINDS)))
    steps = on_device.filter((pl.col("kind") == S.ANNOTATION) & pl.col("name").str.contains(GPU_STEP_NAME))
    rows = []
    for (rank, device), w in work.group_by(["rank", "device"], maintain_order=True):
        bs, be = union(w["start_ns"].to_numpy(), (w["start_ns"] + w["dur_ns"]).to_numpy())
        st = steps.filter((pl.col("rank") == rank) & (pl.col("device") == device))
        if st.height:
            ws, we = union(st["start_ns"].to_numpy(), (st["start_ns"] + st["dur_ns"]).to_numpy())
            window = "steps"
        else:
            ws, we = bs[:1], be[-1:]
            window = "span"
        span = int((we - ws).sum())
        busy = int(covered_within(bs, be, ws, we, merged=True).sum())
        rows.append((int(rank), str(device), busy, span, busy / span if span else None, window))
    return pl.DataFrame(rows, schema=CAPTURE_SCHEMA, orient="row")


def empty_capture() -> pl.DataFrame:
    return pl.DataFrame(schema=CAPTURE_SCHEMA)
