"""torch.profiler's allocator events (``[memory]`` instants) to the memory table.

With ``profile_memory=True`` Kineto writes one instant event per allocator call, on the
allocating host thread, with a signed size (+ allocation, - free). Three generations are in
use, and all read the same way (missing keys are null):

* 2021 (TensorBoard plugin samples): ``args`` = ``Device Type``, ``Device Id``, ``Bytes``;
* about 2022 on: ``Total Allocated``, ``Total Reserved`` (the allocator's totals after the
  event) and ``Addr`` (a free carries its allocation's address), ``Ev Idx``;
* newest: ``finished`` too (not kept: its meaning is not documented).

``Device Type`` is c10's ``DeviceType`` enum; devices are named as the events table names
them, so an AMD GPU (HIP, 6) is ``cuda:N`` like its kernels, and the CPU allocator is ``cpu``.

The reader (kineto.py) hands over each batch's memory events with their timestamps already
converted as the slices' are; their ``args`` are decoded here in one msgspec call per batch
into a struct with renamed fields, and only Arrow-bound columns are kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import numpy as np
import polars as pl
import pyarrow as pa

from accelscope.traces import schema as S

MEMORY_EVENT = "[memory]"

# c10::DeviceType (torch/headeronly/core/DeviceType.h), lower-cased; HIP is named as the
# events table names AMD device work (kineto.py: "cuda:N").
DEVICE_TYPES = {
    0: "cpu", 1: "cuda", 2: "mkldnn", 3: "opengl", 4: "opencl", 5: "ideep", 6: "cuda", 7: "fpga", 8: "maia", 9: "xla",
    10: "vulkan", 11: "metal", 12: "xpu", 13: "mps", 14: "meta", 15: "hpu", 16: "ve", 17: "lazy", 18: "ipu", 19: "mtia",
    20: "privateuseone",
}
_INT64_MAX = 2**63 - 1


class _MemoryArgs(msgspec.Struct):
    """The ``args`` of one ``[memory]`` event: only what the memory table keeps."""

    device_type: int | None = msgspec.field(default=None, name="Device Type")
    device_id: int | None = msgspec.field(default=None, name="Device Id")
    bytes: int | None = msgspec.field(default=None, name="Bytes")
    total_allocated: int | None = msgspec.field(default=None, name="Total Allocated")
    total_reserved: int | None = msgspec.field(default=None, name="Total Reserved")
    addr: int | None = msgspec.field(default=None, name="Addr")
    # Written by accelscope's Chrome export, so that re-importing it is lossless.
    accelscope_device: str | None = None
    accelscope_rank: int | None = None
    accelscope_stack: str | None = None  # the memory table's stack (a snapshot run's allocation stacks)


_decode_batch = msgspec.json.Decoder(list[_MemoryArgs | None]).decode
_decode_one = msgspec.json.Decoder(_MemoryArgs | None).decode
_DECODE_ERRORS = (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError)


def _int64(values: list[int | None]) -> pl.Series:
    """Integers as Int64; an unsigned 64-bit value beyond it (an address) keeps its bits."""
    return pl.Series([v - 2**64 if v is not None and v > _INT64_MAX else v for v in values], dtype=pl.Int64)


@dataclass
class MemorySamples:
    """Accumulates the ``[memory]`` events of one file, batch by batch, as Polars frames."""

    path: Path
    frames: list[pl.DataFrame] = field(default_factory=list)
    dropped: int = 0  # events whose args could not be read as an allocator event (no Bytes, not integers)

    def extend(self, other: MemorySamples) -> None:
        """Add ``other``'s batches after these (a later part of the same file)."""
        self.frames += other.frames
        self.dropped += other.dropped

    def add(self, time_ns: np.ndarray, pids: list[int | None], tids: list[int | None], raw_args: list[bytes]) -> None:
        """One batch: the events' times (ns, before the header's base time), threads and raw ``args`` JSON."""
        try:
            args = _decode_batch(b"[" + b",".join(r or b"null" for r in raw_args) + b"]")
        except _DECODE_ERRORS:  # one odd event must not cost the others: read them one by one
            args = []
            for r in raw_args:
                try:
                    args.append(_decode_one(r or b"null"))
                except _DECODE_ERRORS:
                    args.append(None)
        none = _MemoryArgs()
        args = [a if a is not None else none for a in args]
        frame = pl.DataFrame(
            {
                "time_ns": pl.Series(time_ns, dtype=pl.Int64),
                "type": pl.Series([a.device_type for a in args], dtype=pl.Int64),
                "index": pl.Series([a.device_id for a in args], dtype=pl.Int64),
                "bytes": _int64([a.bytes for a in args]),
                "total_allocated_bytes": _int64([a.total_allocated for a in args]),
                "total_reserved_bytes": _int64([a.total_reserved for a in args]),
                "addr": _int64([a.addr for a in args]),
                "pid": pl.Series(pids, dtype=pl.Int64),
                "tid": pl.Series(tids, dtype=pl.Int64),
                "a_device": pl.Series([a.accelscope_device for a in args], dtype=pl.String),
                "a_rank": pl.Series([a.accelscope_rank for a in args], dtype=pl.Int32),
                "stack": pl.Series([a.accelscope_stack for a in args], dtype=pl.String),
            }
        )
        kept = frame.filter(pl.col("bytes").is_not_null())
        self.dropped += frame.height - kept.height
        if kept.height:
            self.frames.append(kept)

    def table(self, base_ns: int, rank: int) -> pa.Table | None:
        """The memory table (MEMORY_SCHEMA) on the events' clock, in file order; None without events."""
        if not self.frames:
            return None
        frame = pl.concat(self.frames)
        kind = pl.col("type").replace_strict(DEVICE_TYPES, default=pl.lit("device_type_") + pl.col("type").cast(pl.String), return_dtype=pl.String)
        kind = pl.coalesce(kind, pl.lit("unknown"))
        device = pl.when(kind == "cpu").then(pl.lit("cpu")).otherwise(kind + ":" + pl.coalesce(pl.col("index").clip(lower_bound=0), pl.lit(0)).cast(pl.String))
        frame = frame.with_columns(
            time_ns=pl.col("time_ns") + base_ns,
            device=pl.coalesce("a_device", device),
            rank=pl.coalesce("a_rank", pl.lit(rank, dtype=pl.Int32)),
        )
        return frame.select(S.MEMORY_COLUMNS).to_arrow().cast(S.MEMORY_SCHEMA)
