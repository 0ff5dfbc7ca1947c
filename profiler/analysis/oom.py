"""Out of memory: the memory state a run recorded when its training loop ran out of memory
(``meta["oom"]``, written by the recorder's ``oom_capture.py``), and what held the memory at
the failure.

A record in, a record out, with one table step: the allocations **live at the failure**, from
the run's memory table on the rank and device that ran out (where the error names no device,
the one whose live allocations hold most). An allocation is live when it was made in the
failing step's profiler window before the failure and the last event at its address up to the
failure is that allocation itself (its free, where there was one, comes later: allocations and
frees pair by ``addr``). Allocations made before the window are not counted: their frees may
have gone unrecorded between windows. Each live allocation is put under the innermost host op
(``cpu_op``) of its thread holding it, torch's allocation primitives (``aten::empty``...) only
where no other op holds it, as the leaks' op is (``memory_ops.holding`` / ``innermost``).

``held_bytes`` is the allocator's own total at the failure where the run has it (the CUDA
caching allocator's summary); the live allocations are a lower bound of it (what was held
before the window is not in them).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import polars as pl

from accelscope.analysis import memory_live as ML
from accelscope.analysis.leaks import ALLOCATION_OPS
from accelscope.analysis.steps import traced_windows

HELD_BY_ROWS = 10  # ops kept in Oom.held_by, most bytes first


@dataclass(frozen=True)
class Oom:
    """The out-of-memory failure of a run (``Report.oom``)."""

    step: int  # the step the error was raised in (it has no step slice: it never ended)
    time_ns: int  # the failing allocation (CUDA, torch's observer), else when the error reached accelscope.profile
    rank: int
    device: str | None  # what ran out ("cuda:0", "cpu"); None: the error does not say
    error_type: str  # "torch.OutOfMemoryError", "RuntimeError", ...
    kind: str  # "torch", "torch_cpu", "tensorflow", "jax" or "python" (oom_capture.kind)
    message: str  # the error's first lines
    requested_bytes: int | None  # what the failing allocation asked for
    allocator: dict[str, Any] | None = None  # the CUDA caching allocator's summary at the failure
    observer: dict[str, Any] | None = None  # what torch's CUDA OOM observer saw at the failing allocation
    traced: bool = True  # the failing step was in a profiler window (its allocator events are in the run)
    held_device: str | None = None  # the device the live allocations are on
    live_bytes: int = 0  # allocations in the trace live at the failure
    live_allocations: int = 0
    held_by: tuple[tuple[str | None, int, int], ...] = field(default=())  # (op, bytes, allocations) most first; op None: under no host op

    @property
    def held_bytes(self) -> int | None:
        """What the allocator had allocated at the failure (the CUDA summary's); None without
        it (the live allocations are then the best figure)."""
        if self.allocator and isinstance(self.allocator.get("allocated_bytes"), int):
            return self.allocator["allocated_bytes"]
        return None

    @property
    def text(self) -> str:
        """One line: "out of memory at step 7 on cuda:0: tried to allocate 2.0 GiB; held 13.1 GiB,
        most under aten::addmm (8.0 GiB)"."""
        head = f"out of memory at step {self.step}" + (f" on {self.device}" if self.device else "")
        parts = [f"tried to allocate {size(self.requested_bytes)}"] if self.requested_bytes is not None else []
        other = f" on {self.held_device}" if self.held_device and self.held_device != self.device else ""
        if self.held_bytes is not None:
            held = f"held {size(self.held_bytes)}"
        elif self.live_bytes:
            held = f"held at least {size(self.live_bytes)}{other}"
        else:
            held = ""
        if self.held_by:
            op, n, _ = self.held_by[0]
            held += (", most" if held else f"held{other} most") + f" under {op or 'no host op'} ({size(n)})"
        elif not self.traced:
            held += (", " if held else "") + f"step {self.step} was not traced (no allocations recorded)"
        parts += [held] if held else []
        return f"{head}: {'; '.join(parts)}" if parts else f"{head} ({self.error_type})"

    @property
    def allocator_text(self) -> str | None:
        """The CUDA allocator at the failure in words, or None without its summary."""
        a = self.allocator
        if not a or a.get("allocated_bytes") is None:
            return None
        line = f"allocator at the failure: {size(a['allocated_bytes'])} allocated"
        if a.get("reserved_bytes") is not None:
            line += f", {size(a['reserved_bytes'])} reserved"
        if a.get("device_total_bytes"):
            line += f" of {size(a['device_total_bytes'])}" + (f" ({size(a['device_free_bytes'])} free)" if a.get("device_free_bytes") is not None else "")
        if a.get("num_alloc_retries"):
            line += f"; {a['num_alloc_retries']} allocation retries (cache flushes) so far"
        return line

    def to_dict(self) -> dict[str, Any]:
        """``analyze --json``'s ``oom`` (docs/cli.md)."""
        return {
            "step": self.step,
            "time_unix_us": round(self.time_ns / 1000, 3),
            "rank": self.rank,
            "device": self.device,
            "error_type": self.error_type,
            "kind": self.kind,
            "message": self.message,
            "requested_bytes": self.requested_bytes,
            "held_bytes": self.held_bytes,
            "allocator": dict(self.allocator) if self.allocator else None,
            "observer": dict(self.observer) if self.observer else None,
            "traced": self.traced,
            "held_device": self.held_device,
            "live_bytes": self.live_bytes,
            "live_allocations": self.live_allocations,
            "held_by": [{"op": op, "bytes": n, "allocations": k} for op, n, k in self.held_by],
            "text": self.text,
        }


def size(n: int) -> str:
    for unit, scale in (("EiB", 2**60), ("PiB", 2**50), ("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n:,} B"


def window_start(meta: dict[str, Any], steps: pl.DataFrame, rank: int, step: int) -> tuple[bool, int | None]:
    """(whether ``step`` was traced, the start of its profiler window on the run's clock, or
    None for no bound): the first step of the window (``meta["traced_steps"]``) holding ``step``
    starts it; where that is ``step`` itself (which has no slice), the previous step's end does.
    A run without windows counts every step as traced, from its beginning."""
    windows = traced_windows(meta)
    if windows is None:
        return True, None
    firsts = [first for first, last in windows if first <= step <= last]
    if not firsts:
        return False, None
    first = min(firsts)
    mine = steps.filter(pl.col("rank") == rank)
    at = mine.filter(pl.col("step") == first)
    if at.height:
        return True, int(at["start_ns"].min())
    before = mine.filter(pl.col("step") == first - 1)
    return True, int((before["start_ns"] + before["dur_ns"]).max()) if before.height else None


def live_at(memory: pl.DataFrame, time_ns: int, since_ns: int | None) -> pl.DataFrame:
    """The allocations of ``memory`` (one rank) made in [``since_ns``, ``time_ns``] and live at
    ``time_ns`` (``memory_live.lifetimes`` of those events: no later event at their address
    up to then), with ``device``, ``bytes`` and the allocating thread."""
    rows = memory.filter(pl.col("time_ns") <= time_ns)
    if since_ns is not None:
        rows = rows.filter(pl.col("time_ns") >= since_ns)
    lives = ML.lifetimes(rows)
    return lives.filter(pl.col("alloc_ns").is_not_null() & pl.col("free_ns").is_null())


def held_by(live: pl.DataFrame, ops: pl.DataFrame | None) -> tuple[tuple[str | None, int, int], ...]:
    """(op, bytes, allocations) of ``live`` per allocating op (``memory_live.with_ops``: the
    innermost host op, an allocation primitive only where no other op holds it), most bytes
    first; allocations under no op as op None."""
    per_op = (ML.with_ops(live, ops, ALLOCATION_OPS).group_by("op").agg(bytes=pl.col("bytes").sum(), allocations=pl.len())
              .sort(["bytes", "op"], descending=[True, False], nulls_last=True).head(HELD_BY_ROWS))
    return tuple((r["op"], int(r["bytes"]), int(r["allocations"])) for r in per_op.iter_rows(named=True))


def analyse(record: Any, memory: pl.DataFrame, ops: pl.DataFrame | None, meta: dict[str, Any], steps: pl.DataFrame) -> Oom | None:
    """Report.oom from ``meta["oom"]`` (None when the run did not run out of memory), the
    memory table, the allocating threads' host ops and the report's steps."""
    if not isinstance(record, dict) or not isinstance(record.get("step"), int) or not isinstance(record.get("time_ns"), int):
        return None
    rank = int(record.get("rank") or 0)
    device = record.get("device") if isinstance(record.get("device"), str) else None
    traced, since = window_start(meta, steps, rank, record["step"])
    oom = Oom(
        step=record["step"], time_ns=record["time_ns"], rank=rank, device=device, error_type=str(record.get("error_type") or "?"),
        kind=str(record.get("kind") or "?"), message=str(record.get("message") or ""),
        requested_bytes=record["requested_bytes"] if isinstance(record.get("requested_bytes"), int) else None,
        allocator=record["allocator"] if isinstance(record.get("allocator"), dict) else None,
        observer=record["observer"] if isinstance(record.get("observer"), dict) else None, traced=traced,
    )
    mine = memory.filter(pl.col("rank") == rank)
    if not traced or mine.height == 0:
        return oom
    live = live_at(mine, oom.time_ns, since)
    devices = live.group_by("device").agg(pl.col("bytes").sum()).sort(["bytes", "device"], descending=[True, False])["device"].to_list()
    if device is not None:
        held_device = device if device in devices else None  # no allocator events on the device that ran out
    else:
        held_device = devices[0] if devices else None
    if held_device is None:
        return oom
    live = live.filter(pl.col("device") == held_device)
    return replace(oom, held_device=held_device, live_bytes=int(live["bytes"].sum()), live_allocations=live.height, held_by=held_by(live, ops))
