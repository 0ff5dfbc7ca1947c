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
# Lane types, numbered in the order a rank's lanes are drawn: its steps, its device streams,
# its host threads, then the host threads folded into one lane.
STEPS, DEVICE, HOST, FOLDED = 0, 1, 2, 3
# A rank with more host threads than this shows only its main ones (those that drive the
# device, mark steps or wait for input; else its busiest) and folds the rest into one lane.
FOLD_ABOVE = 6
BUSIEST_KEPT = 4


@dataclass
class Lane:
    key: tuple
    label: str
    row0: int  # first row (0 = top)
    rows: int  # number of rows (nesting depths shown)
    total: int  # slices on this lane (in the view's window)
    shown: int  # marks drawn for them (kept slices + merged marks)
    merged: int = 0  # slices drawn inside merged marks
    lane_type: int = HOST  # STEPS, HOST, DEVICE or FOLDED
    rank: int | None = None
    device: str | None = None
    stream: int | None = None
    threads: int = 1  # host threads drawn on this lane (several when folded)


@dataclass
class LaneLayout:
    """Every slice of a run placed on its lane and row, sorted and indexed once per run.

    Rows come from nesting depth over *all* slices, so the layout stays put while the
    browser zooms. ``table`` is in index order (row, start, longest first): position i of
    every array here is row i of the table.
    """

    lanes: list[Lane]  # total = slices on the lane; shown filled per view
    table: pl.DataFrame  # start_ns, dur_ns, kind_code, name_code, row, lane, rank, stream, pid, tid, correlation_id
    index: IntervalIndex
    kinds: list[str]  # kind_code -> kind
    names: pl.Series  # name_code -> name
    hover_names: pl.Series  # name_code -> HTML-escaped, shortened name
    kind_code: np.ndarray
    name_code: np.ndarray
    lane_of_row: np.ndarray
    folded_threads: int = 0  # host threads folded into "other host threads" lanes

    @property
    def multi_rank(self) -> bool:
        return len({lane.rank for lane in self.lanes}) > 1


def _empty_layout() -> LaneLayout:
    e = np.empty(0, dtype=np.int64)
    ix = build_index(e, e, e.astype(np.int32), 0)
    table = pl.DataFrame(schema={"start_ns": pl.Int64, "dur_ns": pl.Int64, "kind_code": pl.Int16, "name_code": pl.Int32, "row": pl.Int32, "correlation_id": pl.Int64, "rank": pl.Int32})
    return LaneLayout([], table, ix, list(S.KINDS), pl.Series([], dtype=pl.String), pl.Series([], dtype=pl.String), e, e, e)


def _folded(keys: pl.DataFrame, markers: pl.DataFrame) -> pl.Series:
    """Per lane key (lane_type, rank, pid, tid, drives, busy): whether it is a host thread to
    fold. A rank with more than ``FOLD_ABOVE`` host threads keeps those that call the runtime,
    wait for input or mark steps (``markers``: rank, pid, tid), else its ``BUSIEST_KEPT``
    busiest; the others fold."""
    k = keys.with_row_index("_pos").join(markers.with_columns(_marks=pl.lit(True)), on=["rank", "pid", "tid"], how="left", nulls_equal=True)
    host = pl.col("lane_type") == HOST
    main = pl.col("drives") | pl.col("_marks").fill_null(False)
    k = k.with_columns(
        _n=host.sum().over("rank"),
        _any_main=(host & main).any().over("rank"),
        _busy_rank=pl.when(host).then(pl.col("busy")).otherwise(None).rank("ordinal", descending=True).over("rank"),
    )
    keep = pl.when(pl.col("_any_main")).then(main).otherwise(pl.col("_busy_rank") <= BUSIEST_KEPT)
    fold = host & (pl.col("_n") > FOLD_ABOVE) & ~keep
    return k.sort("_pos").select(fold.fill_null(False)).to_series()


def short_label(label: str, width: int) -> str:
    """A label cut in the middle to ``width`` characters, keeping its distinctive end."""
    if len(label) <= width:
        return label
    head = (width - 1) * 3 // 5
    return label[:head] + "…" + label[len(label) - (width - 1 - head):]


def _lane_keys(
    events: pl.DataFrame, thread_names: dict[tuple[int, int], str], stream_names: dict[tuple[int, str, int], str], fold: bool,
    multi_rank: bool | None = None,
) -> tuple[np.ndarray, pl.DataFrame, int]:
    """Each event's lane (an id in display order), the lanes (id, type, rank, device, stream,
    pid, tid, label, threads) and how many host threads were folded. Steps get a lane of their
    own per rank; with ``fold``, a rank's host threads beyond its main ones share one lane."""
    if multi_rank is None:
        multi_rank = events["rank"].n_unique() > 1
    is_device = pl.col("kind").is_in(list(S.DEVICE_KINDS)) | pl.col("stream").is_not_null()
    lane_type = pl.when(pl.col("kind") == S.STEP).then(pl.lit(STEPS)).when(is_device).then(pl.lit(DEVICE)).otherwise(pl.lit(HOST))
    key_cols = ["lane_type", "rank", "device", "stream", "pid", "tid"]
    # Steps belong to their rank's steps lane whichever thread marked them.
    ev = events.select(
        lane_type.alias("lane_type"),
        "rank",
        *[pl.when(pl.col("kind") == S.STEP).then(pl.lit(None)).otherwise(pl.col(c)).alias(c) for c in ("device", "stream", "pid", "tid")],
        drives=pl.col("kind").is_in([S.RUNTIME, S.INPUT_WAIT]),
        busy=pl.col("dur_ns"),
    )
    # A dense id per distinct key, from a hash grouping (a struct's rank sorts: 2.5x slower at 6M).
    groups = (
        ev.with_row_index("_i").group_by(key_cols)
        .agg(pl.col("_i"), pl.col("drives").any(), pl.col("busy").sum())
        .with_row_index("_code")
    )
    keys = groups.drop("_i").with_columns(pl.col("_code").cast(pl.Int64))
    folded_threads = 0
    if fold:
        markers = events.lazy().filter(pl.col("kind") == S.STEP).select("rank", "pid", "tid").unique().collect()
        folded = _folded(keys, markers)
        folded_threads = int(folded.sum())
        if folded_threads:  # a rank's folded threads become one lane: one key
            keys = keys.with_columns(
                lane_type=pl.when(folded).then(pl.lit(FOLDED)).otherwise(pl.col("lane_type")),
                **{c: pl.when(folded).then(pl.lit(None)).otherwise(pl.col(c)) for c in ("device", "pid", "tid")},
                _threads=pl.when(folded).then(pl.len().over(pl.when(folded).then(pl.col("rank")))).otherwise(1),
            )
    if "_threads" not in keys.columns:
        keys = keys.with_columns(_threads=pl.lit(1, dtype=pl.UInt32))
    merged = keys.group_by(key_cols, maintain_order=True).agg(pl.col("_code"), pl.col("_threads").first()).with_row_index("_lane")
    lane_of_code = np.empty(keys.height, dtype=np.int64)
    exploded = merged.select("_lane", "_code").explode("_code")
    lane_of_code[exploded["_code"].to_numpy()] = exploded["_lane"].to_numpy()
    labels, order, threads = [], [], []
    for lane_type_, rank, device, stream, pid, tid, n_threads in merged.select(*key_cols, "_threads").iter_rows():  # one row per lane
        if lane_type_ == STEPS:
            label = STEPS_LANE
        elif lane_type_ == DEVICE:
            name = stream_names.get((rank, device, stream)) if stream is not None else None
            label = f"{device} · {name}" if name else f"{device} stream {stream}" if stream is not None else f"{device}"
        elif lane_type_ == FOLDED:
            label = f"{n_threads} other host threads"
        elif pid is None and tid is None:
            label = f"{device} (no thread)"
        else:
            label = thread_names.get((pid, tid)) or f"{pid}/{tid}"
        if multi_rank:
            label = f"rank {rank} · {label}"
        labels.append(label)
        threads.append(int(n_threads))
        training = 0 if "(training)" in label else 1
        # Each rank in turn: its steps, its device streams, its host threads (the training loop's first), the folded ones.
        order.append((rank, lane_type_, training, device or "", -1 if stream is None else stream, -1 if pid is None else pid, -1 if tid is None else tid))
    lanes = merged.select(*key_cols).with_columns(lane_label=pl.Series(labels, dtype=pl.String), threads=pl.Series(threads, dtype=pl.Int64))
    sorted_idx = sorted(range(lanes.height), key=lambda i: order[i])
    position = np.empty(lanes.height, dtype=np.int64)
    position[sorted_idx] = np.arange(lanes.height)
    lanes = lanes[sorted_idx].with_row_index("lane_id")
    code = np.empty(ev.height, dtype=np.int64)
    members = groups.select("_code", "_i").explode("_i")
    code[members["_i"].to_numpy()] = members["_code"].to_numpy()
    return position[lane_of_code[code]], lanes, folded_threads


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


def build_lane_layout(
    events: pl.DataFrame,
    thread_names: dict[tuple[int, int], str],
    stream_names: dict[tuple[int, str, int], str] | None = None,
    fold: bool = True,
    multi_rank: bool | None = None,
) -> LaneLayout:
    """Lanes and rows for every slice. ``stream_names`` name device lanes ("tpu:0 · XLA Ops");
    ``fold``: a rank's host threads beyond its main ones share one lane; ``multi_rank``: label
    lanes with their rank (None: when ``events`` hold several; a job's rank drawn alone is labelled)."""
    if events.height == 0:
        return _empty_layout()
    lane_of_event, keys, folded_threads = _lane_keys(events, thread_names, stream_names or {}, fold, multi_rank)
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
        _, lane_type, rank, device, stream, _pid, _tid, label, n_threads = info[lane_id]
        if lane_type == STEPS:
            depth = np.zeros(hi - lo, dtype=np.int64)  # steps follow one another
        else:
            depth = np.minimum(_depths(starts[lo:hi], ends[lo:hi]), MAX_DEPTH_ROWS - 1)
        n_rows = int(depth.max()) + 1
        rows[lo:hi] = row0 + depth
        lanes.append(Lane(key=(lane_id,), label=label, row0=row0, rows=n_rows, total=int(hi - lo), shown=0, lane_type=int(lane_type),
                          rank=rank, device=device, stream=stream, threads=int(n_threads)))
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
        rank="rank",
        stream="stream",
        pid="pid",
        tid="tid",
        correlation_id="correlation_id",
    )[final].with_columns(row=pl.Series(rows[by_row], dtype=pl.Int32))
    index = build_index(table["start_ns"].to_numpy(), table["dur_ns"].to_numpy(), table["row"].to_numpy(), row0)
    return LaneLayout(
        lanes=lanes,
        table=table,
        index=index,
        kinds=kinds,
        names=names,
        hover_names=_hover_name_table(names),
        kind_code=table["kind_code"].to_numpy(),
        name_code=table["name_code"].to_numpy(),
        lane_of_row=np.asarray(lane_rows, dtype=np.int64),
        folded_threads=folded_threads,
    )
