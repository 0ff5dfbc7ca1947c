"""Small event and counter tables for tests, in the run's schema (traces/schema.py).

Each row is a tuple whose fields ``columns`` names; every other column takes its default
(a host slice of rank 0 on thread 1/1), so a test spells out only what it is about:

    event_table([(0, 100, "step", "ProfilerStep#0"), (10, 20, "kernel", "gemm", "cuda:0", 7)],
                columns=("start_ns", "dur_ns", "kind", "name", "device", "stream"))
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import polars as pl
import pyarrow as pa

from accelscope.traces.schema import COUNTER_SCHEMA, EVENT_SCHEMA, MEMORY_SCHEMA

EVENT_DEFAULTS: dict[str, Any] = {"device": "cpu", "stream": None, "pid": 1, "tid": 1, "rank": 0, "correlation_id": None, "args": None}
COUNTER_DEFAULTS: dict[str, Any] = {"rank": 0}
MEMORY_DEFAULTS: dict[str, Any] = {"device": "cpu", "total_allocated_bytes": None, "total_reserved_bytes": None, "addr": None, "pid": 1, "tid": 1, "rank": 0, "stack": None}
SLICE = ("start_ns", "dur_ns", "kind", "name")
DEVICE_SLICE = ("start_ns", "dur_ns", "kind", "name", "device", "stream")


def _table(rows: Iterable[Sequence[Any]], columns: Sequence[str], schema: pa.Schema, defaults: dict[str, Any]) -> pl.DataFrame:
    unknown = set(columns) - set(schema.names)
    if unknown:
        raise ValueError(f"no such column(s): {sorted(unknown)}")
    cols: dict[str, list] = {c: [] for c in schema.names}
    for row in rows:
        if len(row) != len(columns):
            raise ValueError(f"row {row!r} has {len(row)} fields for columns {tuple(columns)}")
        given = dict(zip(columns, row))
        for c in schema.names:
            cols[c].append(given[c] if c in given else defaults[c])
    return pl.from_arrow(pa.table(cols, schema=schema))


def event_table(rows: Iterable[Sequence[Any]], columns: Sequence[str] = SLICE, **defaults: Any) -> pl.DataFrame:
    """An events table from ``rows`` of ``columns``; ``defaults`` override EVENT_DEFAULTS."""
    return _table(rows, columns, EVENT_SCHEMA, {**EVENT_DEFAULTS, **defaults})


def counter_table(rows: Iterable[Sequence[Any]], columns: Sequence[str] = ("name", "device", "time_ns", "value"), **defaults: Any) -> pl.DataFrame:
    """A counters table from ``rows`` of ``columns``; ``defaults`` override COUNTER_DEFAULTS."""
    return _table(rows, columns, COUNTER_SCHEMA, {**COUNTER_DEFAULTS, **defaults})


def memory_table(rows: Iterable[Sequence[Any]], columns: Sequence[str] = ("time_ns", "bytes", "addr"), **defaults: Any) -> pl.DataFrame:
    """A memory table (allocator events) from ``rows`` of ``columns``; ``defaults`` override MEMORY_DEFAULTS."""
    return _table(rows, columns, MEMORY_SCHEMA, {**MEMORY_DEFAULTS, **defaults})


def numbered_steps(rows: Iterable[tuple[int, int, str]]) -> pl.DataFrame:
    """Host slices from (start_ns, dur_ns, kind) rows: step slices named ProfilerStep#N in
    start order, as recorders name them; any other slice named after its kind."""
    rows = list(rows)
    step_starts = sorted(start for start, _, kind in rows if kind == "step")
    return event_table((start, dur, kind, f"ProfilerStep#{step_starts.index(start)}" if kind == "step" else kind) for start, dur, kind in rows)
