"""Projections: an upper bound stated with its model, never below the busy time per step,
and withheld (with the reason) when the evidence is thin."""

from __future__ import annotations

import pytest

from accelscope.analysis import causes as C
from accelscope.analysis.advice import MIN_PROJECTED_STEPS, PROJECTION_MODEL, Evidence, project

MS = 1_000_000


def test_a_projection_removes_the_idle_time_per_step():
    assert project(C.INPUT_WAIT, 40 * MS, 100 * MS, Evidence(10, True, 30 * MS)) == (60 * MS, PROJECTION_MODEL)


def test_a_projection_never_goes_below_the_busy_time_per_step():
    # Idle shares over a different basis than the busy time can claim more than the step holds.
    projected, _ = project(C.HOST_COMPUTE, 95 * MS, 100 * MS, Evidence(10, True, 30 * MS))
    assert projected == 30 * MS


@pytest.mark.parametrize("evidence, reason", [
    (Evidence(10, False, 1 * MS), "equal windows"),
    (Evidence(MIN_PROJECTED_STEPS - 1, True, 1 * MS), "analysed step"),
])
def test_thin_evidence_gets_no_projection_but_the_reason(evidence, reason):
    projected, why = project(C.INPUT_WAIT, 40 * MS, 100 * MS, evidence)
    assert projected is None and reason in why


def test_time_with_nothing_recorded_on_the_host_gets_no_projection():
    projected, why = project(C.NO_HOST, 98 * MS, 100 * MS, Evidence(10, True, 2 * MS))
    assert projected is None and "host" in why


# -- advice in the framework's words, never for what is already done -------------------------

TPU = "xplane/xprof_8c188e1a__tpu_inference_2.xplane.pb"
KERAS = "xplane/local_cpu_tf221_kerasfit_slowmap.xplane.pb"
VLLM_REPLAY = "traces/more/tracelens/inference__vllm_decode_full__graph_execution.json.gz"
TORCH_WORDS = ("DataLoader", "torch.compile", "CUDA graphs", "with_stack", "NCCL", "gloo", "pin_memory")


def _advice(shared_dir, tmp_path, rel):
    from accelscope.analysis import analyze
    from accelscope.traces.importer import import_traces
    from accelscope.traces.run import Run

    return analyze(Run.open(import_traces([shared_dir / rel], tmp_path / "run", progress=False))).advice


@pytest.mark.parametrize("rel, framework", [(TPU, "jax"), (KERAS, "tensorflow")])
def test_tpu_and_tf_traces_get_advice_in_their_frameworks_words(shared_dir, tmp_path, rel, framework):
    advice = _advice(shared_dir, tmp_path, rel)
    # The TPU trace's steps are its 100 runs of jit_f (no step markers: traces/xplane.py),
    # which keep the chips busy throughout, so it may get no advice; with equal windows
    # over its whole capture it used to be advised on the compile time before them.
    assert advice or rel == TPU
    for rec in advice:
        assert rec.action == C.advice_for(rec.cause, framework)
        assert not any(word in rec.text for word in TORCH_WORDS), rec.text


def test_a_trace_replaying_cuda_graphs_is_not_told_to_use_cuda_graphs(shared_dir, tmp_path):
    host = [r for r in _advice(shared_dir, tmp_path, VLLM_REPLAY) if r.cause == C.HOST_COMPUTE]
    assert host and "already replays CUDA graphs" in host[0].action and "torch.compile" not in host[0].action


def test_a_foreach_optimizer_is_not_recommended_when_the_trace_has_one():
    import polars as pl

    from accelscope.analysis.advice import _already_done

    names = pl.Series(["aten::_foreach_add_", "Optimizer.step#SGD.step"])
    assert "already runs as foreach" in _already_done(C.OPTIMIZER, "torch", names)
    assert _already_done(C.OPTIMIZER, "torch", pl.Series(["Optimizer.step#SGD.step"])) is None
