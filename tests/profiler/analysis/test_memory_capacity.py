"""Each device's peak against its memory (``peak_share``, the ``peak_memory_share`` gate) and
the peak skew between ranks, on real traces, against figures computed here from the raw
files."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys

import pytest

from accelscope.analysis import analyze
from accelscope.traces.importer import import_traces
from accelscope.traces.run import Run, write_run
from tests.builders import numbered_steps
from tests.profiler.analysis.test_memory import NW0, NW4, QWEN

MI300 = "traces/more/tracelens/mi300__jax_conv_minimal_legacy__chi-mi300x-013.ord.vultr.cpe.ice.amd.com.xplane.pb"


@pytest.fixture(scope="module")
def qwen(shared_dir, tmp_path_factory):
    out = import_traces([shared_dir / QWEN], tmp_path_factory.mktemp("qwen") / "run", progress=False)
    return out, analyze(Run.open(out))


def test_the_h100_peak_share_is_the_most_held_over_the_devices_memory(qwen, shared_dir):
    with gzip.open(shared_dir / QWEN, "rt", encoding="utf-8") as fh:
        doc = json.load(fh)
    cuda = [e["args"] for e in doc["traceEvents"] if e.get("name") == "[memory]" and e["args"]["Device Type"] == 1]
    total = next(d["totalGlobalMem"] for d in doc["deviceProperties"] if d["id"] == 0)
    held = max(max(a["Total Allocated"] for a in cuda), max(a["Total Reserved"] for a in cuda))
    _, report = qwen
    row = report.memory.filter(report.memory["device"] == "cuda:0").row(0, named=True)
    assert row["memory_total_bytes"] == total  # 85,018,279,936 B
    assert row["peak_share"] == pytest.approx(held / total)  # 2,629,828,608 B reserved: 3.1 %
    assert report.peak_memory_share == pytest.approx(held / total, abs=1e-6)


def test_the_peak_memory_share_gate_fails_above_the_share_and_passes_below(qwen):
    out, report = qwen
    share = report.peak_memory_share

    def gate(limit: float) -> int:
        return subprocess.run([sys.executable, "-m", "accelscope", "analyze", str(out), "--fail-if", f"peak_memory_share>{limit}"],
                              capture_output=True, text=True).returncode

    assert gate(round(share * 0.9, 6)) == 1 and gate(round(share * 1.1, 6)) == 0


def test_a_relative_peak_has_no_share_and_the_gate_fails_closed(shared_dir, tmp_path):
    report = analyze(Run.open(import_traces([shared_dir / NW0], tmp_path / "run", progress=False)))
    assert report.memory["peak_share"].null_count() == report.memory.height
    assert report.to_dict()["peak_memory_share"] is None and "peak_memory_share" in report.unknown


def test_a_run_without_allocator_events_says_why_its_share_is_unknown(tmp_path):
    report = analyze(Run.open(write_run(tmp_path / "r", numbered_steps([(0, 100, "step"), (100, 100, "step")]), None, {})))
    assert report.peak_memory_share is None and "no allocator events" in report.unknown["peak_memory_share"]


def test_an_xplanes_gpu_share_is_over_the_planes_memory_size(shared_dir, tmp_path):
    path = shared_dir / MI300
    run = Run.open(import_traces([path], tmp_path / "run", progress=False))
    sizes = {d["id"]: d["memory_total_bytes"] for d in run.meta["devices"] if "memory_total_bytes" in d}
    report = analyze(run)
    for row in report.memory.iter_rows(named=True):
        assert row["memory_total_bytes"] == sizes[row["device"]]  # 206,141,652,992 B: MI300X's 192 GiB
        assert row["peak_share"] == pytest.approx(row["peak_allocated_bytes"] / sizes[row["device"]])


def test_two_ranks_peak_skew_names_the_hungrier_rank(shared_dir, tmp_path):
    run = Run.open(import_traces([shared_dir / NW0, shared_dir / NW4], tmp_path / "two", progress=False, workers=1))
    report = analyze(run)
    gpu = {r["rank"]: r["peak_allocated_bytes"] for r in report.memory.iter_rows(named=True) if r["device"].startswith("cuda")}
    skew = report.to_dict()["memory"]["rank_skew"]
    hi, lo = max(gpu, key=gpu.get), min(gpu, key=gpu.get)
    assert (skew["max_rank"], skew["min_rank"]) == (hi, lo) and hi != lo
    assert skew["skew"] == pytest.approx(gpu[hi] / gpu[lo]) and skew["relative"] is True
