"""PyTorch memory snapshots (traces/torch_snapshot.py): trace entries become memory-table
rows, checked against the raw entries with plain loops. Snapshots are built here with the
structure torch writes (torch/csrc/cuda/Module.cpp's memorySnapshot, pickled as
torch.cuda.memory._dump_snapshot does); the real ones in ../shared/snapshots (recorded by
others on CUDA: a 3-step nn.Linear script and a CNN counterfactual run) are used where present."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import polars as pl
import pytest

from accelscope.traces import formats
from accelscope.traces.importer import import_traces
from accelscope.traces.run import Run
from accelscope.traces.torch_snapshot import NotASnapshotError, SnapshotError, load, read_snapshot

PY = [{"filename": "/work/train.py", "line": 42, "name": "forward"}, {"filename": "/site-packages/torch/nn/modules/module.py", "line": 1747, "name": "_call_impl"}]
CPP = [{"filename": "??", "line": 0, "name": "torch::unwind::unwind()"}, {"filename": "CUDACachingAllocator.cpp", "line": 0, "name": "c10::cuda::malloc(int)"}]
REAL = ("snapshots/profile_grad.pkl", "snapshots/EoR_NN_snapshot.pickle")


def _entry(action, addr, size, t, frames=PY):
    return {"action": action, "addr": addr, "size": size, "stream": 0, "time_us": t, "frames": frames}


def _segment(device, address, total, requested, blocks=()):
    return {"device": device, "address": address, "total_size": total, "allocated_size": requested, "active_size": requested,
            "requested_size": requested, "stream": 0, "segment_type": "large", "segment_pool_id": (0, 0), "is_expandable": False,
            "frames": [], "blocks": list(blocks)}


def _snapshot():
    """Device 0: a segment of 2 MiB, a (held) 1000 B and a 500 B allocation; 500 B freed at
    once, then a free of 1000 B requested and completed later; an allocation of 300 B
    whose free is still pending when the snapshot is taken. 700 B from before the trace."""
    t = 1_700_000_000_000_000
    entries = [
        _entry("free_requested", 9, 700, t),  # allocated before the trace began (a ring buffer's lost start)
        _entry("free_completed", 9, 700, t + 1),
        _entry("segment_alloc", 100, 2 << 20, t + 2, CPP),
        _entry("alloc", 100, 1000, t + 3, CPP),
        _entry("alloc", 2000, 500, t + 4),
        _entry("free_requested", 2000, 500, t + 5),
        _entry("free_completed", 2000, 500, t + 5),
        _entry("free_requested", 100, 1000, t + 6),
        _entry("alloc", 3000, 300, t + 7, []),
        _entry("free_completed", 100, 1000, t + 9),
        _entry("free_requested", 3000, 300, t + 10),
        _entry("alloc", 100, 64, t + 11),
        {"action": "oom", "device_free": 4096, "size": 1 << 30, "stream": 0, "time_us": t + 12, "frames": PY},
    ]
    segments = [_segment(0, 100, 2 << 20, 64), _segment(0, 1 << 30, 1 << 20, 700)]  # 700 B held since before the trace
    return {"segments": segments, "device_traces": [entries], "allocator_settings": {"PYTORCH_CUDA_ALLOC_CONF": ""}}


@pytest.fixture
def snap(tmp_path):
    path = tmp_path / "snap.pickle"
    path.write_bytes(pickle.dumps(_snapshot()))
    return path


def _table(path) -> pl.DataFrame:
    return pl.from_arrow(read_snapshot(path)[0])


def test_allocations_and_completed_frees_are_rows_in_trace_order(snap):
    got = _table(snap)
    assert got["bytes"].to_list() == [-700, 1000, 500, -500, 300, -1000, -300, 64]
    assert got["addr"].to_list() == [9, 100, 2000, 2000, 3000, 100, 3000, 100]
    t = 1_700_000_000_000_000
    assert got["time_ns"].to_list() == [(t + d) * 1000 for d in (1, 3, 4, 5, 7, 9, 10, 11)]  # the free of 1000 B at its completion
    assert set(got["device"]) == {"cuda:0"}


def test_allocated_total_is_lined_up_with_the_segments_at_the_end(snap):
    got = _table(snap)
    held_at_end = sum(s["requested_size"] for s in _snapshot()["segments"])
    running = 0
    want = []
    for b in got["bytes"]:
        running += b
        want.append(running)
    assert got["total_allocated_bytes"].to_list() == [w + held_at_end - running for w in want]
    assert got["total_allocated_bytes"][-1] == held_at_end and got["total_allocated_bytes"].min() >= 0


def test_reserved_total_comes_from_segment_actions_lined_up_with_the_segments(snap):
    got = _table(snap)
    reserved_at_end = (2 << 20) + (1 << 20)
    assert got["total_reserved_bytes"].to_list() == [1 << 20] + [reserved_at_end] * 7


def test_stacks_are_kept_innermost_first_and_null_without_frames(snap):
    got = _table(snap)
    assert got["stack"][2] == "/work/train.py:42 forward\n/site-packages/torch/nn/modules/module.py:1747 _call_impl"
    assert got["stack"][1] == "??:0 torch::unwind::unwind\nCUDACachingAllocator.cpp:0 c10::cuda::malloc"  # C++ only: names without arguments
    assert got["stack"][4] is None  # recorded without frames


def test_out_of_memory_entries_are_kept_in_the_metadata(snap):
    _, meta = read_snapshot(snap)
    assert meta["snapshot"]["ooms"] == [{"device": "cuda:0", "time_ns": (1_700_000_000_000_000 + 12) * 1000, "requested_bytes": 1 << 30, "device_free_bytes": 4096}]
    assert meta["clock"]["name"] == "unix_epoch_ns"


def test_totals_that_would_go_negative_are_left_unknown(tmp_path):
    doc = _snapshot()
    doc["segments"] = []  # nothing held at the end, yet the trace ends holding 64 B
    path = tmp_path / "s.pickle"
    path.write_bytes(pickle.dumps(doc))
    table, meta = read_snapshot(path)
    assert pl.from_arrow(table)["total_allocated_bytes"].null_count() == table.num_rows
    assert meta["snapshot"]["totals_unknown"] == ["cuda:0"]


def test_entries_without_times_are_imported_in_order_on_an_order_clock(tmp_path):
    doc = _snapshot()
    for e in doc["device_traces"][0]:
        del e["time_us"]
    path = tmp_path / "old.pickle"
    path.write_bytes(pickle.dumps(doc))
    table, meta = read_snapshot(path)
    assert meta["clock"]["name"] == "entry_order"
    assert pl.from_arrow(table)["time_ns"].to_list() == [i * 1000 for i in (1, 3, 4, 6, 8, 9, 10, 11)]


def test_a_pickle_that_names_a_class_runs_nothing(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pickle"
    path.write_bytes(pickle.dumps({"segments": [], "device_traces": [[Evil()]]}))
    with pytest.raises(NotASnapshotError) as err:
        load(path)
    assert not marker.exists()
    assert str(err.value).count("\n") == 0 and "system" in str(err.value) and str(path) in str(err.value)


@pytest.mark.parametrize("payload, expected", [
    (lambda: pickle.dumps(_snapshot())[:300], "damaged or truncated pickle"),
    (lambda: pickle.dumps({"weights": [1.0, 2.0]}), "not a PyTorch memory snapshot"),
    (lambda: pickle.dumps(pl.DataFrame({"a": [1]})), "not a PyTorch memory snapshot"),
    (lambda: b"hello", "not a pickle"),
    (lambda: pickle.dumps({"segments": [_segment(0, 1, 2, 0)], "device_traces": [[]]}), "without trace entries"),
    (lambda: pickle.dumps([_segment(0, 1, 2, 0)]), "torch 1.13"),
])
def test_a_foreign_or_damaged_file_gives_one_line(tmp_path, payload, expected):
    path = tmp_path / "x.pkl"
    path.write_bytes(payload())
    with pytest.raises(SnapshotError) as err:
        read_snapshot(path)
    assert expected in str(err.value) and "\n" not in str(err.value) and str(path) in str(err.value)


def test_a_snapshot_under_another_name_is_recognised_by_its_first_bytes(snap, tmp_path):
    other = tmp_path / "memory.bin"
    other.write_bytes(snap.read_bytes())
    assert formats.format_of(other, sniff=True) == "torch_snapshot"
    assert formats.format_of(snap) == "torch_snapshot"


def test_import_and_analyze_a_snapshot_from_the_command_line(snap, tmp_path):
    out = tmp_path / "run"
    run = [sys.executable, "-m", "accelscope"]
    assert subprocess.run([*run, "import", str(snap), "-o", str(out)], capture_output=True, text=True, timeout=120).returncode == 0
    proc = subprocess.run([*run, "analyze", "--json", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    (device,) = doc["memory"]["devices"]
    assert device["device"] == "cuda:0" and device["peak_allocated_bytes"] == 700 + 1000 + 500  # lined-up peak
    assert device["peak_op"] == "train.py:42 forward"  # the allocating site, from the stack
    assert Run.open(out).memory["stack"].null_count() == 1


def test_a_snapshot_run_prints_only_its_memory(snap, tmp_path):
    from rich.console import Console

    from accelscope.analysis import analyze
    from accelscope.text import print_report

    report = analyze(Run.open(import_traces([snap], tmp_path / "run", progress=False)))
    console = Console(record=True, width=120)
    print_report(report, console)
    text = console.export_text()
    assert report.to_dict()["run_info"]["memory_only"] is True
    assert text.splitlines()[0].endswith("no timeline was recorded, so there are no steps, idle causes or device figures")
    assert "Memory peaks" in text and "Steps" not in text and "window" not in text
    assert report.memory["peak_step"].is_null().all() and report.memory_leaks.height == 0


def _real(shared_dir, name):
    path = shared_dir / name
    if not path.is_file():
        pytest.skip(f"{path} is not in ../shared")
    return path


@pytest.mark.parametrize("name", REAL)
def test_a_real_snapshots_peak_equals_the_raw_entries(shared_dir, tmp_path, name):
    """The peak, recomputed from the raw entries with a plain loop: + alloc, - its free at
    completion (at the request where none completes), plus what the segments hold at the
    end that the trace does not account for."""
    path = _real(shared_dir, name)
    with open(path, "rb") as fh:
        doc = pickle.load(fh)  # noqa: S301 -- the reference; a known file from ../shared
    entries = doc["device_traces"][0]
    completed = {}
    live = {}
    for i, e in enumerate(entries):
        if e["action"] == "alloc":
            live[e["addr"]] = i
        elif e["action"] == "free_completed":
            completed[(e["addr"], live.get(e["addr"]))] = True
    running, peak, live = 0, 0, {}
    for i, e in enumerate(entries):
        if e["action"] == "alloc":
            live[e["addr"]] = i
            running += e["size"]
        elif e["action"] == "free_completed" or (e["action"] == "free_requested" and (e["addr"], live.get(e["addr"])) not in completed):
            running -= e["size"]
        peak = max(peak, running)
    held = sum(s["requested_size"] for s in doc["segments"] if s["device"] == 0)
    run = Run.open(import_traces([path], tmp_path / "run", progress=False))
    from accelscope.analysis import analyze

    (row,) = analyze(run).memory.iter_rows(named=True)
    assert row["peak_allocated_bytes"] == peak + held - running
    assert not row["relative"]
