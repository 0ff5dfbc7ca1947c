"""Kineto (torch.profiler) Chrome-trace JSON to the columnar event model.

Handles the current categories (``kernel``, ``cuda_runtime``, ``cpu_op``, ...) and the
2020-2021 ones (``Kernel``, ``Runtime``, ``Operator``, ...). Timestamps are microseconds
relative to ``baseTimeNanoseconds`` when the trace has it (PyTorch >= 2.0), else absolute.
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa

from accelscope.errors import AccelscopeError
from accelscope.traces import schema as S

# Lower-cased Kineto category -> our kind.
CATEGORY_KIND = {
    "kernel": S.KERNEL,
    "gpu_memcpy": S.MEMCPY,
    "memcpy": S.MEMCPY,
    "gpu_memset": S.MEMSET,
    "memset": S.MEMSET,
    "cuda_runtime": S.RUNTIME,
    "cuda_driver": S.RUNTIME,
    "runtime": S.RUNTIME,
    "cpu_op": S.CPU_OP,
    "operator": S.CPU_OP,
    "python_function": S.PYTHON,
    "user_annotation": S.ANNOTATION,
    "gpu_user_annotation": S.ANNOTATION,
}
_DROP_ARGS = {"External id", "Ev Idx", "Record function id", "correlation", "device", "stream"}
_STEP_RE = re.compile(r"^ProfilerStep#(\d+)$")
_INT_RE = re.compile(r"(\d+)")


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    if isinstance(value, str):
        m = _INT_RE.search(value)
        return int(m.group(1)) if m else None
    return None


def load_json(path: str | Path) -> dict[str, Any]:
    """Read a Kineto JSON file (``.json`` or ``.json.gz``), with one-line errors."""
    p = Path(path)
    try:
        with (gzip.open(p, "rb") if p.suffix == ".gz" else open(p, "rb")) as fh:
            doc = json.loads(fh.read())
    except (OSError, EOFError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AccelscopeError(f"{p}: not a readable trace ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("traceEvents"), list):
        raise AccelscopeError(f"{p}: JSON without a traceEvents list is not a Kineto trace")
    return doc


def to_events(doc: dict[str, Any], rank: int = 0, keep_steps: bool = True) -> tuple[pa.Table, list[dict[str, Any]]]:
    """Convert a parsed Kineto document to (events table, thread names).

    ``keep_steps=False`` drops ``ProfilerStep#N`` slices, for callers that record steps
    themselves.
    """
    base_ns = int(doc.get("baseTimeNanoseconds") or 0)
    cols: dict[str, list] = {c: [] for c in S.EVENT_COLUMNS}
    threads: list[dict[str, Any]] = []
    for ev in doc["traceEvents"]:
        if not isinstance(ev, dict):
            continue
        ph = ev.get("ph")
        if ph == "M":
            if ev.get("name") == "thread_name":
                pid, tid = _as_int(ev.get("pid")), _as_int(ev.get("tid"))
                name = (ev.get("args") or {}).get("name")
                if pid is not None and tid is not None and name:
                    threads.append({"pid": pid, "tid": tid, "name": str(name)})
            continue
        if ph != "X" or "ts" not in ev:
            continue
        cat = str(ev.get("cat", "")).lower()
        kind = CATEGORY_KIND.get(cat, S.OTHER)
        name = str(ev.get("name", ""))
        # ProfilerStep#N is a user annotation today, an "Operator" in 2020-2021 traces.
        if kind in (S.ANNOTATION, S.CPU_OP) and _STEP_RE.match(name):
            if not keep_steps:
                continue
            kind = S.STEP
        args = ev.get("args") or {}
        on_device = kind in S.DEVICE_KINDS or cat == "gpu_user_annotation"
        device_index = _as_int(args.get("device"))
        if device_index is None and on_device:
            device_index = _as_int(ev.get("pid"))
        cols["start_ns"].append(base_ns + round(float(ev["ts"]) * 1000))
        cols["dur_ns"].append(round(float(ev.get("dur", 0)) * 1000))
        cols["kind"].append(kind)
        cols["name"].append(name)
        cols["device"].append(f"cuda:{device_index}" if on_device else "cpu")
        cols["stream"].append(_as_int(args.get("stream", ev.get("tid"))) if on_device else None)
        cols["pid"].append(_as_int(ev.get("pid")))
        cols["tid"].append(_as_int(ev.get("tid")))
        cols["rank"].append(rank)
        cols["correlation_id"].append(_as_int(args.get("correlation")))
        kept = {k: v for k, v in args.items() if k not in _DROP_ARGS}
        cols["args"].append(json.dumps(kept, separators=(",", ":")) if kept else None)
    table = pa.table({c: pa.array(cols[c], type=S.EVENT_SCHEMA.field(c).type) for c in S.EVENT_COLUMNS}, schema=S.EVENT_SCHEMA)
    return table, threads
