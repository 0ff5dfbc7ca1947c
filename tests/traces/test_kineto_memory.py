"""torch.profiler's ``[memory]`` instants become the memory table (traces/kineto_memory.py),
checked against the raw JSON of real traces of three generations: the 2021 V100 ResNet-50
(``Bytes`` only), an H100 trace with allocator totals and addresses, and a ROCm trace."""

from __future__ import annotations

import gzip
import json
from decimal import Decimal

import polars as pl
import pytest

from accelscope.traces import schema as S
from accelscope.traces.kineto import read_kineto

NW0 = "traces/kineto/tb_plugin/samples/resnet50_num_workers_0/worker0.1623143089861.pt.trace.json.gz"
QWEN = "traces/more/tracelens/h100__Qwen_Qwen1.5-0.5B-Chat__1016005.json.gz"
ROCM = "traces/more/tracelens/inference__vllm_decode_full__capture_traces__graph_capture_rank_0.1773709742341309550.pt.trace.json.gz"


def _raw(path) -> dict:
    """The document as json.load reads it (the reference: no accelscope code involved)."""
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return json.load(fh)


def _raw_memory(doc: dict) -> list[dict]:
    return [e for e in doc["traceEvents"] if e.get("ph") == "i" and e.get("name") == "[memory]"]


@pytest.fixture(scope="module")
def nw0(shared_dir):
    return read_kineto(shared_dir / NW0), _raw(shared_dir / NW0)


@pytest.fixture(scope="module")
def qwen(shared_dir):
    return read_kineto(shared_dir / QWEN), _raw(shared_dir / QWEN)


def test_every_memory_event_of_the_2021_trace_is_a_row_on_its_device(nw0):
    trace, doc = nw0
    raw = _raw_memory(doc)
    want = {"cpu" if e["args"]["Device Type"] == 0 else f"cuda:{e['args']['Device Id']}" for e in raw}
    got = pl.from_arrow(trace.memory)
    assert want == {"cpu", "cuda:0"}
    assert dict(got.group_by("device").len().iter_rows()) == {d: sum(1 for e in raw if ("cpu" if e["args"]["Device Type"] == 0 else "cuda:0") == d) for d in want}
    assert got["bytes"].to_list() == [e["args"]["Bytes"] for e in raw]  # file order, signed
    assert got["time_ns"].to_list() == [e["ts"] * 1000 for e in raw]  # integer µs, no base time in this header


def test_the_2021_trace_records_no_totals_or_addresses(nw0):
    got = pl.from_arrow(nw0[0].memory)
    assert got["total_allocated_bytes"].null_count() == got.height
    assert got["total_reserved_bytes"].null_count() == got.height
    assert got["addr"].null_count() == got.height


def test_memory_events_stay_out_of_the_events_table(nw0):
    trace, doc = nw0
    slices = [e for e in doc["traceEvents"] if e.get("ph") == "X" and e.get("cat") != "Trace"]
    assert trace.events.num_rows == len(slices)  # 44,665: as before the memory table existed
    assert "[memory]" not in set(trace.events.column("name").to_pylist())


def test_allocations_carry_the_thread_that_made_them(nw0):
    trace, doc = nw0
    got = pl.from_arrow(trace.memory)
    assert got["tid"].to_list() == [int(e["tid"]) for e in _raw_memory(doc)]


def test_newer_traces_keep_totals_and_addresses(qwen):
    trace, doc = qwen
    raw = _raw_memory(doc)
    got = pl.from_arrow(trace.memory)
    assert got["total_allocated_bytes"].to_list() == [e["args"]["Total Allocated"] for e in raw]
    assert got["total_reserved_bytes"].to_list() == [e["args"]["Total Reserved"] for e in raw]
    assert got["addr"].to_list() == [e["args"]["Addr"] for e in raw]


def test_newer_trace_times_add_the_header_base_time_exactly(qwen, shared_dir):
    trace, doc = qwen
    with gzip.open(shared_dir / QWEN, "rt", encoding="utf-8") as fh:
        exact = _raw_memory(json.load(fh, parse_float=Decimal))  # float µs with ns decimals, read as decimals
    want = [doc["baseTimeNanoseconds"] + int(e["ts"] * 1000) for e in exact]
    assert pl.from_arrow(trace.memory)["time_ns"].to_list() == want


def test_memory_times_fall_inside_the_slices_span(qwen):
    trace, _ = qwen
    times = pl.from_arrow(trace.memory)["time_ns"]
    ev = pl.from_arrow(trace.events)
    assert ev["start_ns"].min() <= times.min() and times.max() <= (ev["start_ns"] + ev["dur_ns"]).max()


def test_hip_allocations_are_named_cuda_as_amd_kernels_are(shared_dir):
    """HIP (c10 type 6) gets the prefix AMD kernels get; the index is the allocator's own
    (torch's device index: 0 here, where roctracer numbers the same process's kernels 2)."""
    trace = read_kineto(shared_dir / ROCM)
    devices = set(pl.from_arrow(trace.memory)["device"].unique().to_list())
    kernel_devices = set(pl.from_arrow(trace.events).filter(pl.col("kind") == S.KERNEL)["device"].unique().to_list())
    assert devices == {"cuda:0"} and kernel_devices == {"cuda:2"}


def test_device_types_are_named_by_c10s_enum(tmp_path):
    """A small trace of one allocation per device type (CPU, CUDA, HIP, XPU, MTIA, one unknown)."""
    events = [{"ph": "X", "cat": "cpu_op", "name": "aten::empty", "pid": 1, "tid": 1, "ts": 0, "dur": 100}]
    for i, (kind, index) in enumerate([(0, -1), (1, 2), (6, 1), (12, 0), (19, 3), (99, 0)]):
        events.append({"ph": "i", "s": "t", "name": "[memory]", "pid": 1, "tid": 1, "ts": i, "args": {"Device Type": kind, "Device Id": index, "Bytes": 64}})
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"traceEvents": events}))
    got = pl.from_arrow(read_kineto(path).memory)["device"].to_list()
    assert got == ["cpu", "cuda:2", "cuda:1", "xpu:0", "mtia:3", "device_type_99:0"]


def test_memory_events_without_bytes_are_left_out_and_counted(tmp_path):
    events = [{"ph": "X", "cat": "cpu_op", "name": "aten::empty", "pid": 1, "tid": 1, "ts": 0, "dur": 100},
              {"ph": "i", "s": "t", "name": "[memory]", "pid": 1, "tid": 1, "ts": 1, "args": {"Device Type": 0, "Device Id": -1, "Bytes": 64}},
              {"ph": "i", "s": "t", "name": "[memory]", "pid": 1, "tid": 1, "ts": 2, "args": {"Device Type": 0, "Device Id": -1}},
              {"ph": "i", "s": "t", "name": "[memory]", "pid": 1, "tid": 1, "ts": 3, "args": {"Device Type": 0, "Device Id": -1, "Bytes": "lots"}}]
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"traceEvents": events}))
    trace = read_kineto(path)
    assert pl.from_arrow(trace.memory)["bytes"].to_list() == [64] and trace.memory_dropped == 2
