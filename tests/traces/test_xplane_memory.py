"""TF's and JAX's allocator events in XPlanes go to the memory table (not the slices), and
the peaks analysed from them equal XProf's memory profile (PyPI ``xprof``, the reference
reader of ``.xplane.pb``), allocator by allocator, on the shared TF CPU and MI300 JAX files."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from accelscope.analysis import analyze
from accelscope.traces.importer import import_traces
from accelscope.traces.run import Run
from accelscope.traces.xplane import read_xplane
from accelscope.traces.xplane_proto import load_xspace, stats_of
from tests.profiler.analysis.test_xprof_reference import xprof_tool

TF_CPU = "xplane/local_cpu_tf221_customloop_slowmap.xplane.pb"
MI300 = "traces/more/tracelens/mi300__jax_conv_minimal_legacy__chi-mi300x-013.ord.vultr.cpe.ice.amd.com.xplane.pb"


def _raw_allocator_events(path: Path) -> int:
    """MemoryAllocation / MemoryDeallocation events with a block size, counted from the raw XSpace."""
    n = 0
    for plane in load_xspace(path).planes:
        names = {m.id: m.name for m in plane.event_metadata.values()}
        stat_names = {sm.id: sm.name for sm in plane.stat_metadata.values()}
        for line in plane.lines:
            for ev in line.events:
                if names.get(ev.metadata_id) in ("MemoryAllocation", "MemoryDeallocation") and "allocation_bytes" in stats_of(ev.stats, stat_names):
                    n += 1
    return n


def _xprof_peaks(path: Path, work: Path) -> dict[str, int]:
    """XProf's peak heap bytes per allocator (where its peak has no stack reservation)."""
    doc = xprof_tool(path, "memory_profile", work)[0]
    out = {}
    for name, prof in doc["memoryProfilePerAllocator"].items():
        peak = prof["profileSummary"]["peakStats"]
        assert int(peak.get("stackReservedBytes", 0)) == 0, name
        out[name] = int(peak["heapAllocatedBytes"])
    return out


@pytest.fixture(scope="module")
def tf_cpu(shared_dir):
    return shared_dir / TF_CPU


def test_every_allocator_event_is_a_memory_row_and_none_a_slice(tf_cpu):
    imported = read_xplane(tf_cpu)
    assert imported.memory is not None and imported.memory.num_rows == _raw_allocator_events(tf_cpu) > 100
    names = set(imported.events.column("name").to_pylist())
    assert not names & {"MemoryAllocation", "MemoryDeallocation"}


def test_allocations_add_and_frees_subtract_their_block(tf_cpu):
    mem = pl.from_arrow(read_xplane(tf_cpu).memory)
    # The allocator's own total after each event moves by exactly that event's signed block.
    step = mem.with_columns(prev=pl.col("total_allocated_bytes").shift()).drop_nulls("prev")
    assert (step["total_allocated_bytes"] - step["prev"] == step["bytes"]).all()
    assert set(mem["device"]) == {"cpu"} and (mem["bytes"] > 0).any() and (mem["bytes"] < 0).any()


def test_the_tf_cpu_peak_is_xprofs(tf_cpu, tmp_path):
    pytest.importorskip("xprof", reason="XProf (pip install xprof) is the reference")
    report = analyze(Run.open(import_traces([tf_cpu], tmp_path / "run", progress=False)))
    ours = dict(zip(report.memory["device"], report.memory["peak_allocated_bytes"]))
    assert ours == {"cpu": _xprof_peaks(tf_cpu, tmp_path / "xprof")["mklcpu"]}
    assert report.memory["relative"].to_list() == [False]


def test_each_gpu_allocators_peak_is_xprofs_on_the_mi300_job(shared_dir, tmp_path):
    pytest.importorskip("xprof", reason="XProf (pip install xprof) is the reference")
    path = shared_dir / MI300
    report = analyze(Run.open(import_traces([path], tmp_path / "run", progress=False)))
    ours = dict(zip(report.memory["device"], report.memory["peak_allocated_bytes"]))
    theirs = {f"rocm:{name.split('_')[1]}": v for name, v in _xprof_peaks(path, tmp_path / "xprof").items()}
    assert len(theirs) == 8 and ours == theirs


def test_each_tpu_cores_peak_is_xprofs_lifetime_peak(shared_dir, tmp_path):
    """TPU hosts name the allocator by ``index_on_host`` (ours ``tpu:N``, XProf's ``"N"``).
    XProf's peak *stats* there are at the peak of heap plus the program's stack reservation,
    which we do not keep (module docstring); its lifetime peak of allocated bytes is ours."""
    pytest.importorskip("xprof", reason="XProf (pip install xprof) is the reference")
    path = shared_dir / "xplane/xprof_8c188e1a__tpu_inference_2.xplane.pb"
    report = analyze(Run.open(import_traces([path], tmp_path / "run", progress=False)))
    ours = dict(zip(report.memory["device"], report.memory["peak_allocated_bytes"]))
    doc = xprof_tool(path, "memory_profile", tmp_path / "xprof")[0]
    theirs = {f"tpu:{k}": int(v["profileSummary"]["peakBytesUsageLifetime"]) for k, v in doc["memoryProfilePerAllocator"].items()}
    assert len(theirs) == 4 and ours == theirs
