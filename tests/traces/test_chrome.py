import gzip
import json

import polars as pl
import pytest

from accelscope.analysis.causes import CAUSE_TEXT, CAUSES, gap_slices
from accelscope.traces.chrome import GAP_TRACK, export_chrome_trace
from accelscope.traces.kineto import GAP_CATEGORY
from accelscope.traces.run import Run, write_run
from accelscope.traces.schema import COUNTER_SCHEMA, EVENT_SCHEMA


def test_recorded_run_exports_every_slice_and_counter(recorded_run, tmp_path):
    run = Run.open(recorded_run)
    doc = json.loads(export_chrome_trace(run, tmp_path / "t.json").read_text())
    evs = doc["traceEvents"]
    x = [e for e in evs if e["ph"] == "X"]
    assert len(x) == run.events.height
    assert sum(e["ph"] == "C" for e in evs) == run.counters.filter(pl.col("value").is_not_null()).height
    names = {(e["pid"], e["tid"]): e["args"]["name"] for e in evs if e["ph"] == "M" and e["name"] == "thread_name"}
    assert any("training" in n for n in names.values())
    assert doc["otherData"]["accelscope"]["export_version"] == 2
    assert doc["distributedInfo"] == {"rank": 0}
    # Timestamps survive exactly: written as decimal text of the integer nanoseconds.
    text = (tmp_path / "t.json").read_text()
    first_ns = run.events["start_ns"].min()
    assert f'"ts":{first_ns // 1000}.{first_ns % 1000:03d}' in text or f'"ts":{first_ns // 1000},' in text
    steps = [e for e in x if e["name"].startswith("ProfilerStep#")]
    assert len(steps) == 14 and all(e["cat"] == "user_annotation" for e in steps)


def test_gz_suffix_compresses(recorded_run, tmp_path):
    out = export_chrome_trace(Run.open(recorded_run), tmp_path / "t.json.gz")
    assert json.loads(gzip.decompress(out.read_bytes()))["traceEvents"]


def test_device_work_gets_lanes_and_launch_flows(tmp_path):
    rows = {
        "start_ns": [1_000, 3_000],
        "dur_ns": [500, 2_000],
        "kind": ["runtime", "kernel"],
        "name": ["cudaLaunchKernel", "gemm"],
        "device": ["cpu", "cuda:1"],
        "stream": [None, 7],
        "pid": [42, 1],
        "tid": [43, 7],
        "rank": [0, 0],
        "correlation_id": [99, 99],
        "args": [None, '{"grid":[1,1,1]}'],
    }
    counters = {"name": ["gpu_util_percent"], "device": ["cuda:1"], "time_ns": [2_000], "value": [50.0], "rank": [0]}
    write_run(tmp_path / "r", pl.DataFrame(rows, schema=pl.Schema(EVENT_SCHEMA)), pl.DataFrame(counters, schema=pl.Schema(COUNTER_SCHEMA)), {"pid": 42})
    doc = json.loads(export_chrome_trace(Run.open(tmp_path / "r"), tmp_path / "t.json").read_text())
    kernel = next(e for e in doc["traceEvents"] if e["ph"] == "X" and e["name"] == "gemm")
    assert (kernel["pid"], kernel["tid"], kernel["cat"]) == (1, 7, "kernel")
    assert kernel["args"]["grid"] == [1, 1, 1] and kernel["args"]["correlation"] == 99
    flows = sorted((e["ph"], e["id"]) for e in doc["traceEvents"] if e.get("cat") == "ac2g")
    assert flows == [("f", 99), ("s", 99)]
    counter = next(e for e in doc["traceEvents"] if e["ph"] == "C")
    assert counter["pid"] == 1 and counter["args"] == {"gpu_util_percent": 50.0}


def test_multi_rank_run_exports_one_file_per_rank(shared_dir, tmp_path):
    from accelscope.traces.chrome import export_per_rank
    from accelscope.traces.importer import import_traces

    run = Run.open(import_traces([shared_dir / "traces/HolisticTraceAnalysis/tests/data/trace_filter"], tmp_path / "r", progress=False))
    files = export_per_rank(run, tmp_path / "ranks")
    assert [f.name for f in files] == ["rank-0.json.gz", "rank-1.json.gz"]
    for rank, f in enumerate(files):
        text = gzip.decompress(f.read_bytes()).decode()
        assert f'"distributedInfo": {{"rank": {rank}}}' in text
        doc = json.loads(text)
        assert sum(e["ph"] == "X" for e in doc["traceEvents"]) == run.events.filter(pl.col("rank") == rank).height


def test_device_annotations_get_no_stream(tmp_path):
    rows = {
        "start_ns": [1_000_000, 1_000_500], "dur_ns": [5_000, 100], "kind": ["annotation", "kernel"], "name": ["fwd", "k"],
        "device": ["cuda:0", "cuda:0"], "stream": [7, 7], "pid": [0, 0], "tid": [7, 7], "rank": [0, 0],
        "correlation_id": [None, 5], "args": [None, None],
    }
    write_run(tmp_path / "r", pl.DataFrame(rows, schema=pl.Schema(EVENT_SCHEMA)), None, {})
    doc = json.loads(export_chrome_trace(Run.open(tmp_path / "r"), tmp_path / "t.json").read_text())
    ann, kern = (next(e for e in doc["traceEvents"] if e.get("name") == n and e["ph"] == "X") for n in ("fwd", "k"))
    assert ann["cat"] == "gpu_user_annotation" and "stream" not in ann["args"]
    assert kern["args"]["stream"] == 7 and kern["ts"] == 1000.5


def test_multi_rank_lanes_are_named_on_their_own_pids(shared_dir, tmp_path):
    from accelscope.traces.importer import import_traces

    src = shared_dir / "traces/HolisticTraceAnalysis/tests/data/trace_filter"
    run = Run.open(import_traces([src], tmp_path / "run"))
    doc = json.loads(gzip.decompress(export_chrome_trace(run, tmp_path / "t.json.gz").read_bytes()))
    events = doc["traceEvents"]
    names = {(e["pid"], e["tid"]): e["args"]["name"] for e in events if e.get("ph") == "M" and e["name"] == "thread_name"}
    lanes = {(e["pid"], e["tid"]) for e in events if e.get("ph") == "X"}
    assert len({pid for pid, _ in lanes}) >= 4  # two ranks' hosts and devices
    assert set(names) == lanes, sorted(lanes ^ set(names))[:5]
    assert all(name == name.strip() and name for name in names.values())


TRACE_FILTER = "traces/HolisticTraceAnalysis/tests/data/trace_filter"
CORE = ["start_ns", "dur_ns", "kind", "name", "device", "stream", "rank"]


@pytest.fixture(scope="module")
def two_ranks(shared_dir, tmp_path_factory):
    """The real two-rank trace_filter job, its analysis, and its export with the idle gaps."""
    from accelscope.analysis import analyze
    from accelscope.traces.importer import import_traces

    tmp = tmp_path_factory.mktemp("gaps")
    run = Run.open(import_traces([shared_dir / TRACE_FILTER], tmp / "run", progress=False))
    report = analyze(run)
    out = export_chrome_trace(run, tmp / "t.json.gz", gaps=gap_slices(report.gaps))
    return run, report, out


def _doc(path):
    return json.loads(gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes())


def test_idle_gaps_sit_on_their_own_named_track_under_each_device(two_ranks):
    run, report, out = two_ranks
    events = _doc(out)["traceEvents"]
    names = {(e["pid"], e["tid"]): e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    gaps = [e for e in events if e["ph"] == "X" and e["cat"] == GAP_CATEGORY]
    assert len(gaps) == report.gaps.height > 100
    assert {names[(e["pid"], e["tid"])] for e in gaps} == {GAP_TRACK}
    kernel_pids = {e["pid"] for e in events if e["ph"] == "X" and e["cat"] == "kernel"}
    assert {e["pid"] for e in gaps} == kernel_pids and len(kernel_pids) == 2, "one gap track per rank's device"
    assert not {(e["pid"], e["tid"]) for e in gaps} & {(e["pid"], e["tid"]) for e in events if e["ph"] == "X" and e["cat"] != GAP_CATEGORY}


def test_each_idle_gap_carries_its_cause_and_duration(two_ranks):
    _, report, out = two_ranks
    events = _doc(out)["traceEvents"]
    rank0_pid = min(e["pid"] for e in events if e["ph"] == "X" and e["cat"] == "kernel")
    gaps = sorted((e for e in events if e["ph"] == "X" and e["cat"] == GAP_CATEGORY), key=lambda e: (e["pid"] != rank0_pid, e["ts"]))
    first = report.gaps.sort("rank", "start_ns").row(0, named=True)
    assert gaps[0]["args"]["cause"] == first["cause"] and gaps[0]["name"] == f"idle: {CAUSE_TEXT[first['cause']]}"
    assert gaps[0]["args"]["dur_ms"] == pytest.approx(first["dur_ns"] / 1e6) and gaps[0]["dur"] == pytest.approx(first["dur_ns"] / 1e3)
    assert sum(gaps[0]["args"]["by_cause_ms"].values()) == pytest.approx(first["dur_ns"] / 1e6)
    causes = {e["args"]["cause"] for e in gaps}
    assert causes == set(report.gaps["cause"].unique()) and causes <= set(CAUSES)


def test_a_reimported_export_drops_the_gap_track_and_keeps_every_figure(two_ranks, tmp_path):
    from accelscope.analysis import analyze
    from accelscope.traces.importer import import_traces

    run, report, out = two_ranks
    back = Run.open(import_traces([out], tmp_path / "back", progress=False))
    assert back.events.select(CORE).sort(CORE).equals(run.events.select(CORE).sort(CORE)), "the gap track is analysis output, not trace data"
    again = analyze(back)
    assert again.busy_share == report.busy_share and again.idle_by_cause_ns == report.idle_by_cause_ns
    assert again.breakdown_ns == report.breakdown_ns and again.gaps.height == report.gaps.height


def test_exporting_a_reimported_export_writes_the_gaps_once(two_ranks, tmp_path):
    from accelscope.analysis import analyze
    from accelscope.traces.importer import import_traces

    _, report, out = two_ranks
    back = Run.open(import_traces([out], tmp_path / "back", progress=False))
    twice = export_chrome_trace(back, tmp_path / "again.json", gaps=gap_slices(analyze(back).gaps))
    assert sum(e["ph"] == "X" and e["cat"] == GAP_CATEGORY for e in _doc(twice)["traceEvents"]) == report.gaps.height
    plain = export_chrome_trace(back, tmp_path / "plain.json")
    assert not any(e.get("cat") == GAP_CATEGORY for e in _doc(plain)["traceEvents"]), "without gaps, none from the re-import either"


def test_a_cpu_only_runs_gaps_go_under_its_training_process(recorded_run, tmp_path):
    from accelscope.analysis import analyze
    from accelscope.traces.importer import import_traces

    run = Run.open(recorded_run)
    report = analyze(run)
    out = export_chrome_trace(run, tmp_path / "t.json", gaps=gap_slices(report.gaps))
    events = _doc(out)["traceEvents"]
    steps = {e["pid"] for e in events if e["ph"] == "X" and e["name"].startswith("ProfilerStep#")}
    gaps = [e for e in events if e["ph"] == "X" and e["cat"] == GAP_CATEGORY]
    assert len(gaps) == report.gaps.height > 0 and {e["pid"] for e in gaps} == steps
    again = analyze(Run.open(import_traces([out], tmp_path / "back", progress=False)))
    assert (again.busy_share, again.input_wait_share, again.idle_by_cause_ns) == (report.busy_share, report.input_wait_share, report.idle_by_cause_ns)


def test_two_ranks_on_cuda0_get_a_process_each_with_their_own_counters(tmp_path):
    rows = {
        "start_ns": [1_000, 2_000], "dur_ns": [500, 500], "kind": ["kernel", "kernel"], "name": ["k", "k"],
        "device": ["cuda:0", "cuda:0"], "stream": [7, 7], "pid": [0, 0], "tid": [7, 7], "rank": [0, 1],
        "correlation_id": [None, None], "args": [None, None],
    }
    counters = {"name": ["gpu_util_percent"] * 2, "device": ["cuda:0"] * 2, "time_ns": [1_200, 2_200], "value": [10.0, 90.0], "rank": [0, 1]}
    write_run(tmp_path / "r", pl.DataFrame(rows, schema=pl.Schema(EVENT_SCHEMA)), pl.DataFrame(counters, schema=pl.Schema(COUNTER_SCHEMA)), {})
    events = _doc(export_chrome_trace(Run.open(tmp_path / "r"), tmp_path / "t.json"))["traceEvents"]
    kernel_pid = {e["args"]["accelscope_rank"]: e["pid"] for e in events if e["ph"] == "X"}
    counter_pid = {e["args"]["gpu_util_percent"]: e["pid"] for e in events if e["ph"] == "C"}
    assert counter_pid == {10.0: kernel_pid[0], 90.0: kernel_pid[1]} and kernel_pid[0] != kernel_pid[1]
    processes = {e["pid"]: e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "process_name"}
    assert processes == {kernel_pid[0]: "CUDA:0 (rank 0)", kernel_pid[1]: "CUDA:0 (rank 1)"}
