"""Whole-capture device figures against TraceLens's own answers, shipped beside the traces
(``*gpu_timeline.csv``: busy_time and total_time, the same definition)."""

from __future__ import annotations

import csv

import pytest

from accelscope.analysis import analyze
from accelscope.traces.importer import import_traces
from accelscope.traces.run import Run

TRACELENS = "traces/more/tracelens"
CASES = [
    ("h100__Qwen_Qwen1.5-0.5B-Chat__1016005.json.gz", "h100_perf_report_csvs__gpu_timeline.csv", "steps"),
    ("inference__vllm_decode_full__graph_execution.json.gz", "inference__vllm_decode_full__perf_csvs__gpu_timeline.csv", "span"),
]


def _tracelens(path) -> dict[str, float]:
    with open(path, newline="") as fh:
        return {r["type"]: float(r["time ms"]) for r in csv.DictReader(fh)}


@pytest.mark.parametrize("trace, answers, window", CASES)
def test_whole_capture_busy_matches_tracelens(shared_dir, tmp_path, trace, answers, window):
    ref = _tracelens(shared_dir / TRACELENS / answers)
    run = Run.open(import_traces([shared_dir / TRACELENS / trace], tmp_path / "run", progress=False))
    (dev,) = [d for d in analyze(run).to_dict()["devices"] if d["device"] != "cpu"]
    assert dev["capture_window"] == window
    assert dev["capture_span_us"] / 1000 == pytest.approx(ref["total_time"], abs=0.001)
    assert dev["capture_busy_us"] / 1000 == pytest.approx(ref["busy_time"], abs=0.001)
    assert abs(dev["capture_busy_share"] - ref["busy_time"] / ref["total_time"]) <= 0.005  # the bound: 0.5 pp


def test_launches_without_device_work_say_the_device_was_not_captured(shared_dir, tmp_path):
    import gzip
    import json

    from accelscope.analysis import check_gates

    # A real trace with its device side removed, as when CUPTI was off or failed.
    doc = json.loads(gzip.open(shared_dir / "traces/HolisticTraceAnalysis/tests/data/trace_filter/sampled_rank-0.json.gz").read())
    device = {"kernel", "gpu_memcpy", "gpu_memset", "gpu_user_annotation"}
    launches = sum(1 for e in doc["traceEvents"] if e.get("cat") == "cuda_runtime" and e.get("name") in ("cudaLaunchKernel", "cudaMemcpyAsync", "cudaMemsetAsync"))
    doc["traceEvents"] = [e for e in doc["traceEvents"] if e.get("cat") not in device]
    path = tmp_path / "no_device.json"
    path.write_text(json.dumps(doc))
    report = analyze(Run.open(import_traces([path], tmp_path / "run", progress=False)))
    out = report.to_dict()
    assert out["notes"][0].startswith(f"device activity missing: the host made {launches:,} kernel launches")
    assert out["busy_share"] is None and out["idle_share"] is None and "CUPTI" in out["unknown"]["busy_share"]
    assert check_gates(out, ["busy_share<0.5"])  # fails closed


def test_a_cpu_only_trace_is_not_told_its_device_was_not_captured(shared_dir, tmp_path):
    path = shared_dir / "traces/HolisticTraceAnalysis/tests/data/cpu_only/rank-34.Jul_15_10_52_41.1074.pt.trace.json.gz"
    out = analyze(Run.open(import_traces([path], tmp_path / "run", progress=False))).to_dict()
    assert out["busy_share"] is not None and not any(n.startswith("device activity missing") for n in out["notes"])
