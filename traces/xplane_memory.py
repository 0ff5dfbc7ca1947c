"""TensorFlow's and JAX's allocator events in an XSpace, to the memory table.

The host plane (``/host:CPU``) of a TF or JAX profile holds a ``MemoryAllocation`` or
``MemoryDeallocation`` event per allocator call (zero duration), on the calling thread,
with the allocator's state after the call among its stats: ``allocation_bytes`` (the
block), ``bytes_allocated`` (the allocator's in-use total: checked on the shared TF and
MI300 files, each event's total differs from the previous one by exactly ± its block),
``addr``, ``allocator_name`` (``GPU_0_bfc``, ``mklcpu``) or, on TPU hosts,
``index_on_host``. XProf's memory profile is built from the same events
(tests/traces/test_xplane_memory.py checks our peaks against it).

Devices are named as the run names them: ``GPU_N_bfc`` is the GPU plane of index N
(``cuda:N`` or ``rocm:N``), ``index_on_host`` N is ``tpu:N``, and host allocators
(``mklcpu``, ``cpu``, the pinned ``gpu_host_bfc``) are ``cpu``. ``bytes_reserved`` is not
kept: TF uses it for a TPU program's stack reservation, not the cached-but-free memory the
table's ``total_reserved_bytes`` means for torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import polars as pl
import pyarrow as pa

from accelscope.traces import schema as S

ALLOCATOR_EVENTS = {"MemoryAllocation": 1, "MemoryDeallocation": -1}


def _int(v: Any) -> int | None:
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


@dataclass
class MemoryEvents:
    """The allocator events of one XSpace, appended as the host lines are read (an event
    without a block size is not kept)."""

    cols: dict[str, list] = field(default_factory=lambda: {k: [] for k in ("time_ns", "bytes", "total_allocated_bytes", "addr", "pid", "tid",
                                                                                "allocator", "index_on_host")})

    def add(self, event: str, time_ns: int, pid: int, tid: int, stats: dict[str, Any]) -> None:
        """One ``MemoryAllocation`` / ``MemoryDeallocation`` event and its stats."""
        size = _int(stats.get("allocation_bytes"))
        if size is None:
            return
        addr = _int(stats.get("addr"))
        for k, v in (("time_ns", time_ns), ("bytes", ALLOCATOR_EVENTS[event] * size), ("total_allocated_bytes", _int(stats.get("bytes_allocated"))),
                     ("addr", addr - 2**64 if addr is not None and addr >= 2**63 else addr), ("pid", pid), ("tid", tid),
                     ("allocator", str(stats.get("allocator_name", ""))), ("index_on_host", _int(stats.get("index_on_host")))):
            self.cols[k].append(v)

    def table(self, rank: int, devices: set[str]) -> pa.Table | None:
        """MEMORY_SCHEMA rows, in the order read (None without events); ``devices``: the
        run's device ids, to name a GPU allocator after its plane."""
        if not self.cols["time_ns"]:
            return None
        frame = pl.DataFrame(self.cols, schema_overrides={"index_on_host": pl.Int64, "total_allocated_bytes": pl.Int64, "addr": pl.Int64})
        gpu = pl.col("allocator").str.extract(r"^GPU_(\d+)_")
        rocm = pl.lit("rocm:") + gpu
        device = (pl.when(gpu.is_not_null()).then(pl.when(rocm.is_in(sorted(devices))).then(rocm).otherwise(pl.lit("cuda:") + gpu))
                  .when((pl.col("allocator") == "") & pl.col("index_on_host").is_not_null()).then(pl.lit("tpu:") + pl.col("index_on_host").cast(pl.String))
                  .otherwise(pl.lit("cpu")))
        frame = frame.with_columns(device=device, total_reserved_bytes=pl.lit(None, pl.Int64), rank=pl.lit(rank, pl.Int32), stack=pl.lit(None, pl.String))
        return frame.select(S.MEMORY_COLUMNS).to_arrow().cast(S.MEMORY_SCHEMA)
