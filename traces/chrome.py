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
``rank-N.json[.gz]`` per rank (HTA reads one file per rank).
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

_encode = msgspec.json.Encoder().encode


def _device_index(device: str) -> int | None:
    head, _, index = device.partition(":")
    return int(index) if head != "cpu" and index.isdigit() else None


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


def _lane_names(run: Run) -> dict[tuple[int, int, int], str]:
    """(rank, recorded pid, tid) -> the thread's recorded name, stripped (Kineto's stream
    names end in a space)."""
    rank0 = int(run.meta.get("rank") or 0)
    out: dict[tuple[int, int, int], str] = {}
    for t in run.meta.get("threads", []):
        if isinstance(t, dict) and isinstance(t.get("pid"), int) and isinstance(t.get("tid"), int) and isinstance(t.get("name"), str):
            name = t["name"].strip()
            if name:
                rank = t.get("rank")
                out[(rank if isinstance(rank, int) else rank0, t["pid"], t["tid"])] = name
    return out


def iter_trace_events(run: Run, events: pl.DataFrame | None = None, counters: pl.DataFrame | None = None) -> Iterator[bytes]:
    """Yield the JSON text of every trace event of ``run`` (or of the given subsets)."""
    ev = (run.events if events is None else events).sort("start_ns")
    host_pid = int(run.meta.get("pid") or 0)
    multi_rank = ev["rank"].n_unique() > 1 if ev.height else False
    # Lane names are written where their slices are, when first met: the recorded pids of
    # device streams are not the pids the export gives them (one per rank and device).
    names = _lane_names(run)
    stream_names = run.stream_names()  # device lanes' own names ("XLA Ops"): Perfetto shows them, a re-import keeps them
    threads_seen: set[tuple[int, int]] = set()
    pids_named: set[int] = set()
    for row in ev.iter_rows(named=True):
        kind = row["kind"]
        dev_index = _device_index(row["device"])
        on_device = dev_index is not None
        pid = dev_index if on_device else (row["pid"] if row["pid"] is not None else host_pid)
        if multi_rank and on_device:
            pid = DEVICE_PID_PER_RANK * (row["rank"] + 1) + dev_index  # device pids repeat per rank
        tid = (row["stream"] if row["stream"] is not None else 0) if on_device else (row["tid"] if row["tid"] is not None else 0)
        if pid not in pids_named:
            pids_named.add(pid)
            label = row["device"].upper() if on_device else f"host (rank {row['rank']})"
            yield _encode({"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": label}})
        if (pid, tid) not in threads_seen:
            threads_seen.add((pid, tid))
            if on_device:
                lane = stream_names.get((row["rank"], row["device"], tid)) or names.get((row["rank"], dev_index, tid)) or f"stream {tid}"
            else:
                lane = names.get((row["rank"], pid, tid)) or f"thread {tid}"
            yield _encode({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "args": {"name": lane.strip() or f"thread {tid}"}})
        extra: dict[str, Any] = {}
        if on_device and kind in STREAM_KINDS:
            extra["device"] = dev_index
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
    cs = run.counters if counters is None else counters
    for row in cs.sort("time_ns").iter_rows(named=True):
        if row["value"] is None:
            continue
        dev_index = _device_index(row["device"])
        pid = dev_index if dev_index is not None else host_pid
        yield _encode({"ph": "C", "name": row["name"], "pid": pid, "tid": 0, "ts": _us(row["time_ns"]), "args": {row["name"]: row["value"]}})


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


def _write_file(run: Run, out: Path, ranks: list[int], events: pl.DataFrame, counters: pl.DataFrame) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    opener = gzip.open if out.name.endswith(".gz") else open
    with opener(tmp, "wb") as fh:
        _write(fh, _header(run, ranks), iter_trace_events(run, events, counters))
    os.replace(tmp, out)
    return out


def export_chrome_trace(run: Run, out: str | os.PathLike[str]) -> Path:
    """Write ``run`` as one Chrome trace JSON file; gzip-compressed when ``out`` ends in ``.gz``."""
    ranks = sorted(run.events["rank"].unique().to_list()) if run.events.height else (run.meta.get("ranks") or [0])
    return _write_file(run, Path(out), ranks, run.events, run.counters)


def export_per_rank(run: Run, directory: str | os.PathLike[str], gz: bool = True) -> list[Path]:
    """Write one ``rank-N.json[.gz]`` per rank into ``directory`` (what HTA loads)."""
    directory = Path(directory)
    ranks = sorted(run.events["rank"].unique().to_list()) if run.events.height else (run.meta.get("ranks") or [0])
    suffix = ".json.gz" if gz else ".json"
    return [
        _write_file(run, directory / f"rank-{r}{suffix}", [r], run.events.filter(pl.col("rank") == r), run.counters.filter(pl.col("rank") == r))
        for r in ranks
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
