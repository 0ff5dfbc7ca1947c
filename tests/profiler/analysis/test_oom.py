"""Out of memory in the analysis (analysis/oom.py): what was live at the failure, paired by
address, inside the failing step's window, under which op; the line that opens ``analyze``; the
JSON and its gate. Small tables whose truth is written out; the recorded CPU runs are in
tests/profiler/test_oom.py."""

from __future__ import annotations

import polars as pl
import pytest

from accelscope.analysis import oom as O
from accelscope.analysis.gates import check_gates
from tests.builders import event_table, memory_table

MiB = 2**20


def _steps(n: int, dur: int = 100, rank: int = 0) -> pl.DataFrame:
    """Steps 0..n-1 of ``dur`` ns each, from 0 (step N's start is N * dur)."""
    return pl.DataFrame({"rank": [rank] * n, "step": list(range(n)), "start_ns": [i * dur for i in range(n)], "dur_ns": [dur] * n},
                        schema={"rank": pl.Int32, "step": pl.Int64, "start_ns": pl.Int64, "dur_ns": pl.Int64})


def _record(**kw) -> dict:
    return {"step": 6, "time_ns": 650, "rank": 0, "device": "cpu", "error_type": "RuntimeError", "kind": "torch_cpu",
            "message": "DefaultCPUAllocator: can't allocate memory", "requested_bytes": 2**30, "allocator": None, "observer": None, **kw}


def test_what_is_live_pairs_allocations_and_frees_by_address():
    mem = memory_table([
        (10, 1 * MiB, 1),  # a: live
        (20, 2 * MiB, 2),  # b: freed at 30
        (30, -2 * MiB, 2),
        (40, 3 * MiB, 2),  # c: address 2 again, live
        (45, 4 * MiB, None),  # no address: cannot be paired, left out
        (60, 5 * MiB, 3),  # after the failure
        (70, -1 * MiB, 1),  # a freed after the failure: live at it
    ])
    live = O.live_at(mem, 50, None)
    assert sorted(live["bytes"].to_list()) == [1 * MiB, 3 * MiB]
    assert O.live_at(mem, 50, 15)["bytes"].to_list() == [3 * MiB], "a, made before the window, is not counted"


def test_what_is_live_is_grouped_by_the_innermost_op_that_is_not_an_allocation_primitive():
    ops = event_table([(5, 10, "cpu_op", "aten::ones"), (6, 6, "cpu_op", "aten::empty"), (35, 10, "cpu_op", "aten::empty"),
                       (0, 100, "step", "ProfilerStep#0")])
    mem = memory_table([(8, 1 * MiB, 1), (9, 1 * MiB, 2), (40, 3 * MiB, 3), (50, 4 * MiB, 4)])
    got = O.held_by(O.live_at(mem, 60, None), ops)
    assert got == ((None, 4 * MiB, 1), ("aten::empty", 3 * MiB, 1), ("aten::ones", 2 * MiB, 2)), \
        "most bytes first; aten::ones holds its aten::empty's allocations; an aten::empty alone keeps its own; a step is no op"


@pytest.mark.parametrize("traced, step, expected", [
    ({"torch_profiler": [[2, 6]]}, 6, (True, 200)),  # the window's first step's start
    ({"torch_profiler": [[2, 4], [6, 6]]}, 6, (True, 600)),  # a window of the failing step alone: the previous step's end
    ({"torch_profiler": [[2, 4]]}, 6, (False, None)),  # outside every window
    (None, 6, (True, None)),  # no windows: every step traced, from the start
    ({"torch_profiler": [[0, 6]]}, 0, (True, None)),  # the first step fails: no step before it
])
def test_the_failing_steps_window_starts_where_its_first_step_does(traced, step, expected):
    meta = {"traced_steps": traced} if traced else {}
    assert O.window_start(meta, _steps(step), 0, step) == expected, "steps before the failing one ended"


def _ones_run():
    """Steps 0-5 ended, step 6 failed at 650: 1 MiB kept per step under aten::ones (at 50, 150, ...),
    a 2 MiB activation freed within each step; a GPU's events too."""
    rows, ops = [], []
    for s in range(7):
        rows += [(s * 100 + 50, MiB, 1000 + s, "cpu"), (s * 100 + 60, 2 * MiB, 1, "cpu"), (s * 100 + 70, -2 * MiB, 1, "cpu")]
        ops.append((s * 100 + 45, 10, "cpu_op", "aten::ones"))
    rows.append((640, 64 * MiB, 9, "cuda:0"))
    return memory_table(rows, ("time_ns", "bytes", "addr", "device")), event_table(ops)


def test_the_failure_names_what_held_the_memory_on_its_device():
    mem, ops = _ones_run()
    got = O.analyse(_record(), mem, ops, {"traced_steps": {"torch_profiler": [[2, 6]]}}, _steps(6))
    assert (got.held_device, got.live_bytes, got.live_allocations) == ("cpu", 5 * MiB, 5), "steps 2-6 kept 1 MiB each; the activations were freed"
    assert got.held_by == (("aten::ones", 5 * MiB, 5),)
    assert got.text == "out of memory at step 6 on cpu: tried to allocate 1.0 GiB; held at least 5.0 MiB, most under aten::ones (5.0 MiB)"


def test_an_error_naming_no_device_is_read_on_the_device_holding_most():
    mem, ops = _ones_run()
    got = O.analyse(_record(device=None), mem, ops, {}, _steps(6))
    assert (got.held_device, got.live_bytes) == ("cuda:0", 64 * MiB)
    assert got.text == "out of memory at step 6: tried to allocate 1.0 GiB; held at least 64.0 MiB on cuda:0, most under no host op (64.0 MiB)"


def test_a_device_without_allocator_events_names_no_op():
    mem, ops = _ones_run()
    got = O.analyse(_record(device="cuda:1"), mem, ops, {}, _steps(6))
    assert got.held_device is None and got.held_by == () and got.text == "out of memory at step 6 on cuda:1: tried to allocate 1.0 GiB"


def test_an_untraced_step_says_so_and_counts_nothing():
    mem, ops = _ones_run()
    got = O.analyse(_record(step=9, time_ns=950), mem, ops, {"traced_steps": {"torch_profiler": [[2, 4]]}}, _steps(9))
    assert not got.traced and got.live_bytes == 0
    assert got.text == "out of memory at step 9 on cpu: tried to allocate 1.0 GiB; step 9 was not traced (no allocations recorded)"


def test_the_allocators_own_total_is_what_was_held():
    summary = {"allocated_bytes": 13 * 2**30, "reserved_bytes": 15 * 2**30, "device_total_bytes": 80 * 2**30, "device_free_bytes": 2**29,
               "num_alloc_retries": 0}
    got = O.analyse(_record(device="cuda:0", allocator=summary), *_ones_run(), {}, _steps(6))
    assert got.held_bytes == 13 * 2**30 and got.text.endswith("held 13.0 GiB, most under no host op (64.0 MiB)")
    assert got.allocator_text == "allocator at the failure: 13.0 GiB allocated, 15.0 GiB reserved of 80.0 GiB (512.0 MiB free)"


def test_no_record_no_oom_and_nothing_known_says_the_error():
    mem, ops = _ones_run()
    assert O.analyse(None, mem, ops, {}, _steps(6)) is None
    assert O.analyse({"step": "x"}, mem, ops, {}, _steps(6)) is None
    got = O.analyse(_record(device=None, requested_bytes=None, error_type="MemoryError"), mem.head(0), None, {}, _steps(6))
    assert got.text == "out of memory at step 6 (MemoryError)"


def test_the_json_has_the_failure_and_the_gate_reads_it():
    got = O.analyse(_record(), *_ones_run(), {}, _steps(6))
    doc = got.to_dict()
    assert {k: doc[k] for k in ("step", "device", "requested_bytes", "held_bytes", "held_device", "live_bytes", "traced")} == {
        "step": 6, "device": "cpu", "requested_bytes": 2**30, "held_bytes": None, "held_device": "cpu", "live_bytes": 7 * MiB, "traced": True}
    assert doc["held_by"][0] == {"op": "aten::ones", "bytes": 7 * MiB, "allocations": 7} and doc["time_unix_us"] == 0.65
    assert check_gates({"out_of_memory": 1}, ["out_of_memory>0"]) and not check_gates({"out_of_memory": 0}, ["out_of_memory>0"])
