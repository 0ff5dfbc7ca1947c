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
