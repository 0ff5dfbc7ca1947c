"""PyTorch memory snapshots (``torch.cuda.memory._dump_snapshot``) to the memory table.

A snapshot is a pickled dict: ``segments`` (the caching allocator's state when it was
taken: per segment ``device``, ``total_size``, ``allocated_size``, ``requested_size``,
``blocks``) and, when ``torch.cuda.memory._record_memory_history()`` was on,
``device_traces``: per device, the allocator's last actions in order (``action``,
``addr``, ``size``, ``stream``, ``frames``, and from torch 2.1 ``time_us``, epoch µs).

The rows of the memory table are the allocations and their frees, per device ``cuda:N``:

* ``alloc``: + ``size`` (the size asked for; the allocator rounds blocks up);
* a free: - ``size`` at ``free_completed`` (the block can be reused), or at
  ``free_requested`` where the trace ends before its completion (a free waiting on
  another stream when the snapshot was taken);
* ``total_allocated_bytes``: the running sum lined up with the state at the end (the
  segments' ``requested_size``): what was held before the trace began (a ring buffer of
  ``max_entries`` forgets its oldest actions) is counted too. Left null, so that the
  peak is flagged relative, where the lining up is not sound (it would make a total
  negative: the snapshot was dumped after recording stopped and more was freed since);
* ``total_reserved_bytes``: likewise from ``segment_alloc``/``segment_map`` (+) and
  ``segment_free``/``segment_unmap`` (-), lined up with the segments' ``total_size``;
* ``stack``: the entry's frames, innermost first, ``file:line function`` per line, at
  most STACK_FRAMES: the Python ones where there are any (a snapshot recorded with
  ``stacks="all"`` has C++ frames too), else the C++ ones without their argument lists
  (allocations of autograd's backward thread have no Python frames); null where it was
  recorded without stacks (``context=None``).

Not supported, each with one clear line: a snapshot with no trace entries (the state
alone, or torch 1.13's list of segments: no timeline to import). Entries without
``time_us`` (torch 2.0) are imported in order, 1 µs apart, on a clock named
``entry_order``. ``oom`` entries are kept in the metadata, not as rows.

A pickle can run any code when loaded, so the file is read by an unpickler that refuses
every class: a snapshot is plain dicts, lists, tuples, strings and numbers.
"""

from __future__ import annotations

import gzip
import io
import pickle
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from accelscope.traces import schema as S
from accelscope.traces.chrome_json import NotATraceError, TraceFormatError

STACK_FRAMES = 32  # innermost frames kept per entry
_MEMORY_ACTIONS = ("alloc", "free_requested", "free_completed")
_RESERVE = {"segment_alloc": 1, "segment_map": 1, "segment_free": -1, "segment_unmap": -1}
_INT64_MAX = 2**63 - 1
_PICKLE_START = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


class SnapshotError(TraceFormatError):
    """A snapshot that cannot be read (damaged, truncated, or holding no trace)."""


class NotASnapshotError(SnapshotError, NotATraceError):
    """A pickle that is not a PyTorch memory snapshot: skipped in directories."""


class _PlainUnpickler(pickle.Unpickler):
    """Builds only plain containers and scalars: any class or function a pickle names is
    refused before it is imported, so nothing in the file runs."""

    def find_class(self, module: str, name: str) -> Any:
        raise NotASnapshotError(f"it names {module}.{name}, and a memory snapshot names no class (not loaded: a pickle can run code)")

    def persistent_load(self, pid: Any) -> Any:
        raise NotASnapshotError("it holds persistent ids, which a memory snapshot does not (not loaded)")


def sniff(start: bytes) -> bool:
    """A pickle (protocol 2 to 5) whose top dict opens with a snapshot's keys."""
    return start[:2] in _PICKLE_START and (b"segments" in start or b"device_traces" in start)


def load(path: Path) -> dict[str, Any]:
    """The snapshot dict of ``path`` (gzip allowed), read with the class-refusing unpickler."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise SnapshotError(f"{path}: cannot read ({exc})") from None
    if raw[:2] not in _PICKLE_START and raw[:1] not in (b"(", b"}", b"]"):
        raise NotASnapshotError(f"{path}: not a pickle, so not a PyTorch memory snapshot")
    try:
        doc = _PlainUnpickler(io.BytesIO(raw)).load()
    except NotASnapshotError as exc:
        raise NotASnapshotError(f"{path}: not a PyTorch memory snapshot: {exc}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError, MemoryError, RecursionError) as exc:
        raise SnapshotError(f"{path}: a damaged or truncated pickle ({type(exc).__name__}: {exc})") from None
    if isinstance(doc, list):
        raise SnapshotError(f"{path}: a list of allocator segments (torch 1.13's snapshot): the state alone, with no trace entries to import")
    if not isinstance(doc, dict) or not ({"segments", "device_traces"} & set(doc)):
        raise NotASnapshotError(f"{path}: a pickle of {type(doc).__name__}, not a PyTorch memory snapshot (no segments or device_traces)")
    traces = doc.get("device_traces")
    if not isinstance(traces, list) or not all(isinstance(t, list) for t in traces) or not any(traces):
        raise SnapshotError(f"{path}: a memory snapshot without trace entries (the allocator's state alone): record with "
                            "torch.cuda.memory._record_memory_history() before torch.cuda.memory._dump_snapshot()")
    return doc


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _addr(v: Any) -> int | None:
    """An address as Int64 (one beyond keeps its bits, as the Kineto reader does)."""
    v = _int(v)
    return v - 2**64 if v is not None and v > _INT64_MAX else v


def _stack(frames: Any) -> str | None:
    """``file:line function`` per frame, innermost first: the Python frames where the stack
    has any (C++ frames when it has none), at most STACK_FRAMES; None without frames."""
    if not isinstance(frames, list) or not frames:
        return None
    rows = [f for f in frames if isinstance(f, dict)]
    python = [f for f in rows if str(f.get("filename", "")).endswith(".py")]
    if python:
        return "\n".join(f"{f.get('filename')}:{f.get('line', 0)} {f.get('name', '?')}" for f in python[:STACK_FRAMES])
    # C++ frames only (an allocation of autograd's backward thread): names without their argument lists
    return "\n".join(f"{f.get('filename') or '??'}:{f.get('line', 0)} {str(f.get('name', '?')).split('(')[0]}" for f in rows[:STACK_FRAMES]) or None


def _columns(entries: list[Any], device: int) -> dict[str, list]:
    """One device's trace entries as columns, in trace order (one pass; a frames list shared
    by many entries, as torch pickles them, is formatted once)."""
    stacks: dict[int, str | None] = {}

    def stack(frames: Any) -> str | None:
        key = id(frames)
        if key not in stacks:
            stacks[key] = _stack(frames)
        return stacks[key]

    entries = [e for e in entries if isinstance(e, dict)]
    return {
        "action": [str(e.get("action")) for e in entries],
        "size": [_int(e.get("size")) for e in entries],
        "addr": [_addr(e.get("addr")) for e in entries],
        "time_us": [_int(e.get("time_us")) for e in entries],
        "device_free": [_int(e.get("device_free")) for e in entries],
        "stack": [stack(e.get("frames")) for e in entries],
        "device": [device] * len(entries),
        "order": list(range(len(entries))),
    }


def _final_state(segments: Any) -> pl.DataFrame:
    """Per device index, what the segments held when the snapshot was taken: ``held``
    (the requested bytes of allocated blocks) and ``reserved`` (the segments' sizes)."""
    rows = {"device": [], "held": [], "reserved": []}
    for seg in segments if isinstance(segments, list) else []:
        if not isinstance(seg, dict) or _int(seg.get("device")) is None:
            continue
        held = _int(seg.get("requested_size"))
        if held is None:  # older snapshots: the blocks' requested sizes, else the allocated size
            blocks = [b for b in seg.get("blocks") or [] if isinstance(b, dict) and b.get("state") == "active_allocated"]
            held = sum(_int(b.get("requested_size")) or _int(b.get("size")) or 0 for b in blocks) if blocks else _int(seg.get("allocated_size"))
        rows["device"].append(seg["device"])
        rows["held"].append(held)
        rows["reserved"].append(_int(seg.get("total_size")))
    frame = pl.DataFrame(rows, schema={"device": pl.Int64, "held": pl.Int64, "reserved": pl.Int64})
    return frame.group_by("device").agg(pl.col("held").sum(), pl.col("reserved").sum())


def _lined_up(running: pl.Expr, end: pl.Expr, final: str) -> pl.Expr:
    """``running`` (a per-device running sum, ``end`` where the trace ends) moved so that it
    ends at the device's ``final`` state; null for the whole device where that would make
    it negative."""
    shifted = running + (pl.col(final) - end)
    return pl.when((shifted.min().over("device") >= 0) & pl.col(final).is_not_null()).then(shifted)


def memory_table(doc: dict[str, Any], rank: int = 0) -> tuple[pa.Table, dict[str, Any]]:
    """The memory table (MEMORY_SCHEMA) of a loaded snapshot, and what the metadata should
    say about it (clock, devices, out-of-memory entries, rows whose totals are unknown)."""
    traces = doc["device_traces"]
    frame = pl.concat([pl.DataFrame(_columns(t, i), schema={"action": pl.String, "size": pl.Int64, "addr": pl.Int64, "time_us": pl.Int64,
                                                              "device_free": pl.Int64, "stack": pl.String, "device": pl.Int64, "order": pl.Int64})
                       for i, t in enumerate(traces)])
    timed = frame.height > 0 and frame["time_us"].null_count() == 0
    frame = frame.with_columns(
        time_ns=pl.col("time_us") * 1000 if timed else pl.col("order") * 1000,
        _reserve=pl.col("action").replace_strict(_RESERVE, default=0, return_dtype=pl.Int64) * pl.col("size").fill_null(0),
    ).with_columns(_reserved=pl.col("_reserve").cum_sum().over("device"))
    ooms = frame.filter(pl.col("action") == "oom").select(pl.format("cuda:{}", "device").alias("device"), "time_ns", pl.col("size").alias("requested_bytes"),
                                                          pl.col("device_free").alias("device_free_bytes"))
    # Each free belongs to the latest allocation at its address before it (a free before
    # any is of a block allocated before the trace began); it is counted at its completion.
    mem = frame.filter(pl.col("action").is_in(_MEMORY_ACTIONS) & pl.col("size").is_not_null()).with_columns(
        _gen=(pl.col("action") == "alloc").cast(pl.Int64).cum_sum().over("device", "addr"))
    completed = (pl.col("action") == "free_completed").any().over("device", "addr", "_gen")
    mem = mem.filter((pl.col("action") != "free_requested") | ~completed).with_columns(
        bytes=pl.when(pl.col("action") == "alloc").then(pl.col("size")).otherwise(-pl.col("size")))
    final = _final_state(doc.get("segments")).join(frame.group_by("device").agg(_reserved_end=pl.col("_reserved").last()), on="device", how="right")
    held = pl.col("bytes").cum_sum().over("device")
    mem = mem.join(final, on="device", how="left").with_columns(
        total_allocated_bytes=_lined_up(held, held.last().over("device"), "held"),
        total_reserved_bytes=_lined_up(pl.col("_reserved"), pl.col("_reserved_end"), "reserved"),
    )
    table = mem.select(
        "time_ns", pl.format("cuda:{}", "device").alias("device"), "bytes", "total_allocated_bytes", "total_reserved_bytes", "addr",
        pid=pl.lit(None, pl.Int64), tid=pl.lit(None, pl.Int64), rank=pl.lit(rank, pl.Int32), stack="stack",
    ).select(S.MEMORY_COLUMNS).to_arrow().cast(S.MEMORY_SCHEMA)
    lined = mem.group_by("device").agg(pl.col("total_allocated_bytes").is_not_null().all().alias("a"), pl.col("total_reserved_bytes").is_not_null().all().alias("r"))
    info = {
        "clock": ({"name": "unix_epoch_ns", "source": "memory snapshot time_us (epoch µs)"} if timed else
                  {"name": "entry_order", "source": "memory snapshot without time_us (torch 2.0): entries in order, 1 µs apart"}),
        "devices": [{"id": "cpu", "kind": "cpu"}] + [{"id": f"cuda:{i}", "kind": "gpu"} for i, t in enumerate(traces) if t],
        "snapshot": {
            "entries": frame.height,
            "ooms": ooms.to_dicts(),
            "totals_unknown": sorted(f"cuda:{d}" for d, a, r in lined.iter_rows() if not (a and r)),
            "allocator_settings": doc.get("allocator_settings") if isinstance(doc.get("allocator_settings"), dict) else None,
        },
    }
    return table, info


def read_snapshot(path: Path, rank: int = 0) -> tuple[pa.Table, dict[str, Any]]:
    """(memory table, metadata) of the snapshot at ``path``; raises SnapshotError (one line)."""
    table, info = memory_table(load(path), rank)
    if table.num_rows == 0:
        raise SnapshotError(f"{path}: a memory snapshot whose trace holds no allocations or frees ({info['snapshot']['entries']} entries)")
    return table, info


def snapshot_spans(memory: pa.Table) -> pa.Table:
    """The events table of a snapshot run (EVENT_SCHEMA): one host annotation per device,
    "memory trace cuda:N", over the time its trace covers. A snapshot records no slices;
    this says when its allocator events happened, so that the run has a time range."""
    spans = (pl.from_arrow(memory.select(["time_ns", "device", "rank"])).group_by("device", "rank", maintain_order=True)
             .agg(start_ns=pl.col("time_ns").min(), end_ns=pl.col("time_ns").max()))
    return spans.select(
        "start_ns", dur_ns=pl.col("end_ns") - pl.col("start_ns"), kind=pl.lit(S.OTHER), name=pl.lit("memory trace ") + pl.col("device"),
        device=pl.lit("cpu"), stream=pl.lit(None, pl.Int64), pid=pl.lit(None, pl.Int64), tid=pl.lit(None, pl.Int64), rank="rank",
        correlation_id=pl.lit(None, pl.Int64), args=pl.lit(None, pl.String),
    ).to_arrow().cast(S.EVENT_SCHEMA)
