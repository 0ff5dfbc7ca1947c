"""The columnar event model shared by every collector, importer, analyzer and view.

Three tables and one metadata document make a run (see docs/trace-format.md):

* events: slices on one clock (start_ns, dur_ns), one row per slice;
* counters: time series samples (name, device, time_ns, value);
* memory: allocator events, one row per allocation or free (signed bytes);
* meta: a JSON document describing the run.

Times are integer nanoseconds on the run's clock, which ``meta["clock"]`` names.
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_NAME = "accelscope.run"
SCHEMA_VERSION = 1

# Kinds of slices. Device work first, host work after.
KERNEL = "kernel"
MEMCPY = "memcpy"
MEMSET = "memset"
CPU_OP = "cpu_op"
RUNTIME = "runtime"
SYNC = "sync"
PYTHON = "python"
INPUT_WAIT = "input_wait"
STEP = "step"
ANNOTATION = "annotation"
OTHER = "other"

KINDS = (KERNEL, MEMCPY, MEMSET, SYNC, CPU_OP, RUNTIME, PYTHON, INPUT_WAIT, STEP, ANNOTATION, OTHER)
# Device work that keeps the accelerator busy (sync slices are waits, not work).
DEVICE_KINDS = frozenset({KERNEL, MEMCPY, MEMSET})

EVENT_SCHEMA = pa.schema(
    [
        pa.field("start_ns", pa.int64(), nullable=False),
        pa.field("dur_ns", pa.int64(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("name", pa.string(), nullable=False),
        pa.field("device", pa.string(), nullable=False),  # "cpu", "cuda:0", "tpu:3"
        pa.field("stream", pa.int64()),  # device stream/queue; null for host slices
        pa.field("pid", pa.int64()),
        pa.field("tid", pa.int64()),
        pa.field("rank", pa.int32(), nullable=False),
        pa.field("correlation_id", pa.int64()),  # links a host launch to its device work
        pa.field("args", pa.string()),  # JSON object of the attributes worth keeping
    ]
)
EVENT_COLUMNS = tuple(EVENT_SCHEMA.names)

COUNTER_SCHEMA = pa.schema(
    [
        pa.field("name", pa.string(), nullable=False),  # unit in the name: rss_bytes
        pa.field("device", pa.string(), nullable=False),
        pa.field("time_ns", pa.int64(), nullable=False),
        pa.field("value", pa.float64()),  # null: the metric could not be read
        pa.field("rank", pa.int32(), nullable=False),
    ]
)
COUNTER_COLUMNS = tuple(COUNTER_SCHEMA.names)

# One row per allocator call (torch.profiler's ``[memory]`` events): per-allocation facts
# (signed size, address, thread) that a counter's one float per sample cannot hold.
MEMORY_SCHEMA = pa.schema(
    [
        pa.field("time_ns", pa.int64(), nullable=False),
        pa.field("device", pa.string(), nullable=False),  # "cpu", "cuda:0": as the events name devices
        pa.field("bytes", pa.int64(), nullable=False),  # + allocated, - freed
        pa.field("total_allocated_bytes", pa.int64()),  # the allocator's in-use total after this event; null: not recorded
        pa.field("total_reserved_bytes", pa.int64()),  # held by the caching allocator after this event; null: not recorded
        pa.field("addr", pa.int64()),  # the block's address (a free names its allocation's); null: not recorded
        pa.field("pid", pa.int64()),  # the allocating host process and thread
        pa.field("tid", pa.int64()),
        pa.field("rank", pa.int32(), nullable=False),
        pa.field("stack", pa.string()),  # where it was called: "file:line function" per line, innermost first; null: not recorded
    ]
)
MEMORY_COLUMNS = tuple(MEMORY_SCHEMA.names)


def step_name(index: int) -> str:
    """Name of the step slice with this index (the name Kineto, HTA and TensorBoard use)."""
    return f"ProfilerStep#{index}"
