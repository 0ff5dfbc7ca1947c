"""Memory peaks (analysis/memory.py) on real traces, against references computed here from
the raw JSON (gunzip + json.load), and on a real CPU torch run with one known allocation."""

from __future__ import annotations

import gzip
import itertools
import json
import warnings

import polars as pl
import pytest

from accelscope.analysis import analyze
from accelscope.analysis.cache import content_key
from accelscope.traces.importer import import_traces
from accelscope.traces.run import Run, write_run
from tests.builders import numbered_steps

NW0 = "traces/kineto/tb_plugin/samples/resnet50_num_workers_0/worker0.1623143089861.pt.trace.json.gz"
NW4 = "traces/kineto/tb_plugin/samples/resnet50_num_workers_4/worker0.1623212756351.pt.trace.json.gz"
QWEN = "traces/more/tracelens/h100__Qwen_Qwen1.5-0.5B-Chat__1016005.json.gz"
BIG_BYTES = 64 * 2**20


def _raw_memory(path) -> list[dict]:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return [e for e in json.load(fh)["traceEvents"] if e.get("ph") == "i" and e.get("name") == "[memory]"]


def _of(events: list[dict], device_type: int, device_id: int) -> list[dict]:
    """The events of one device, in time order (a stable sort: file order among equal times)."""
    return sorted((e for e in events if e["args"]["Device Type"] == device_type and e["args"]["Device Id"] == device_id), key=lambda e: e["ts"])


def _report(shared_dir, tmp_path_factory, rel: str):
    out = tmp_path_factory.mktemp("memory") / "run"
    return analyze(Run.open(import_traces([shared_dir / rel], out, progress=False, workers=1)))


@pytest.fixture(scope="module")
def nw0(shared_dir, tmp_path_factory):
    return _report(shared_dir, tmp_path_factory, NW0)


def _device(report, device: str) -> dict:
    rows = report.memory.filter(pl.col("device") == device).to_dicts()
    assert len(rows) == 1, report.memory
    return rows[0]


@pytest.mark.parametrize("rel", [NW0, NW4], ids=["nw0", "nw4"])
def test_the_v100_gpu_peak_is_the_peak_of_the_running_sum_of_bytes(shared_dir, tmp_path_factory, rel):
    """2021 traces record only signed Bytes: the peak is the most allocated since the trace began."""
    report = _report(shared_dir, tmp_path_factory, rel)
    cuda = _of(_raw_memory(shared_dir / rel), 1, 0)
    running = list(itertools.accumulate(e["args"]["Bytes"] for e in cuda))
    got = _device(report, "cuda:0")
    assert got["peak_allocated_bytes"] == max(running)  # nw0: 2,791,636,480 B; nw4: 2,791,505,408 B
    assert got["peak_time_ns"] == cuda[running.index(max(running))]["ts"] * 1000
    assert got["relative"] is True and got["peak_reserved_bytes"] is None


def test_the_v100_cpu_allocator_has_its_own_peak(shared_dir, nw0):
    cpu = _of(_raw_memory(shared_dir / NW0), 0, -1)
    assert _device(nw0, "cpu")["peak_allocated_bytes"] == max(itertools.accumulate(e["args"]["Bytes"] for e in cpu))  # 57,803,264 B


def test_the_peak_step_is_the_step_whose_span_holds_the_peak(nw0):
    got = _device(nw0, "cuda:0")
    holding = nw0.steps.filter((pl.col("start_ns") <= got["peak_time_ns"]) & (got["peak_time_ns"] < pl.col("start_ns") + pl.col("dur_ns")))
    assert holding.height == 1 and got["peak_step"] == holding["step"][0]


def test_the_peak_op_is_a_host_op_on_the_allocating_thread_running_at_the_peak(nw0):
    got = _device(nw0, "cuda:0")
    assert got["peak_op"] is not None
    run = Run.open(nw0.run.path)
    t = got["peak_time_ns"]
    tid = run.memory.filter((pl.col("device") == "cuda:0") & (pl.col("time_ns") == t))["tid"].to_list()
    ops = run.slices.filter((pl.col("kind") == "cpu_op") & pl.col("tid").is_in(tid) & (pl.col("start_ns") <= t) & (t <= pl.col("start_ns") + pl.col("dur_ns")))
    assert got["peak_op"] == ops.sort("start_ns")["name"][-1]  # the latest to start: the innermost


def test_rank_by_rank_analysis_finds_the_same_peaks(nw0):
    """By rank, the host ops are read with the filter pushed into the scan instead of from the loaded slices."""
    assert analyze(Run.open(nw0.run.path), by_rank=True).memory.equals(nw0.memory)


def test_a_newer_trace_peaks_at_its_recorded_total_allocated(shared_dir, tmp_path_factory):
    report = _report(shared_dir, tmp_path_factory, QWEN)
    cuda = _of(_raw_memory(shared_dir / QWEN), 1, 0)
    got = _device(report, "cuda:0")
    assert got["peak_allocated_bytes"] == max(e["args"]["Total Allocated"] for e in cuda)  # 2,088,508,416 B
    assert got["peak_reserved_bytes"] == max(e["args"]["Total Reserved"] for e in cuda)  # 2,629,828,608 B
    assert got["relative"] is False


def test_the_json_document_lists_one_entry_per_device_in_microseconds(nw0):
    doc = nw0.to_dict()["memory"]["devices"]
    assert [(d["rank"], d["device"]) for d in doc] == [(0, "cpu"), (0, "cuda:0")]
    cuda = doc[1]
    assert cuda["peak_unix_us"] == _device(nw0, "cuda:0")["peak_time_ns"] / 1000 and cuda["relative"] is True


def test_a_run_without_allocator_events_has_no_memory_devices(tmp_path):
    path = write_run(tmp_path / "old", numbered_steps([(i * 100, 100, "step") for i in range(4)]), None, {"complete": True})
    (path / "memory").rmdir()  # as written before the table existed
    report = analyze(Run.open(path))
    assert report.memory.height == 0
    assert report.to_dict()["memory"] == {"devices": [], "leaks": [], "rank_skew": None, "ops": [], "ops_more": 0}


def test_a_memory_part_changes_the_report_cache_key(tmp_path):
    path = write_run(tmp_path / "r", numbered_steps([(0, 100, "step")]), None, {})
    before = content_key(path)
    (path / "memory" / "part-000001.parquet").write_bytes(b"x")
    assert content_key(path) != before


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    """A real torch.profiler run on the CPU with profile_memory=True: steps 1-3 traced (one of
    warm-up), each a small matmul, step 2 also creating a 64 MiB tensor inside
    ``record_function("big_alloc")`` and freeing it."""
    torch = pytest.importorskip("torch", reason="the torch extra is needed to record allocator events")
    from torch.profiler import ProfilerActivity, profile, record_function, schedule

    out = tmp_path_factory.mktemp("cpu_mem")
    trace = out / "trace.json"
    x = torch.randn(64, 64)
    with warnings.catch_warnings(), profile(activities=[ProfilerActivity.CPU], profile_memory=True, schedule=schedule(wait=0, warmup=1, active=3),
                                            on_trace_ready=lambda p: p.export_chrome_trace(str(trace))) as prof:
        warnings.simplefilter("ignore", UserWarning)  # "the profiler clears events at the end of each cycle": one cycle here
        for step in range(4):
            (x @ x).relu()
            if step == 2:
                with record_function("big_alloc"):
                    big = torch.ones(BIG_BYTES // 4)  # float32
                del big
            prof.step()
    return analyze(Run.open(import_traces([trace], out / "run", progress=False, workers=1))), trace


def test_a_cpu_runs_peak_holds_its_largest_allocation(cpu_run):
    report, trace = cpu_run
    got = _device(report, "cpu")
    raw = _of(_raw_memory(trace), 0, -1)
    assert BIG_BYTES <= got["peak_allocated_bytes"] == max(e["args"]["Total Allocated"] for e in raw)
    assert got["relative"] is False


def test_a_cpu_runs_peak_is_under_the_op_that_made_the_allocation(cpu_run):
    report, _ = cpu_run
    got = _device(report, "cpu")
    run = Run.open(report.run.path)
    t = got["peak_time_ns"]
    around = run.slices.filter((pl.col("start_ns") <= t) & (t <= pl.col("start_ns") + pl.col("dur_ns")))
    assert {"big_alloc", "aten::ones"} <= set(around["name"].to_list())  # the region and the op that allocated
    assert got["peak_op"] == "aten::empty"  # the innermost op: aten::ones allocates through it
    assert got["peak_step"] == 2
