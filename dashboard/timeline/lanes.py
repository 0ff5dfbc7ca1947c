"""The timeline's lanes: every slice of a run placed on a lane (a host thread, a device
stream, a rank's steps) and a row within it (nesting depth), sorted and indexed once per run.

No Dash, no Plotly here: ``build_lane_layout`` turns the events table into a
``LaneLayout`` whose index (``lod.IntervalIndex``) answers window queries.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import numpy as np
import polars as pl

from accelscope.dashboard.timeline.lod import IntervalIndex, build_index
from accelscope.traces import schema as S

# Nested slices on one thread are drawn on sub-rows by nesting depth, up to this many.
MAX_DEPTH_ROWS = 8
# Names in hover texts are cut to this many characters (the click panel shows them whole).
HOVER_NAME_CHARS = 80
STEPS_LANE = "steps"


@dataclass
class Lane:
    key: tuple
    label: str
    row0: int  # first row (0 = top)
    rows: int  # number of rows (nesting depths shown)
    total: int  # slices on this lane (in the view's window)
    shown: int  # marks drawn for them (kept slices + merged marks)
    merged: int = 0  # slices drawn inside merged marks
    lane_type: int = 1  # 0: steps, 1: host thread, 2: device stream
    rank: int | None = None
    device: str | None = None
    stream: int | None = None



@dataclass
class LaneLayout:
    """Every slice of a run placed on its lane and row, sorted and indexed once per run.

    Rows come from nesting depth over *all* slices, so the layout stays put while the
    browser zooms. ``table`` is in index order (row, start, longest first): position i of
    every array here is row i of the table.
    """

    lanes: list[Lane]  # total = slices on the lane; shown filled per view
    table: pl.DataFrame  # start_ns, dur_ns, kind_code, name_code, row, lane, step_i, rank, stream, pid, tid, correlation_id
    index: IntervalIndex
    kinds: list[str]  # kind_code -> kind
    names: pl.Series  # name_code -> name
    hover_names: pl.Series  # name_code -> HTML-escaped, shortened name
    kind_code: np.ndarray
    name_code: np.ndarray
    step_i: np.ndarray  # step number of step slices, -1 for the others
    lane_of_row: np.ndarray
    n_steps: int


def _empty_layout() -> LaneLayout:
    e = np.empty(0, dtype=np.int64)
    ix = build_index(e, e, e.astype(np.int32), 0)
    table = pl.DataFrame(schema={"start_ns": pl.Int64, "dur_ns": pl.Int64, "kind_code": pl.Int16, "name_code": pl.Int32, "row": pl.Int32, "correlation_id": pl.Int64, "rank": pl.Int32})
    return LaneLayout([], table, ix, list(S.KINDS), pl.Series([], dtype=pl.String), pl.Series([], dtype=pl.String), e, e, e, e, 0)


def _lane_keys(events: pl.DataFrame, thread_names: dict[tuple[int, int], str]) -> tuple[np.ndarray, pl.DataFrame]:
    """Each event's lane (an id in display order), and the lanes: id, type, rank, device,
    stream, pid, tid, label. Steps get a lane of their own."""
    multi_rank = events["rank"].n_unique() > 1
    is_device = pl.col("kind").is_in(list(S.DEVICE_KINDS)) | pl.col("stream").is_not_null()
    lane_type = pl.when(pl.col("kind") == S.STEP).then(pl.lit(0)).when(is_device).then(pl.lit(2)).otherwise(pl.lit(1))
    key_cols = ["lane_type", "rank", "device", "stream", "pid", "tid"]
    # Steps belong to the steps lane whichever thread marked them.
    ev = events.select(
        lane_type.alias("lane_type"),
        "rank",
        *[pl.when(pl.col("kind") == S.STEP).then(pl.lit(None)).otherwise(pl.col(c)).alias(c) for c in ("device", "stream", "pid", "tid")],
    )
    # A dense id per distinct key, from a hash grouping (a struct's rank sorts: 2.5x slower at 6M).
    groups = ev.with_row_index("_i").group_by(key_cols).agg(pl.col("_i")).with_row_index("_code")
    members = groups.select("_code", "_i").explode("_i")
    code = np.empty(ev.height, dtype=np.int64)
    code[members["_i"].to_numpy()] = members["_code"].to_numpy()
    keys = groups.drop("_i").with_columns(pl.col("_code").cast(pl.Int64))
    labels, order = [], []
    for lane_type_, rank, device, stream, pid, tid in keys.select(key_cols).iter_rows():  # one row per lane
        if lane_type_ == 0:
            label = STEPS_LANE
        elif lane_type_ == 2:
            label = f"{device} stream {stream}" if stream is not None else f"{device}"
        elif pid is None and tid is None:
            label = f"{device} (no thread)"
        else:
            label = thread_names.get((pid, tid)) or f"{pid}/{tid}"
        if multi_rank:
            label = f"rank {rank} · {label}"
        labels.append(label)
        training = 0 if "(training)" in label else 1
        # Steps lanes first (every rank's, in rank order), then each rank's threads and streams.
        order.append((rank if lane_type_ else -1, lane_type_, training, -1 if pid is None else pid, -1 if tid is None else tid, device or "", -1 if stream is None else stream, rank))
    keys = keys.with_columns(lane_label=pl.Series(labels, dtype=pl.String))
    sorted_idx = sorted(range(keys.height), key=lambda i: order[i])
    keys = keys[sorted_idx].with_row_index("lane_id")
    lane_of_code = np.empty(keys.height, dtype=np.int64)
    lane_of_code[keys["_code"].to_numpy()] = np.arange(keys.height)
    return lane_of_code[code], keys.drop("_code")


def _depths(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Nesting depth of each slice: how many slices are open when it starts.

    Input sorted by start, then longest first. Vectorised: slice i is preceded by i
    slices, of which those ending at or before its start are closed.
    """
    ends = np.maximum(ends, starts + 1)  # a zero-length slice must not close its parent early
    closed = np.searchsorted(np.sort(ends), starts, side="right")
    return np.maximum(np.arange(starts.size) - closed, 0)


def _hover_name_table(names: pl.Series) -> pl.Series:
    """Each distinct name once: HTML-escaped and shortened for hover texts."""
    return pl.Series([html.escape(n if len(n) <= HOVER_NAME_CHARS else n[: HOVER_NAME_CHARS - 1] + "…") for n in names.to_list()], dtype=pl.String)


def build_lane_layout(events: pl.DataFrame, thread_names: dict[tuple[int, int], str]) -> LaneLayout:
    if events.height == 0:
        return _empty_layout()
    lane_of_event, keys = _lane_keys(events, thread_names)
    start = events["start_ns"].to_numpy()
    dur = events["dur_ns"].to_numpy()
    order = np.lexsort((-dur, start, lane_of_event))  # by lane, start, longest first
    lane_ids = lane_of_event[order]
    starts = start[order]
    ends = starts + dur[order]
    rows = np.zeros(order.size, dtype=np.int32)
    bounds = np.flatnonzero(np.diff(lane_ids)) + 1
    lo_hi = list(zip(np.concatenate(([0], bounds)), np.concatenate((bounds, [order.size]))))
    lanes: list[Lane] = []
    lane_rows: list[int] = []
    row0 = 0
    info = {int(r[0]): r for r in keys.iter_rows()}
    for lo, hi in lo_hi:  # one vectorised pass per lane
        lane_id = int(lane_ids[lo])
        _, lane_type, rank, device, stream, _pid, _tid, label = info[lane_id]
        if lane_type == 0:
            depth = np.zeros(hi - lo, dtype=np.int64)  # steps follow one another
        else:
            depth = np.minimum(_depths(starts[lo:hi], ends[lo:hi]), MAX_DEPTH_ROWS - 1)
        n_rows = int(depth.max()) + 1
        rows[lo:hi] = row0 + depth
        lanes.append(Lane(key=(lane_id,), label=label, row0=row0, rows=n_rows, total=int(hi - lo), shown=0, lane_type=int(lane_type), rank=rank, device=device, stream=stream))
        lane_rows += [len(lanes) - 1] * n_rows
        row0 += n_rows
    # Index order: by row, then start (a stable sort keeps the lane order's start order).
    by_row = np.argsort(rows, kind="stable")
    final = order[by_row]
    kinds = list(S.KINDS) + sorted(set(events["kind"].unique().to_list()) - set(S.KINDS))
    names = events["name"].unique().sort()
    table = events.select(
        "start_ns",
        "dur_ns",
        kind_code=pl.col("kind").replace_strict(kinds, list(range(len(kinds))), return_dtype=pl.Int16),
        name_code=pl.col("name").replace_strict(names, pl.int_range(names.len(), eager=True), return_dtype=pl.Int32),
        lane=pl.Series(lane_of_event, dtype=pl.Int32),
        # Steps are numbered as the analyzer numbers them: by start time.
        step_i=pl.when(pl.col("kind") == S.STEP).then(pl.col("start_ns").rank("ordinal").over("kind").cast(pl.Int64) - 1).otherwise(-1),
        rank="rank",
        stream="stream",
        pid="pid",
        tid="tid",
        correlation_id="correlation_id",
    )[final].with_columns(row=pl.Series(rows[by_row], dtype=pl.Int32))
    index = build_index(table["start_ns"].to_numpy(), table["dur_ns"].to_numpy(), table["row"].to_numpy(), row0)
    n_steps = int((events["kind"] == S.STEP).sum())
    return LaneLayout(
        lanes=lanes,
        table=table,
        index=index,
        kinds=kinds,
        names=names,
        hover_names=_hover_name_table(names),
        kind_code=table["kind_code"].to_numpy(),
        name_code=table["name_code"].to_numpy(),
        step_i=table["step_i"].to_numpy(),
        lane_of_row=np.asarray(lane_rows, dtype=np.int64),
        n_steps=n_steps,
    )


