"""Export a run to Chrome trace JSON (Perfetto, chrome://tracing, HTA).

Slices become ``X`` events, counters ``C`` events, process and thread names ``M``
events, and launch->device-work links ``ac2g`` flow events where the correlation id is
known. Timestamps are absolute microseconds written as exact decimal text from the
integer nanoseconds (``1623142623460016.128``), so no precision is lost to a float and
tools that round floats (HTA) see the same numbers as in the original trace. A
versioned ``otherData.accelscope`` block records where the file came from, and each
slice's args carry ``accelscope_kind``/``accelscope_device`` so that re-importing an
export gives back the same events.

A run with several ranks exports to one file (Perfetto) or, given a directory, to one
``rank-N.json[.gz]`` per rank (HTA reads one file per rank). Each (pid, tid) with slices
gets its ``thread_name`` on that pid; device pids are one per rank and device.

Given the analysis' idle gaps as slices (``accelscope.analysis.gap_slices``), the export
adds them on a track of their own, "accelscope idle gaps", under each device's pid, so
Perfetto shows why the device sat idle. Their category is ``GAP_CATEGORY``: the Kineto
reader drops them, so a re-import holds the trace's own events only and its analysis
finds the gaps again.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import msgspec
import polars as pl

from accelscope.traces import schema as S
from accelscope.traces.kineto import GAP_CATEGORY
from accelscope.traces.run import Run

EXPORT_VERSION = 2
DEVICE_PID_PER_RANK = 1_000_000
KIND_CATEGORY = {
    S.KERNEL: "kernel",
    S.MEMCPY: "gpu_memcpy",
    S.MEMSET: "gpu_memset",
    S.SYNC: "cuda_sync",
    S.CPU_OP: "cpu_op",
    S.RUNTIME: "cuda_runtime",
    S.PYTHON: "python_function",
    S.INPUT_WAIT: "input_wait",
    S.STEP: "user_annotation",
    S.ANNOTATION: "user_annotation",
    S.OTHER: "other",
}
# Device slices that run on a stream (annotations on a device lane do not: HTA would
# count them as GPU work).
STREAM_KINDS = frozenset({S.KERNEL, S.MEMCPY, S.MEMSET, S.SYNC})
# The analysis' idle gaps: a track of their own under each device's pid, named GAP_TRACK, with
# a tid no stream of that pid uses (GAP_TID, or the first free one below it).
GAP_TRACK = "accelscope idle gaps"
GAP_TID = 2_000_000_000

_encode = msgspec.json.Encoder().encode


def _us(ns: int) -> msgspec.Raw:
    """Exact microseconds as JSON number text: integer µs, or µs with three decimals."""
    whole, frac = divmod(ns, 1000)
    return msgspec.Raw(f"{whole}".encode() if frac == 0 else f"{whole}.{frac:03d}".encode())


def _args(raw: str | None, extra: dict[str, Any]) -> msgspec.Raw:
    """The slice's own args object with ``extra`` keys appended, without re-parsing it."""
    added = _encode(extra)
    if not raw or raw == "{}":
        return msgspec.Raw(added)
    raw = raw.strip()
    if not raw.startswith("{"):  # not an object: keep it under a key
        return msgspec.Raw(_encode({**extra, "value": msgspec.Raw(raw.encode())}))
    return msgspec.Raw(raw[:-1].encode() + b"," + added[1:])


def _lanes(ev: pl.DataFrame, host_pid: int, multi_rank: bool) -> pl.DataFrame:
    """``ev`` with the exported ``_pid``/``_tid`` of each slice: a device slice goes on its
    device's pid (one per rank and device in a multi-rank run) and its stream's tid, a host
    slice on its own pid and tid."""
    index = pl.when(pl.col("device") != "cpu").then(pl.col("device").str.extract(r"^[^:]*:(\d+)$").cast(pl.Int64))
    on_device = index.is_not_null()
    device_pid = pl.lit(DEVICE_PID_PER_RANK, dtype=pl.Int64) * (pl.col("rank").cast(pl.Int64) + 1) + index if multi_rank else index
    return ev.with_columns(
        _on_device=on_device,
        _pid=pl.when(on_device).then(device_pid).otherwise(pl.coalesce("pid", pl.lit(host_pid, dtype=pl.Int64))),
        _tid=pl.when(on_device).then(pl.coalesce("stream", pl.lit(0, dtype=pl.Int64))).otherwise(pl.coalesce("tid", pl.lit(0, dtype=pl.Int64))),
    )


def _lane_names(run: Run, lanes: pl.DataFrame) -> Iterator[bytes]:
    """``process_name`` and ``thread_name`` records for every exported (pid, tid) that has
    slices, each on that pid: the name the trace gave the thread or stream (of its own rank),
    else "stream N" / "thread N", without the stray spaces Kineto writes ("stream 7 ")."""
    stream_names = run.stream_names()  # device lanes' own names ("XLA Ops"): Perfetto shows them, a re-import keeps them
    by_rank: dict[tuple[int | None, int, int], str] = {}
    for t in run.meta.get("threads", []):
        if isinstance(t, dict) and isinstance(t.get("pid"), int) and isinstance(t.get("tid"), int) and isinstance(t.get("name"), str) and t["name"].strip():
            by_rank[(t.get("rank"), t["pid"], t["tid"])] = t["name"].strip()
    multi_rank = lanes["rank"].n_unique() > 1
    named: set[int] = set()
    rows = lanes.unique(["_pid", "_tid"], keep="first").sort("_pid", "_tid").select("rank", "device", "pid", "tid", "_on_device", "_pid", "_tid")
    for rank, device, pid, tid, on_device, out_pid, out_tid in rows.iter_rows():
        if out_pid not in named:
            named.add(out_pid)
            yield _encode({"ph": "M", "name": "process_name", "pid": out_pid, "tid": 0, "args": {"name": _process_label(device, rank, on_device, multi_rank)}})
        own = by_rank.get((rank, pid, tid)) or by_rank.get((None, pid, tid)) if pid is not None and tid is not None else None
        if on_device:
            name = (stream_names.get((rank, device, out_tid)) or "").strip() or own or f"stream {out_tid}"
        else:
            name = own or f"thread {out_tid}"
        yield _encode({"ph": "M", "name": "thread_name", "pid": out_pid, "tid": out_tid, "args": {"name": name}})


def iter_trace_events(run: Run, events: pl.DataFrame | None = None, counters: pl.DataFrame | None = None, gaps: pl.DataFrame | None = None,
                      memory: pl.DataFrame | None = None) -> Iterator[bytes]:
    """Yield the JSON text of every trace event of ``run`` (or of the given subsets), of
    ``gaps`` (the analysis' idle gaps as ``GAP_SLICE_SCHEMA`` rows) on a track of their own,
    and of the allocator events (the memory table) as Kineto's ``[memory]`` instants."""
    ev = (run.events if events is None else events).sort("start_ns")
    host_pid = int(run.meta.get("pid") or 0)
    multi_rank = ev["rank"].n_unique() > 1 if ev.height else False
    ev = _lanes(ev, host_pid, multi_rank)
    yield from _lane_names(run, ev)
    for row in ev.iter_rows(named=True):
        kind = row["kind"]
        on_device = row["_on_device"]
        pid, tid = row["_pid"], row["_tid"]
        extra: dict[str, Any] = {}
        if on_device and kind in STREAM_KINDS:
            extra["device"] = int(row["device"].rpartition(":")[2])
            extra["stream"] = tid
        if row["correlation_id"] is not None:
            extra["correlation"] = row["correlation_id"]
        extra["accelscope_kind"] = kind
        extra["accelscope_device"] = row["device"]
        if multi_rank:
            extra["accelscope_rank"] = row["rank"]
        cat = KIND_CATEGORY.get(kind, "other")
        if on_device and kind == S.ANNOTATION:
            cat = "gpu_user_annotation"
        ts = _us(row["start_ns"])
        yield _encode({"ph": "X", "cat": cat, "name": row["name"], "pid": pid, "tid": tid, "ts": ts, "dur": _us(row["dur_ns"]), "args": _args(row["args"], extra)})
        if row["correlation_id"] is not None and (kind == S.RUNTIME or (on_device and kind in STREAM_KINDS)):
            flow = {"ph": "f" if on_device else "s", "id": row["correlation_id"], "pid": pid, "tid": tid, "ts": ts, "cat": "ac2g", "name": "ac2g"}
            if on_device:
                flow["bp"] = "e"
            yield _encode(flow)
    # Each rank's training process: where its host counters and a CPU-only rank's gaps go.
    host = ev.filter(~pl.col("_on_device"))
    steps = host.filter(pl.col("kind") == S.STEP)
    rank_pid = dict((steps if steps.height else host).group_by("rank").agg(pl.col("_pid").mode().first()).iter_rows())
    named = set(ev["_pid"].unique().to_list())
    if gaps is not None and gaps.height:
        g = _placed(gaps.sort("start_ns"), rank_pid, host_pid, multi_rank)
        yield from _process_names(g, named, multi_rank)
        yield from _gap_events(ev, g)
    cs = run.counters if counters is None else counters
    cs = _placed(cs.sort("time_ns").filter(pl.col("value").is_not_null()), rank_pid, host_pid, multi_rank)
    yield from _process_names(cs, named, multi_rank)
    for name, pid, ts, value in cs.select("name", "_pid", "time_ns", "value").iter_rows():
        yield _encode({"ph": "C", "name": name, "pid": pid, "tid": 0, "ts": _us(ts), "args": {name: value}})
    yield from _memory_events(run.memory if memory is None else memory, rank_pid, host_pid, multi_rank)


# c10::DeviceType of the devices the memory table names (kineto_memory.py reads them back;
# ``accelscope_device`` keeps the name where the enum cannot: rocm, tpu).
_DEVICE_TYPE = {"cpu": 0, "cuda": 1, "rocm": 6, "xla": 9, "tpu": 9, "xpu": 12, "mps": 13, "hpu": 15, "mtia": 19}


def _memory_events(mem: pl.DataFrame, rank_pid: dict[int, int], host_pid: int, multi_rank: bool) -> Iterator[bytes]:
    """The memory table as ``[memory]`` instants on the allocating thread, with the args
    Kineto writes (``Device Type``, ``Device Id``, ``Bytes``, ``Total Allocated``, ``Total
    Reserved``, ``Addr``), so that HTA and a re-import read them as torch's own."""
    if mem.height == 0:
        return
    own = pl.col("rank").replace_strict(rank_pid, default=host_pid, return_dtype=pl.Int64) if rank_pid else pl.lit(host_pid, dtype=pl.Int64)
    kind = pl.col("device").str.extract(r"^([^:]+)")
    rows = mem.sort("time_ns", maintain_order=True).select(
        pl.coalesce("pid", own).alias("pid"), pl.col("tid").fill_null(0), "time_ns", "device", "rank",
        kind.replace_strict(_DEVICE_TYPE, default=None, return_dtype=pl.Int64).alias("type"),
        pl.when(kind == "cpu").then(-1).otherwise(pl.col("device").str.extract(r":(\d+)$").cast(pl.Int64)).alias("index"),
        "bytes", "total_allocated_bytes", "total_reserved_bytes", "addr", "stack",
    )
    for pid, tid, ts, device, rank, dtype, index, size, total, reserved, addr, stack in rows.iter_rows():
        args: dict[str, Any] = {"Device Type": dtype, "Device Id": index, "Bytes": size}
        if total is not None:
            args["Total Allocated"] = total
        if reserved is not None:
            args["Total Reserved"] = reserved
        if addr is not None:
            args["Addr"] = addr
        args["accelscope_device"] = device
        if multi_rank:
            args["accelscope_rank"] = rank
        if stack is not None:
            args["accelscope_stack"] = stack
        yield _encode({"ph": "i", "s": "t", "cat": "cpu_instant_event", "name": "[memory]", "pid": pid, "tid": tid, "ts": _us(ts), "args": args})


def _process_label(device: str, rank: int, on_device: bool, multi_rank: bool) -> str:
    return (device.upper() + (f" (rank {rank})" if multi_rank else "")) if on_device else f"host (rank {rank})"


def _process_names(placed: pl.DataFrame, named: set[int], multi_rank: bool) -> Iterator[bytes]:
    """``process_name`` records for the pids of ``placed`` rows (``_placed``) not yet named:
    a device with samples but no slices (GPU metrics of a light-mode run)."""
    for rank, device, on_device, pid in placed.unique("_pid", keep="first", maintain_order=True).select("rank", "device", "_on_device", "_pid").iter_rows():
        if pid not in named:
            named.add(pid)
            yield _encode({"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": _process_label(device, rank, on_device, multi_rank)}})


def _placed(frame: pl.DataFrame, rank_pid: dict[int, int], host_pid: int, multi_rank: bool) -> pl.DataFrame:
    """Rows with a rank and a device but no thread (counter samples, gaps) with the ``_pid``
    they go on: their device's, or on the host their rank's training process."""
    nothing = pl.lit(None, dtype=pl.Int64)
    placed = _lanes(frame.with_columns(pid=nothing, tid=nothing, stream=nothing), host_pid, multi_rank)
    own = pl.col("rank").replace_strict(rank_pid, default=host_pid, return_dtype=pl.Int64) if rank_pid else pl.lit(host_pid, dtype=pl.Int64)
    return placed.with_columns(_pid=pl.when(pl.col("_on_device")).then(pl.col("_pid")).otherwise(own))


def _gap_events(ev: pl.DataFrame, g: pl.DataFrame) -> Iterator[bytes]:
    """The idle gaps (``_placed``) as ``X`` slices of category GAP_CATEGORY on a track of their
    own (GAP_TRACK) under their device's pid (a CPU-only rank's: under its training process),
    with the name and args the analysis gave them."""
    taken = set(ev.select("_pid", "_tid").unique().iter_rows())
    tids: dict[int, int] = {}
    for pid in g["_pid"].unique(maintain_order=True).to_list():
        tid = GAP_TID
        while (pid, tid) in taken:
            tid -= 1
        tids[pid] = tid
        yield _encode({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "args": {"name": GAP_TRACK}})
        yield _encode({"ph": "M", "name": "thread_sort_index", "pid": pid, "tid": tid, "args": {"sort_index": -1}})
    for pid, start_ns, dur_ns, name, args in g.select("_pid", "start_ns", "dur_ns", "name", "args").iter_rows():
        yield _encode({"ph": "X", "cat": GAP_CATEGORY, "name": name, "pid": pid, "tid": tids[pid], "ts": _us(start_ns), "dur": _us(dur_ns), "args": msgspec.Raw(args.encode())})


# What ``gaps`` holds: one idle gap per row, named and annotated by the analysis.
GAP_SLICE_SCHEMA = {"rank": pl.Int64, "device": pl.String, "start_ns": pl.Int64, "dur_ns": pl.Int64, "name": pl.String, "args": pl.String}


def _header(run: Run, ranks: list[int]) -> dict[str, Any]:
    header: dict[str, Any] = {
        "schemaVersion": 1,
        "displayTimeUnit": "ms",
        "deviceProperties": run.meta.get("device_properties", []),
        "otherData": {
            "accelscope": {
                "export_version": EXPORT_VERSION,
                "run_schema_version": run.meta.get("schema_version"),
                "run": run.name,
                "clock": run.meta.get("clock"),
                "framework": run.meta.get("framework"),
                "ranks": ranks,
            }
        },
    }
    if len(ranks) == 1:
        header["distributedInfo"] = {"rank": ranks[0]}
    return header


def _write_file(run: Run, out: Path, ranks: list[int], events: pl.DataFrame, counters: pl.DataFrame, gaps: pl.DataFrame | None,
                memory: pl.DataFrame | None = None) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    opener = gzip.open if out.name.endswith(".gz") else open
    with opener(tmp, "wb") as fh:
        _write(fh, _header(run, ranks), iter_trace_events(run, events, counters, gaps, memory))
    os.replace(tmp, out)
    return out


def _ranks(run: Run) -> list[int]:
    return sorted(run.events["rank"].unique().to_list()) if run.events.height else (run.meta.get("ranks") or [0])


def export_chrome_trace(run: Run, out: str | os.PathLike[str], gaps: pl.DataFrame | None = None) -> Path:
    """Write ``run`` as one Chrome trace JSON file; gzip-compressed when ``out`` ends in ``.gz``.

    ``gaps``: the analysis' idle gaps as slices (``accelscope.analysis.gap_slices``, columns
    ``GAP_SLICE_SCHEMA``), written on a track of their own ("accelscope idle gaps") so that
    Perfetto shows why each device sat idle."""
    return _write_file(run, Path(out), _ranks(run), run.events, run.counters, gaps)


def export_per_rank(run: Run, directory: str | os.PathLike[str], gz: bool = True, gaps: pl.DataFrame | None = None) -> list[Path]:
    """Write one ``rank-N.json[.gz]`` per rank into ``directory`` (what HTA loads), each with
    its rank's share of ``gaps`` (see ``export_chrome_trace``)."""
    directory = Path(directory)
    suffix = ".json.gz" if gz else ".json"
    return [
        _write_file(run, directory / f"rank-{r}{suffix}", [r], run.events.filter(pl.col("rank") == r), run.counters.filter(pl.col("rank") == r),
                    None if gaps is None else gaps.filter(pl.col("rank") == r), run.memory.filter(pl.col("rank") == r))
        for r in _ranks(run)
    ]


def _write(fh: IO[bytes], header: dict[str, Any], events: Iterator[bytes]) -> None:
    # Default separators (", ", ": "): HTA finds the rank with the pattern '"rank": N'.
    head = json.dumps(header).encode()
    fh.write(head[:-1] + b', "traceEvents": [\n')
    first = True
    for text in events:
        if not first:
            fh.write(b",\n")
        fh.write(text)
        first = False
    fh.write(b"\n]}\n")
