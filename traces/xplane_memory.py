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

import re
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from accelscope.traces import schema as S

ALLOCATOR_EVENTS = {"MemoryAllocation": 1, "MemoryDeallocation": -1}
_GPU_ALLOCATOR = re.compile(r"^GPU_(\d+)_")


def _int(v: Any) -> int | None:
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


@dataclass
class MemoryEvents:
    """The allocator events of one XSpace, appended as the host lines are read."""

    rows: dict[str, list] = field(default_factory=lambda: {k: [] for k in ("time_ns", "sign", "stats", "pid", "tid")})

    def add(self, event: str, time_ns: int, pid: int, tid: int, stats: dict[str, Any]) -> None:
        """One ``MemoryAllocation`` / ``MemoryDeallocation`` event and its stats."""
        r = self.rows
        r["time_ns"].append(time_ns)
        r["sign"].append(ALLOCATOR_EVENTS[event])
        r["stats"].append(stats)
        r["pid"].append(pid)
        r["tid"].append(tid)

    def table(self, rank: int, devices: set[str]) -> pa.Table | None:
        """MEMORY_SCHEMA rows, in the order read (None without events); ``devices``: the
        run's device ids, to name a GPU allocator after its plane."""
        r = self.rows
        if not r["time_ns"]:
            return None
        out: dict[str, list] = {c: [] for c in S.MEMORY_COLUMNS}
        for t, sign, st, pid, tid in zip(r["time_ns"], r["sign"], r["stats"], r["pid"], r["tid"]):
            size = _int(st.get("allocation_bytes"))
            if size is None:
                continue
            out["time_ns"].append(t)
            out["device"].append(_device(st, devices))
            out["bytes"].append(sign * size)
            out["total_allocated_bytes"].append(_int(st.get("bytes_allocated")))
            out["total_reserved_bytes"].append(None)
            addr = _int(st.get("addr"))
            out["addr"].append(addr - 2**64 if addr is not None and addr >= 2**63 else addr)
            out["pid"].append(pid)
            out["tid"].append(tid)
            out["rank"].append(rank)
        if not out["time_ns"]:
            return None
        return pa.table({c: pa.array(out[c], type=S.MEMORY_SCHEMA.field(c).type) for c in S.MEMORY_COLUMNS}, schema=S.MEMORY_SCHEMA)


def _device(stats: dict[str, Any], devices: set[str]) -> str:
    name = str(stats.get("allocator_name", ""))
    m = _GPU_ALLOCATOR.match(name)
    if m:
        n = m.group(1)
        return f"rocm:{n}" if f"rocm:{n}" in devices else f"cuda:{n}"
    index = _int(stats.get("index_on_host"))
    if index is not None and not name:
        return f"tpu:{index}"
    return "cpu"
