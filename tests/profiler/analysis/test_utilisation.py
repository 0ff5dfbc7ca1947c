"""Utilisation per device (``Report.devices``) on real runs, and the text the Overview and
the HTML report render it as: imported V100 and multi-rank Kineto traces, a CPU-only
recorded run, and a light-mode run sampled by NVML (the scripted libnvidia-ml of
tests/collectors/nvml_shim.c, two GPUs)."""

from __future__ import annotations

from collections import defaultdict

import polars as pl
import pytest

from accelscope.analysis import analyze
from accelscope.analysis.causes import CAUSE_TEXT, CAUSES
from accelscope.text import MAX_DEVICE_ROWS as MAX_ROWS
from accelscope.text import device_rows as table_rows
from accelscope.traces.run import Run
from tests.collectors.test_nvml import run_profiled, shim_dir  # noqa: F401  (shim_dir: a fixture)

NW0 = "traces/kineto/tb_plugin/samples/resnet50_num_workers_0/worker0.1623143089861.pt.trace.json.gz"
TWO_RANKS = "traces/HolisticTraceAnalysis/tests/data/trace_filter"


def _imported(shared_dir, tmp_path_factory, rel: str) -> Run:
    from accelscope.traces.importer import import_traces

    return Run.open(import_traces([shared_dir / rel], tmp_path_factory.mktemp("imported") / "run", progress=False))


@pytest.fixture(scope="module")
def nw0(shared_dir, tmp_path_factory) -> Run:
    return _imported(shared_dir, tmp_path_factory, NW0)


def device_use(report, _counters=None) -> list:
    """The report's per-device rows as records (attribute access)."""
    from types import SimpleNamespace

    return [SimpleNamespace(**r) for r in report.devices.iter_rows(named=True)]


def _idle_by_cause(report, rank: int, device: str) -> dict[str, int]:
    """Idle time per cause of one device over the steps its busy share is of, row by row."""
    basis = {(r["rank"], r["step"]) for r in report.traced_steady.iter_rows(named=True)}
    out: dict[str, int] = defaultdict(int)
    for gap in report.gaps.iter_rows(named=True):
        if gap["rank"] == rank and gap["device"] == device and (gap["rank"], gap["step"]) in basis:
            for c in CAUSES:
                out[c] += gap[f"{c}_ns"]
    return out


def test_a_gpu_runs_devices_get_the_analyzers_busy_share_and_main_idle_cause(nw0):
    report = analyze(nw0)
    uses = device_use(report, nw0.counters)
    assert [(u.rank, u.device) for u in uses] == [(r["rank"], r["device"]) for r in report.devices.sort("rank", "device").iter_rows(named=True)]
    (use,) = uses
    assert use.device == "cuda:0" and use.busy_share == pytest.approx(report.devices["busy_share"][0])
    idle = _idle_by_cause(report, use.rank, use.device)
    assert use.idle_cause == max(idle, key=idle.get) == "input_wait"  # nw0: the single-process DataLoader
    assert use.idle_cause_share == pytest.approx(idle["input_wait"] / sum(idle.values()))
    streams = report.streams.filter(pl.col("device") == "cuda:0").sort("busy_share", descending=True)
    assert (use.streams, use.busiest_stream) == (streams.height, streams["stream"][0])
    assert use.sampled_counter is None and use.memory_peak_bytes is None  # the trace holds no NVML samples
    headers, rows, rest = table_rows(report.devices, report.has_device)
    assert rows == [["cuda:0", f"{use.busy_share:.1%}", f"waiting for input ({use.idle_cause_share:.0%} of idle time)", f"stream {use.busiest_stream}", "—", "—"]]
    assert headers[:3] == ["device", "busy", "idle mostly"] and rest == ""


def test_each_rank_of_a_multi_rank_job_is_a_row_named_with_its_rank(shared_dir, tmp_path_factory):
    run = _imported(shared_dir, tmp_path_factory, TWO_RANKS)
    report = analyze(run)
    _, rows, _ = table_rows(report.devices, report.has_device)
    assert [r[0] for r in rows] == [f"rank {r['rank']} · {r['device']}" for r in report.devices.sort("rank", "device").iter_rows(named=True)]
    assert len(rows) == 2 and all(r[1].endswith("%") for r in rows)


def test_a_cpu_only_run_summarises_its_training_thread(recorded_run):
    run = Run.open(recorded_run)
    report = analyze(run)
    (use,) = device_use(report, run.counters)
    assert use.device == "cpu" and use.busy_share == pytest.approx(report.devices["busy_share"][0])
    assert use.idle_cause == "input_wait" and use.streams == 0
    _, rows, _ = table_rows(report.devices, report.has_device)
    assert rows[0][:3] == ["cpu (training thread)", f"{use.busy_share:.1%}", f"{CAUSE_TEXT['input_wait']} ({use.idle_cause_share:.0%} of idle time)"]


def test_gpus_sampled_by_nvml_in_a_light_mode_run_show_their_own_counters(shim_dir, tmp_path_factory):  # noqa: F811
    run, _, _ = run_profiled(tmp_path_factory.mktemp("nvml"), shim_dir, seconds=0.4)
    report = analyze(run)
    assert not report.has_device  # light mode: steps and input waits, no kernels
    uses = {u.device: u for u in device_use(report, run.counters)}
    assert set(uses) == {"cpu", "cuda:0", "cuda:1"}
    steady = [(r["start_ns"], r["end_ns"]) for r in report.steps.filter(~pl.col("warmup")).iter_rows(named=True)]
    for device in ("cuda:0", "cuda:1"):
        c = run.counters.filter((pl.col("device") == device) & pl.col("value").is_not_null())
        util = [r["value"] for r in c.filter(pl.col("name") == "gpu_util_percent").iter_rows(named=True) if any(a <= r["time_ns"] < b for a, b in steady)]
        use = uses[device]
        assert use.busy_share is None and use.idle_cause is None  # not in the trace
        assert use.sampled_counter == "NVML utilisation" and use.sampled_mean_percent == pytest.approx(sum(util) / len(util))
        assert use.memory_peak_bytes == c.filter(pl.col("name") == "memory_used_bytes")["value"].max()
        assert use.memory_total_bytes == c.filter(pl.col("name") == "memory_total_bytes")["value"].max()
    _, rows, _ = table_rows(report.devices, report.has_device)
    gpu0 = next(r for r in rows if r[0] == "cuda:0")
    assert gpu0[1:3] == ["not traced", "—"] and gpu0[4].startswith("NVML utilisation ") and gpu0[5] == "2.0 GiB of 16.0 GiB"


def test_a_job_of_many_devices_lists_the_first_and_sums_up_the_rest(nw0):
    report = analyze(nw0)
    many = pl.concat([report.devices.with_columns(rank=pl.lit(r, dtype=pl.Int32), busy_share=pl.lit(r / 100)) for r in range(MAX_ROWS + 4)])
    _, rows, rest = table_rows(many, True)
    assert len(rows) == MAX_ROWS and rows[0][0] == "rank 0 · cuda:0"
    assert rest == f"and 4 more devices, busy {MAX_ROWS / 100:.1%} to {(MAX_ROWS + 3) / 100:.1%}"


def test_a_traced_gpu_rank_lists_only_its_own_devices_not_every_gpu_nvml_sampled(tmp_path):
    from accelscope.traces.run import write_run
    from tests.builders import DEVICE_SLICE, counter_table, event_table

    # Four 1 ms steps with a kernel on cuda:0; NVML sampled both GPUs of the machine, and
    # cuda:0 at 90 % inside the steps but 0 % before the first (outside: not counted).
    rows = [(i * 1_000_000, 1_000_000, "step", f"ProfilerStep#{i}", "cpu", None) for i in range(4)]
    rows += [(i * 1_000_000 + 100_000, 500_000, "kernel", "k", "cuda:0", 7) for i in range(4)]
    samples = [("gpu_util_percent", d, t, v) for d in ("cuda:0", "cuda:1") for t, v in ((-500_000, 0.0), (1_500_000, 90.0), (2_500_000, 90.0))]
    samples += [("memory_used_bytes", "cuda:1", 1_500_000, 2.0**30)]
    run = Run.open(write_run(tmp_path / "r", event_table(rows, DEVICE_SLICE), counter_table(samples), {"complete": True}))
    report = analyze(run)
    (use,) = device_use(report, run.counters)
    assert use.device == "cuda:0" and use.busy_share == pytest.approx(0.5)
    assert use.sampled_mean_percent == pytest.approx(90.0)  # step 0 is warm-up: the 1.5 and 2.5 ms samples
