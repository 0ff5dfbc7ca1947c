"""The analyzer on real traces, checked against figures computed independently."""

import gzip
import json
import time

import polars as pl
import pytest

from accelscope.analysis import analyze
from accelscope.analysis import causes as C
from accelscope.traces.importer import import_traces
from accelscope.traces.run import Run

NW0 = "traces/kineto/tb_plugin/samples/resnet50_num_workers_0/worker0.1623143089861.pt.trace.json.gz"
NW4 = "traces/kineto/tb_plugin/samples/resnet50_num_workers_4/worker0.1623212756351.pt.trace.json.gz"
HTA = "traces/HolisticTraceAnalysis/tests/data"


@pytest.fixture(scope="module")
def runs(shared_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("analysis")
    paths = {"nw0": NW0, "nw4": NW4}
    return {k: Run.open(import_traces([shared_dir / v], out / k, progress=False)) for k, v in paths.items()}


def _reference_busy(path):
    """The shared README's definition, computed the plain way from the JSON."""
    doc = json.load(gzip.open(path))
    ev = [e for e in doc["traceEvents"] if e.get("ph") == "X"]
    steps = sorted((e["ts"], e["ts"] + e["dur"]) for e in ev if str(e.get("name", "")).startswith("ProfilerStep#"))
    dev = sorted((e["ts"], e["ts"] + e["dur"]) for e in ev if e.get("cat") in ("Kernel", "Memcpy", "Memset"))
    loader = [(e["ts"], e["ts"] + e["dur"]) for e in ev if str(e.get("name", "")).startswith("enumerate(DataLoader)")]
    out = []
    for s0, s1 in steps:
        merged = []
        for a, b in dev:
            a, b = max(a, s0), min(b, s1)
            if a >= b:
                continue
            if merged and a <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        busy = sum(b - a for a, b in merged)
        idle_in_loader = 0
        for l0, l1 in loader:
            l0, l1 = max(l0, s0), min(l1, s1)
            if l0 >= l1:
                continue
            covered = sum(max(0, min(b, l1) - max(a, l0)) for a, b in merged)
            idle_in_loader += (l1 - l0) - covered
        out.append((s1 - s0, busy, idle_in_loader))
    return out


def test_nw0_per_step_busy_matches_the_reference(runs, shared_dir):
    report = analyze(runs["nw0"])
    ref = _reference_busy(shared_dir / NW0)
    got = report.steps.sort("start_ns")
    assert got.height == len(ref) == 6
    for (dur, busy, _), r in zip(ref, got.iter_rows(named=True)):
        assert abs(r["busy_share"] - busy / dur) <= 0.005
    assert abs(report.busy_share - 0.560) <= 0.005, "README: GPU busy 56.0 %"


def test_nw0_is_highly_input_bound_and_the_loader_idle_is_input_wait(runs, shared_dir):
    report = analyze(runs["nw0"])
    assert report.verdict == "high"
    idle_in_loader_us = sum(x[2] for x in _reference_busy(shared_dir / NW0))
    assert abs(idle_in_loader_us - 355_571) < 50, "README: 355,571 µs of GPU idle inside the DataLoader call"
    attributed_us = report.gaps["input_wait_ns"].sum() / 1000
    assert attributed_us >= 0.9 * idle_in_loader_us
    assert "num_workers=0" in report.recommendations[0]
    biggest = report.gaps.sort("dur_ns", descending=True).group_by("step").first()
    assert (biggest["cause"] == C.INPUT_WAIT).all(), "each step's largest gap (~57 ms) is the DataLoader"


def test_nw4_is_not_input_bound_and_its_first_gap_is_the_batch_copy(runs):
    report = analyze(runs["nw4"])
    assert report.verdict == "none"
    assert abs(report.busy_share - 0.724) <= 0.005, "README: GPU busy 72.4 %"
    first_step = report.steps.sort("start_ns")["step"][0]
    first_gap = report.gaps.filter(pl.col("step") == first_step).sort("dur_ns", descending=True).row(0, named=True)
    assert 40e6 <= first_gap["dur_ns"] <= 50e6
    assert first_gap["cause"] == C.H2D_COPY


def test_nw4_gaps_during_backward_launches_have_host_activity(runs):
    ev = runs["nw4"].events
    report = analyze(runs["nw4"])
    main_tid = ev.filter(pl.col("kind") == "step")["tid"][0]
    backward = ev.filter((pl.col("device") == "cpu") & (pl.col("tid") != main_tid) & pl.col("kind").is_in(["cpu_op", "runtime"]))
    assert backward.height > 1000, "the backward pass runs on its own thread"
    from accelscope.analysis.intervals import covered_within

    s = backward["start_ns"].to_numpy()
    e = s + backward["dur_ns"].to_numpy()
    gaps = report.gaps
    cov = covered_within(s, e, gaps["start_ns"].to_numpy(), gaps["end_ns"].to_numpy())
    during_backward = gaps.filter(pl.Series(cov == gaps["dur_ns"].to_numpy()))
    assert during_backward.height > 100
    assert (during_backward["cause"] != C.NO_HOST).all()


def test_steps_break_down_exactly_into_categories(runs):
    from accelscope.analysis.breakdown import BREAKDOWN

    for run in runs.values():
        st = analyze(run).steps
        total = sum(st[f"{c}_ns"] for c in BREAKDOWN)
        assert (total == st["dur_ns"]).all()
        assert all((st[f"{c}_ns"] >= 0).all() for c in BREAKDOWN)


def test_gap_causes_sum_to_the_gap(runs):
    gaps = analyze(runs["nw4"]).gaps
    assert (sum(gaps[f"{c}_ns"] for c in C.CAUSES) == gaps["dur_ns"]).all()


def test_recommendations_rank_by_projected_gain(runs):
    advice = [a.to_dict() for a in analyze(runs["nw4"]).advice]
    assert advice and [a["idle_share"] for a in advice] == sorted((a["idle_share"] for a in advice), reverse=True)
    projected = [a for a in advice if a["projected_step_us"] is not None]
    assert projected and all(a["projected_step_us"] < analyze(runs["nw4"]).mean_step_ns / 1000 for a in projected)


def test_no_host_activity_gets_advice_but_no_projection(runs):
    advice = {a.cause: a for a in analyze(runs["nw4"]).advice}
    assert advice[C.NO_HOST].projected_step_ns is None and "what the host did" in advice[C.NO_HOST].projection


@pytest.mark.parametrize(
    "name, low, high",
    [("local_cpu_tf221_customloop_slowmap", 0.976, 1.0), ("local_cpu_tf221_kerasfit_slowmap", 0.95, 1.0)],
)
def test_tf_input_bound_traces_match_xprof(shared_dir, tmp_path, name, low, high):
    run = Run.open(import_traces([shared_dir / "xplane" / f"{name}.xplane.pb"], tmp_path / "r", progress=False))
    report = analyze(run)
    assert report.verdict == "high"
    assert low <= report.input_wait_share <= high, "XProf: 99.6 % for the custom loop"


def test_cpu_only_rank_invents_no_device(shared_dir, tmp_path):
    run = Run.open(import_traces([shared_dir / HTA / "cpu_only"], tmp_path / "r", progress=False))
    report = analyze(run)
    assert not report.has_device
    assert report.devices["device"].to_list() == ["cpu"]
    assert any("no device activity" in n for n in report.notes)


def test_multi_rank_runs_are_analysed_per_rank(shared_dir, tmp_path):
    run = Run.open(import_traces([shared_dir / HTA / "trace_filter"], tmp_path / "r", progress=False))
    report = analyze(run)
    assert sorted(report.steps["rank"].unique().to_list()) == [0, 1]
    assert sorted(report.devices["rank"].to_list()) == [0, 1]


def test_controlled_input_delays_are_measured_within_3pp(tmp_path):
    torch = pytest.importorskip("torch")
    import accelscope

    torch.manual_seed(0)
    x = torch.randn(384, 384)
    rows = []
    for delay_ms in (0, 5, 20, 50):
        def batches(delay_ms=delay_ms):
            for _ in range(16):
                if delay_ms:
                    time.sleep(delay_ms / 1000)
                yield x

        with accelscope.profile(tmp_path / f"d{delay_ms}", mode="light") as prof:
            for b in prof.iter(batches()):
                t0 = time.perf_counter()
                while time.perf_counter() - t0 < 0.02:  # ~20 ms of real compute per step
                    b = (b @ x).tanh_()
                prof.step()
        report = analyze(Run.open(prof.run_dir))
        truth = delay_ms / (report.mean_step_ns / 1e6)
        rows.append((delay_ms, report.input_wait_share, truth))
        assert abs(report.input_wait_share - truth) <= 0.03, rows


def test_each_devices_busy_share_is_of_the_steady_steps_like_the_runs(tmp_path):
    from accelscope.traces.run import write_run
    from tests.builders import DEVICE_SLICE, event_table

    # Five 1000 ns steps; the GPU is busy through step 0 (warm-up), then 200 ns of each other step.
    rows = [(i * 1000, 1000, "step", f"ProfilerStep#{i}", "cpu", None) for i in range(5)]
    rows.append((0, 1000, "kernel", "warm", "cuda:0", 7))
    rows += [(i * 1000 + 100, 200, "kernel", "k", "cuda:0", 7) for i in range(1, 5)]
    events = event_table(rows, DEVICE_SLICE)
    report = analyze(Run.open(write_run(tmp_path / "r", events, None, {"complete": True})))
    assert report.steps.sort("start_ns")["warmup"].to_list() == [True, False, False, False, False]
    assert report.busy_share == pytest.approx(0.2)
    assert report.devices.select("rank", "device", "busy_ns", "busy_share").rows() == [(0, "cuda:0", 800, pytest.approx(0.2))]
    assert report.streams.rows() == [(0, "cuda:0", 7, 800, pytest.approx(0.2))]

def test_a_cpu_only_runs_thread_busy_share_is_of_the_steady_steps(tmp_path):
    from accelscope.traces.run import write_run
    from tests.builders import numbered_steps as _events

    # Step 0 (warm-up) waits 90 % of its time for input; steps 1-4 wait 10 %.
    rows = [(0, 1000, "step"), (0, 900, "input_wait")]
    for i in range(1, 5):
        rows += [(i * 1000, 1000, "step"), (i * 1000, 100, "input_wait")]
    report = analyze(Run.open(write_run(tmp_path / "r", _events(rows), None, {"complete": True})))
    assert report.devices.select("rank", "device", "busy_ns", "busy_share").rows() == [(0, "cpu", 3600, pytest.approx(0.9))] and report.busy_share == pytest.approx(0.9)
