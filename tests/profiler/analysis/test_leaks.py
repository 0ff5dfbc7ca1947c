"""Memory leaks (analysis/leaks.py) on real CPU torch runs recorded by ``accelscope.profile``
in full mode: a loop that keeps 1 MiB per step (the truth injected), the same loop keeping
nothing, one that keeps memory once; and a real V100 training trace."""

from __future__ import annotations

import io
import warnings

import polars as pl
import pytest
from rich.console import Console

import accelscope
from accelscope.analysis import analyze
from accelscope.analysis.gates import check_gates
from accelscope.analysis.leaks import fit
from accelscope.schedule import Schedule
from accelscope.text import print_report
from accelscope.traces.importer import import_traces
from accelscope.traces.run import Run

KEPT_BYTES = 2**20  # what the leaking loop keeps per step: torch.ones(262144), float32
SCHEDULE = Schedule(skip_first=1, wait=0, warmup=1, active=8, repeat=1)  # steps 2-9 traced
WINDOWS = Schedule(skip_first=1, wait=2, warmup=1, active=3, repeat=3)  # steps 4-6, 10-12, 16-18 traced
NW0 = "traces/kineto/tb_plugin/samples/resnet50_num_workers_0/worker0.1623143089861.pt.trace.json.gz"


def _record(out, keep: str, schedule: Schedule = SCHEDULE, steps: int = 11):
    """``steps`` steps of a small matmul; ``keep``: "every" step appends a new 1 MiB tensor,
    made by ``torch.ones`` inside ``record_function("keep")``, to a list; "once": 8 MiB in
    step 5 only; "previous": each step's 1 MiB tensor is kept until the next step replaces it
    (freed one step later); "none": nothing kept."""
    torch = pytest.importorskip("torch", reason="the torch extra is needed to record allocator events")
    x = torch.randn(64, 64)
    kept = []
    with warnings.catch_warnings(), accelscope.profile(out, framework="torch", live=False, schedule=schedule) as prof:
        for step in prof.iter(range(steps)):
            (x @ x).relu().sum()
            if keep in ("every", "previous") or (keep == "once" and step == 5):
                with torch.profiler.record_function("keep"):
                    kept.append(torch.ones(KEPT_BYTES // 4 * (8 if keep == "once" else 1)))
                if keep == "previous":
                    del kept[:-1]
            prof.step()
    return analyze(Run.open(prof.run_dir))


@pytest.fixture(scope="module")
def leaking(tmp_path_factory):
    return _record(tmp_path_factory.mktemp("leak") / "run", "every")


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    return _record(tmp_path_factory.mktemp("clean") / "run", "none")


def _leak(report) -> dict:
    rows = report.memory_leaks.to_dicts()
    assert len(rows) == 1, report.memory_leaks
    return rows[0]


def test_a_loop_keeping_1_mib_per_step_leaks_1_mib_per_step_on_the_cpu(leaking):
    got = _leak(leaking)
    assert got["device"] == "cpu" and got["rank"] == 0
    assert got["bytes_per_step"] == pytest.approx(KEPT_BYTES, rel=0.2)  # measured: 1,048,576 B
    assert got["steps"] == 7, "fitted over the traced steps, where the allocator events are, but the window's first"


def test_the_leak_is_attributed_to_the_op_that_allocated_what_is_kept(leaking):
    got = _leak(leaking)
    assert got["op"] == "aten::ones", "the innermost op that is not an allocation primitive (aten::empty, inside it)"
    assert got["op_never_freed_bytes"] == 8 * KEPT_BYTES, "one kept tensor per traced step"


def test_the_same_loop_keeping_nothing_has_no_leak(clean):
    assert clean.memory.height == 1, "the allocator events were recorded"
    assert clean.memory_leaks.height == 0
    assert clean.to_dict()["memory_leak_bytes_per_step"] == 0


def test_memory_kept_once_is_not_a_leak(tmp_path):
    report = _record(tmp_path / "run", "once")
    assert report.memory["peak_allocated_bytes"][0] >= 8 * KEPT_BYTES
    assert report.memory_leaks.height == 0, "one change of six grows: a jump, not growth"


def test_memory_freed_after_its_window_is_not_growth(tmp_path):
    """Each step's 1 MiB lives until the next step: bounded memory, traced in 3 windows. A block
    allocated in a window's last step and freed after the window is never taken off torch's CPU
    allocator total, and blocks made before a window are not in it, so levels differ from window
    to window and step to step by a block now and then (seen at the steps' ends, MiB:
    1, 2, 2 | 2, 3, 3 | 3, 4, 4 and 7, 7, 8 | 8, 9, 9 | 9, 10, 10): no leak."""
    report = _record(tmp_path / "run", "previous", WINDOWS, 19)
    assert report.memory.height == 1 and report.memory_leaks.height == 0


def test_a_leak_is_measured_within_each_window(tmp_path):
    report = _record(tmp_path / "run", "every", WINDOWS, 19)
    got = _leak(report)
    assert got["bytes_per_step"] == pytest.approx(KEPT_BYTES, rel=0.2)
    assert (got["steps"], got["op"]) == (6, "aten::ones"), "3 windows of 3 steps, each window's first left out"


def test_the_json_lists_each_leak_and_the_fastest_for_gates(leaking):
    doc = leaking.to_dict()
    leak = doc["memory"]["leaks"][0]
    assert {k: leak[k] for k in ("rank", "device", "op", "steps")} == {"rank": 0, "device": "cpu", "op": "aten::ones", "steps": 7}
    assert doc["memory_leak_bytes_per_step"] == leak["bytes_per_step"]


def test_a_leak_gate_fails_the_leaking_run_and_passes_the_clean_one(leaking, clean):
    gate = [f"memory_leak_bytes_per_step>{KEPT_BYTES // 2}"]
    assert check_gates(leaking.to_dict(), gate)
    assert check_gates(clean.to_dict(), gate) == []


def test_a_run_without_allocator_events_fails_a_leak_gate_closed(tmp_path):
    torch = pytest.importorskip("torch")
    x = torch.randn(64, 64)
    with accelscope.profile(tmp_path / "r", framework="torch", live=False, schedule=SCHEDULE, profile_memory=False) as prof:
        for _ in prof.iter(range(11)):
            (x @ x).sum()
            prof.step()
    doc = analyze(Run.open(prof.run_dir)).to_dict()
    assert doc["memory_leak_bytes_per_step"] is None and "allocator events" in doc["unknown"]["memory_leak_bytes_per_step"]
    assert check_gates(doc, ["memory_leak_bytes_per_step>0"]) == [f"memory_leak_bytes_per_step is unknown: {doc['unknown']['memory_leak_bytes_per_step']}"]


def test_the_text_says_how_fast_memory_grows_and_under_which_op(leaking):
    out = io.StringIO()
    print_report(leaking, Console(file=out, width=200))
    assert "memory grows 1.0 MiB per step on cpu, allocated under aten::ones and never freed" in out.getvalue()


def test_a_leak_gets_a_recommendation_with_its_evidence_and_no_projection(leaking):
    rec = [a for a in leaking.advice if a.cause == "memory_leak"]
    assert len(rec) == 1
    assert "1.0 MiB per step" in rec[0].evidence and "aten::ones" in rec[0].evidence
    assert "aten::ones" in rec[0].action and ".item()" in rec[0].action
    assert rec[0].projected_step_ns is None and rec[0].projection


def test_a_real_resnet_training_trace_ends_its_steps_holding_the_same_memory(shared_dir, tmp_path):
    """V100 ResNet-50, 6 steps: allocated memory at each step's end is the same on the GPU and the CPU."""
    report = analyze(Run.open(import_traces([shared_dir / NW0], tmp_path / "run", progress=False, workers=1)))
    fitted = fit(Run.open(report.run.path).memory, report.steps.filter(pl.col("analysed") & pl.col("traced")))
    assert fitted.select("device", "steps", "bytes_per_step", "growing_share").to_dicts() == [
        {"device": "cpu", "steps": 5, "bytes_per_step": 0, "growing_share": 0.0},
        {"device": "cuda:0", "steps": 5, "bytes_per_step": 0, "growing_share": 0.0},
    ]
    assert report.memory_leaks.height == 0 and report.to_dict()["memory_leak_bytes_per_step"] == 0


def test_each_leak_in_the_json_has_exactly_the_documented_keys(leaking):
    from tests.test_docs import documented, paths

    found = {k for k in paths(leaking.to_dict()) if k.startswith("memory.leaks[].")}
    assert found == {k for k in documented("analyze") if k.startswith("memory.leaks[].")}


def test_rank_by_rank_analysis_finds_the_same_leak(leaking):
    """By rank, the host ops are read with the filter pushed into the scan instead of from the loaded slices."""
    assert analyze(Run.open(leaking.run.path), by_rank=True).memory_leaks.equals(leaking.memory_leaks)
