"""Export a run to Chrome trace JSON (Perfetto, chrome://tracing, HTA).

Slices become ``X`` events, counters ``C`` events, process and thread names ``M``
events, and launch->device-work links ``ac2g`` flow events where the correlation id is
known. Timestamps are microseconds relative to ``baseTimeNanoseconds``, as Kineto
writes them, so precision survives the float. A versioned ``otherData.accelscope``
block records where the file came from.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import IO, Any, Iterator

import polars as pl

from accelscope.traces import schema as S
from accelscope.traces.run import Run

EXPORT_VERSION = 1
DEVICE_PID_PER_RANK = 1_000_000
KIND_CATEGORY = {
    S.KERNEL: "kernel",
    S.MEMCPY: "gpu_memcpy",
    S.MEMSET: "gpu_memset",
    S.CPU_OP: "cpu_op",
    S.RUNTIME: "cuda_runtime",
    S.PYTHON: "python_function",
    S.INPUT_WAIT: "input_wait",
    S.STEP: "user_annotation",
    S.ANNOTATION: "user_annotation",
    S.OTHER: "other",
}


def _device_index(device: str) -> int | None:
    head, _, index = device.partition(":")
    return int(index) if head != "cpu" and index.isdigit() else None


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def iter_trace_events(run: Run, base_ns: int) -> Iterator[str]:
    """Yield the JSON text of every trace event of ``run``, one event per string."""
    ev = run.events.sort("start_ns")
    host_pid = int(run.meta.get("pid") or 0)
    multi_rank = len(run.meta.get("ranks") or [0]) > 1
    threads_seen: set[tuple[int, int]] = set()
    names = run.thread_names()
    for (pid, tid), name in names.items():
        threads_seen.add((pid, tid))
        yield _dumps({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "args": {"name": name}})
    pids_named: set[int] = set()
    for row in ev.iter_rows(named=True):
        dev_index = _device_index(row["device"])
        on_device = dev_index is not None
        pid = dev_index if on_device else (row["pid"] if row["pid"] is not None else host_pid)
        if multi_rank and on_device:
            pid = DEVICE_PID_PER_RANK * (row["rank"] + 1) + dev_index  # device pids repeat per rank
        tid = (row["stream"] if row["stream"] is not None else 0) if on_device else (row["tid"] if row["tid"] is not None else 0)
        if pid not in pids_named:
            pids_named.add(pid)
            label = f"{row['device'].upper()}" if on_device else f"host (rank {row['rank']})"
            yield _dumps({"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": label}})
        if (pid, tid) not in threads_seen:
            threads_seen.add((pid, tid))
            tname = f"stream {tid}" if on_device else f"thread {tid}"
            yield _dumps({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "args": {"name": tname}})
        args = json.loads(row["args"]) if row["args"] else {}
        if on_device:
            args["device"] = dev_index
            args["stream"] = tid
        if row["correlation_id"] is not None:
            args["correlation"] = row["correlation_id"]
        args["accelscope_kind"] = row["kind"]
        args["accelscope_device"] = row["device"]
        if multi_rank:
            args["accelscope_rank"] = row["rank"]
        cat = KIND_CATEGORY.get(row["kind"], "other")
        if on_device and row["kind"] == S.ANNOTATION:
            cat = "gpu_user_annotation"
        ts_us = (row["start_ns"] - base_ns) / 1000.0
        yield _dumps({"ph": "X", "cat": cat, "name": row["name"], "pid": pid, "tid": tid, "ts": ts_us, "dur": row["dur_ns"] / 1000.0, "args": args})
        if row["correlation_id"] is not None and (row["kind"] == S.RUNTIME or on_device):
            flow = {"ph": "s" if not on_device else "f", "id": row["correlation_id"], "pid": pid, "tid": tid, "ts": ts_us, "cat": "ac2g", "name": "ac2g"}
            if on_device:
                flow["bp"] = "e"
            yield _dumps(flow)
    counters = run.counters.sort("time_ns")
    for row in counters.iter_rows(named=True):
        if row["value"] is None:
            continue
        dev_index = _device_index(row["device"])
        pid = dev_index if dev_index is not None else host_pid
        yield _dumps({"ph": "C", "name": row["name"], "pid": pid, "tid": 0, "ts": (row["time_ns"] - base_ns) / 1000.0, "args": {row["name"]: row["value"]}})


def export_chrome_trace(run: Run, out: str | os.PathLike[str]) -> Path:
    """Write ``run`` as Chrome trace JSON; gzip-compressed when ``out`` ends in ``.gz``."""
    out = Path(out)
    starts = [t for t in (run.events["start_ns"].min() if run.events.height else None, run.counters["time_ns"].min() if run.counters.height else None) if t is not None]
    base_ns = (min(starts) // 1_000_000_000) * 1_000_000_000 if starts else 0
    header = {
        "schemaVersion": 1,
        "displayTimeUnit": "ms",
        "baseTimeNanoseconds": base_ns,
        "deviceProperties": run.meta.get("device_properties", []),
        "otherData": {
            "accelscope": {
                "export_version": EXPORT_VERSION,
                "run_schema_version": run.meta.get("schema_version"),
                "run": run.name,
                "clock": run.meta.get("clock"),
                "framework": run.meta.get("framework"),
            }
        },
    }
    ranks = run.meta.get("ranks") or [0]
    if len(ranks) == 1:
        header["distributedInfo"] = {"rank": ranks[0]}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    opener = gzip.open if out.suffix == ".gz" else open
    with opener(tmp, "wt", encoding="utf-8") as fh:
        _write(fh, header, iter_trace_events(run, base_ns))
    os.replace(tmp, out)
    return out


def _write(fh: IO[str], header: dict[str, Any], events: Iterator[str]) -> None:
    head = _dumps(header)
    fh.write(head[:-1] + ',"traceEvents":[\n')
    first = True
    for text in events:
        if not first:
            fh.write(",\n")
        fh.write(text)
        first = False
    fh.write("\n]}\n")
