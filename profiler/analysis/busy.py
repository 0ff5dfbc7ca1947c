"""Busy time per device and per stream, and how compute, copies and communication overlap:
unions of device slices, never sums of durations.

Device slices are *compute* (kernels that are not communication), *copy* (memcpy,
memset) or *comm* (communication kernels, ``causes.is_comm_kernel``). ``busy_per_step``
measures one rank step by step (the breakdown's pass calls it), so any set of steps (the
analysed ones) is a sum of rows: ``summarise_busy``. ``stream_overlap`` does the same for
any events table and time windows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from accelscope.analysis import causes as C
from accelscope.analysis.intervals import covered_within, union
from accelscope.traces import schema as S

COMPUTE = "compute"
COPY = "copy"
COMM = "comm"
CLASSES = (COMPUTE, COPY, COMM)
# Pairs reported by the overlap, as (first, second) classes.
OVERLAP_PAIRS = ((COMPUTE, COPY), (COMPUTE, COMM), (COPY, COMM))

DEVICES_SCHEMA = {"rank": pl.Int32, "device": pl.String, "busy_ns": pl.Int64, "busy_share": pl.Float64}
STREAMS_SCHEMA = {"rank": pl.Int32, "device": pl.String, "stream": pl.Int64, "busy_ns": pl.Int64, "busy_share": pl.Float64}
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
# Per (rank, device, step): busy time, each class's union and each pair's union.
_UNIONS = tuple(f"{a}_{b}_union_ns" for a, b in OVERLAP_PAIRS)
DEVICE_STEPS_SCHEMA = {
    "rank": pl.Int32, "device": pl.String, "step": pl.Int64, "busy_ns": pl.Int64,
    **{f"{c}_ns": pl.Int64 for c in CLASSES}, **{u: pl.Int64 for u in _UNIONS},
}
STREAM_STEPS_SCHEMA = {"rank": pl.Int32, "device": pl.String, "stream": pl.Int64, "step": pl.Int64, "busy_ns": pl.Int64}


CLASS_CODE = {c: i for i, c in enumerate(CLASSES)}


def with_class(device: pl.DataFrame) -> pl.DataFrame:
    """Device slices (kind, name, ...) with their class ``cls`` as a code (``CLASS_CODE``):
    compute, copy or comm. The name rule runs once per distinct name."""
    names = device["name"].unique()
    comm = names.to_frame().select(C.is_comm_kernel()).to_series()
    kernel_cls = pl.Series(np.where(comm.to_numpy(), CLASS_CODE[COMM], CLASS_CODE[COMPUTE]), dtype=pl.UInt8)
    return device.with_columns(
        cls=pl.when(pl.col("kind") != S.KERNEL).then(pl.lit(CLASS_CODE[COPY], dtype=pl.UInt8))
        .otherwise(pl.col("name").replace_strict(names, kernel_cls, return_dtype=pl.UInt8))
    )


def _by_class(g: pl.DataFrame) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each class's slices of one device (with ``cls``) as merged intervals."""
    cls = g["cls"].to_numpy()
    start = g["start_ns"].to_numpy()
    end = start + g["dur_ns"].to_numpy()
    return {c: union(start[cls == CLASS_CODE[c]], end[cls == CLASS_CODE[c]]) for c in CLASSES}


def _pair_unions(iv: dict[str, tuple[np.ndarray, np.ndarray]], busy: tuple[np.ndarray, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """union(a) ∪ union(b) for each pair; the device's busy union when the third class is empty (no new union)."""
    out = {}
    for (a, b), name in zip(OVERLAP_PAIRS, _UNIONS):
        third = next(c for c in CLASSES if c not in (a, b))
        if iv[third][0].size == 0:
            out[name] = busy
        elif iv[a][0].size == 0 or iv[b][0].size == 0:
            out[name] = iv[b] if iv[a][0].size == 0 else iv[a]
        else:
            out[name] = union(np.concatenate((iv[a][0], iv[b][0])), np.concatenate((iv[a][1], iv[b][1])))
    return out


def busy_per_step(
    device_ev: pl.DataFrame, rank: int, step: np.ndarray, win_s: np.ndarray, win_e: np.ndarray
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """One rank's device slices (with ``cls``, ``with_class``) measured in each step window: per (device, step) busy time,
    each class's and each pair's union (``DEVICE_STEPS_SCHEMA``); per (device, stream, step)
    busy time (``STREAM_STEPS_SCHEMA``); and each device's busy intervals (merged)."""
    n = win_s.size
    dev_frames, stream_frames = [], []
    unions: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for (dev,), g in device_ev.group_by(["device"], maintain_order=True):  # a few devices per rank
        start = g["start_ns"].to_numpy()
        busy = unions[dev] = union(start, start + g["dur_ns"].to_numpy())
        iv = _by_class(g)
        cols: dict[str, Any] = {
            "rank": np.full(n, rank, dtype=np.int32), "device": [dev] * n, "step": step,
            "busy_ns": covered_within(*busy, win_s, win_e, merged=True),
        }
        for c in CLASSES:
            cols[f"{c}_ns"] = covered_within(*iv[c], win_s, win_e, merged=True)
        for name, (s, e) in _pair_unions(iv, busy).items():
            cols[name] = covered_within(s, e, win_s, win_e, merged=True)
        dev_frames.append(pl.DataFrame(cols, schema=DEVICE_STEPS_SCHEMA))
        for (stream,), gs in g.group_by(["stream"], maintain_order=True):  # a few streams per device
            s0 = gs["start_ns"].to_numpy()
            stream_frames.append(pl.DataFrame(
                {"rank": np.full(n, rank, dtype=np.int32), "device": [dev] * n, "stream": [stream] * n, "step": step,
                 "busy_ns": covered_within(s0, s0 + gs["dur_ns"].to_numpy(), win_s, win_e)},
                schema=STREAM_STEPS_SCHEMA,
            ))
    devices = pl.concat(dev_frames) if dev_frames else pl.DataFrame(schema=DEVICE_STEPS_SCHEMA)
    streams = pl.concat(stream_frames) if stream_frames else pl.DataFrame(schema=STREAM_STEPS_SCHEMA)
    return devices, streams, unions


def _overlap_columns() -> list[pl.Expr]:
    """Overlap and share columns from summed class and pair-union columns."""
    out = []
    for (a, b), u in zip(OVERLAP_PAIRS, _UNIONS):
        ov = pl.col(f"{a}_ns") + pl.col(f"{b}_ns") - pl.col(u)  # |A ∩ B| = |A| + |B| - |A ∪ B|
        smaller = pl.min_horizontal(pl.col(f"{a}_ns"), pl.col(f"{b}_ns"))
        out += [ov.alias(f"{a}_{b}_overlap_ns"), pl.when(smaller > 0).then(ov / smaller).alias(f"{a}_{b}_share")]
    return out


def summarise_busy(device_steps: pl.DataFrame, stream_steps: pl.DataFrame, step_ns: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Busy share per device and per stream, and the overlap per device, over the steps in
    ``step_ns`` (rank, step, dur_ns): sums of the per-step rows, shares of the steps' time."""
    keys = step_ns.select("rank", "step")
    totals = step_ns.group_by("rank").agg(pl.col("dur_ns").sum().alias("_total"))
    share = pl.when(pl.col("_total") > 0).then(pl.col("busy_ns") / pl.col("_total")).otherwise(0.0).alias("busy_share")
    dev = device_steps.join(keys, on=["rank", "step"], how="semi").group_by("rank", "device").agg(pl.all().exclude("step").sum())
    dev = dev.join(totals, on="rank", how="left").fill_null(0)
    devices = dev.select("rank", "device", "busy_ns", share).sort("rank", "device").cast(DEVICES_SCHEMA)  # type: ignore[arg-type]
    overlap = (
        dev.rename({"_total": "span_ns"})
        .with_columns(_overlap_columns())
        .select(list(OVERLAP_SCHEMA))
        .sort("rank", "device")
        .cast(OVERLAP_SCHEMA)  # type: ignore[arg-type]
    )
    st = stream_steps.join(keys, on=["rank", "step"], how="semi").group_by("rank", "device", "stream").agg(pl.col("busy_ns").sum())
    streams = st.join(totals, on="rank", how="left").fill_null(0).select("rank", "device", "stream", "busy_ns", share).sort("rank", "device", "stream").cast(STREAMS_SCHEMA)  # type: ignore[arg-type]
    return devices, streams, overlap


def _covered_ns(s: np.ndarray, e: np.ndarray, win: tuple[np.ndarray, np.ndarray] | None) -> int:
    """Length of the merged intervals [s, e), inside the merged windows when given."""
    if win is None:
        return int((e - s).sum())
    return int(covered_within(s, e, win[0], win[1], merged=True).sum())


def stream_overlap(device: pl.DataFrame, windows: dict[int | None, tuple[np.ndarray, np.ndarray]] | None) -> pl.DataFrame:
    """Per (rank, device) of device slices (rank, device, kind, name, start_ns, dur_ns): time
    in compute, copy and communication and how much they overlap (``OVERLAP_SCHEMA``), inside
    merged ``windows`` per rank (key None: every rank) or over each device's span."""
    rows = []
    for (rank, dev), g in with_class(device).group_by(["rank", "device"], maintain_order=True):
        start = g["start_ns"].to_numpy()
        if windows is None:
            win = None
            span = int((start + g["dur_ns"].to_numpy()).max() - start.min())
        else:
            win = windows.get(int(rank), windows.get(None))
            if win is None:  # no window for this rank: nothing of it is inside the windows
                win = (np.empty(0, np.int64), np.empty(0, np.int64))
            span = int((win[1] - win[0]).sum())
        iv = _by_class(g)
        busy = union(np.concatenate([iv[c][0] for c in CLASSES]), np.concatenate([iv[c][1] for c in CLASSES]))
        row: dict[str, Any] = {"rank": rank, "device": dev, "span_ns": span, **{f"{c}_ns": _covered_ns(*iv[c], win) for c in CLASSES}}
        row.update({name: _covered_ns(s, e, win) for name, (s, e) in _pair_unions(iv, busy).items()})
        rows.append(row)
    schema = {**{k: v for k, v in OVERLAP_SCHEMA.items() if k in ("rank", "device", "span_ns") or k.endswith("_ns") and "overlap" not in k}, **{u: pl.Int64 for u in _UNIONS}}
    table = pl.DataFrame(rows, schema=schema)
    return table.with_columns(_overlap_columns()).select(list(OVERLAP_SCHEMA)).sort("rank", "device").cast(OVERLAP_SCHEMA)  # type: ignore[arg-type]
