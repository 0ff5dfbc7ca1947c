"""benchmarks/gpu_acceptance.py --dry-run: the real-GPU acceptance script stays correct on the CPU.

The script trains a real loop four ways (bare, light, full, bare torch.profiler) and checks
accelscope against truths it measures itself; on the CPU every CUDA-only check must read
"skipped: no CUDA device" and every other check must run.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CUDA_ONLY = ("full_trace_device_work", "nvml_sampled_10hz", "nvml_vs_nvidia_smi", "gpu_busy_vs_cuda_events", "gpu_busy_vs_nvml", "memory_peak_vs_cuda",
             "memory_light_samples", "memory_snapshot_vs_cuda")
MUST_PASS = ("runs_open_in_analyze", "runs_open_in_dashboard", "input_wait_share", "memory_recorded", "oom_forensics")
OVERHEAD = ("overhead_light", "overhead_full")
# Input wait and its truth come from the same steps of the same run, so a noisy machine
# lengthens both sides alike; what differs is the DataLoader's own work outside the
# Dataset (~0.1 ms of a ~10 ms step, 1 pp measured) plus a preemption landing in next()
# (a 1 ms stall in one of 39 steps: 0.3 pp). The spec's 3 pp leaves room for both.
INPUT_WAIT_TOL_PP = 3.0


@pytest.fixture(scope="module")
def result(tmp_path_factory) -> dict:
    pytest.importorskip("torch", reason="the torch extra is needed to train the loop")
    pytest.importorskip("plotly", reason="the dashboard extra is needed for the dashboard check")
    out = tmp_path_factory.mktemp("gpu-acceptance")
    env = dict(os.environ, OUT=str(out), CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, "benchmarks/gpu_acceptance.py", "--dry-run"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=240)
    path = out / "gpu_acceptance.json"
    assert path.is_file(), f"no JSON written (rc {proc.returncode}): {proc.stderr[-2000:]}"
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert json.loads(proc.stdout) == doc, "stdout and $OUT/gpu_acceptance.json differ"
    return doc


def test_every_check_reported_with_a_status(result: dict) -> None:
    assert "error" not in result, result.get("error")
    assert result["dry_run"] is True
    assert set(result["checks"]) == set(CUDA_ONLY + MUST_PASS + OVERHEAD)
    for name, c in result["checks"].items():
        assert c["status"] in ("pass", "fail", "skipped"), name
        assert isinstance(c["figures"], dict), name
    assert sorted(sum(result["summary"].values(), [])) == sorted(result["checks"])


def test_every_way_recorded_every_setting(result: dict) -> None:
    rounds = result["settings"]["rounds"]
    for way, w in result["ways"].items():
        assert w["errors"] == [], f"{way}: {w['errors']}"
        assert w["runs"] == rounds * len(result["settings"]["delays_ms"]), way


def test_cuda_checks_skipped_on_the_cpu(result: dict) -> None:
    for name in CUDA_ONLY:
        c = result["checks"][name]
        assert (c["status"], c.get("reason")) == ("skipped", "skipped: no CUDA device"), name


def test_cpu_checks_pass(result: dict) -> None:
    for name in MUST_PASS:
        c = result["checks"][name]
        assert c["status"] == "pass", f"{name}: {json.dumps(c)[:1500]}"
    figs = result["checks"]["input_wait_share"]["figures"]
    for key, f in figs.items():
        if key == "tolerance_pp":
            continue
        assert f["steps"] >= 3, key
        assert f["diff_pp"] <= INPUT_WAIT_TOL_PP, f"{key}: {f}"
    # the injected delay must show: 20 ms of a ~30 ms step is far above 5 ms of a ~15 ms one
    assert figs["light_d20ms"]["truth"] > figs["light_d5ms"]["truth"] > figs["light_d0ms"]["truth"]


def test_overhead_ratios_measured(result: dict) -> None:
    """Ratios are measured and judged against 1.02 / 1.10; whether they pass on this shared
    2-core machine is noise (docs/benchmarks.md: light / bare 1.005-1.035 for identical code),
    so only the measurement is asserted here."""
    for name, target in zip(OVERHEAD, (1.02, 1.10)):
        c = result["checks"][name]
        assert c["status"] in ("pass", "fail"), name
        assert c["figures"]["target"] == target
        for d in result["settings"]["delays_ms"]:
            ratio = c["figures"][f"d{d}ms"]["ratio"]
            assert math.isfinite(ratio) and 0.5 < ratio < 3.0, f"{name} D={d}: {ratio}"
        assert c["status"] == ("pass" if c["figures"]["d0ms"]["ratio"] <= target else "fail")


def _gpu_memory():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_memory", REPO / "benchmarks" / "gpu_memory.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_cuda_peak_check_compares_with_the_traced_steps_only() -> None:
    """The CUDA-only memory check's logic, which the CPU dry run cannot reach: the truth is the
    most max_memory_allocated of the steps the report says were traced."""
    m = _gpu_memory()
    rep = {"steps": [{"step": i, "traced": i in (2, 3)} for i in range(5)],
           "memory": {"devices": [{"device": "cuda:0", "peak_allocated_bytes": 1_000_000}]}}
    per_step = [5_000_000, 900_000, 990_000, 1_000_000, 7_000_000]  # untraced steps peak higher: not the truth
    status, figs, _ = m.memory_peak_vs_cuda([(0.0, rep, per_step)])
    assert status == "pass" and figs["d0ms"]["truth_bytes"] == 1_000_000 and figs["d0ms"]["traced_steps"] == 2
    per_step[3] = 1_100_000
    assert m.memory_peak_vs_cuda([(0.0, rep, per_step)])[0] == "fail"


def test_the_light_memory_check_passes_a_light_run_and_fails_a_missing_sample(tmp_path, fake_cuda) -> None:
    """The CUDA-only light-mode memory check's logic on a real light run of a CPU loop (the
    allocator faked at its boundary): a sample per step and the loop's own peak pass; a run
    missing a step's sample, or a peak 2 % off, fail."""
    from accelscope.analysis import analyze
    from accelscope.traces.run import Run
    from tests.cuda_fake import MIB, train

    m = _gpu_memory()
    prof, _, peaks = train(tmp_path / "r", fake_cuda, steps=8, transient=lambda step: (step % 3 + 1) * MIB)
    rep = analyze(Run.open(prof.run_dir)).to_dict()
    status, figs, _ = m.memory_light_samples([(0.0, rep, 8, peaks)])
    assert status == "pass", figs
    assert figs["d0ms"]["rel_diff"] == 0 and figs["d0ms"]["source"] == "per-step samples"
    assert m.memory_light_samples([(0.0, rep, 7, peaks)])[0] == "fail"
    assert m.memory_light_samples([(0.0, rep, 8, [int(max(peaks) * 1.02)])])[0] == "fail"
