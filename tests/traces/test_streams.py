"""Device lanes named for what they are: meta["streams"] from XPlane device lines and from
Kineto thread names, Run.stream_names(), merged across ranks, kept through a Chrome export."""

from __future__ import annotations

import gzip
import json
import shutil

from accelscope.traces.chrome import export_chrome_trace
from accelscope.traces.importer import import_traces
from accelscope.traces.run import Run

TPU = "xplane/xprof_8c188e1a__tpu_inference_2.xplane.pb"
NW0 = "traces/kineto/tb_plugin/samples/resnet50_num_workers_0/worker0.1623143089861.pt.trace.json.gz"
HTA = "traces/HolisticTraceAnalysis/tests/data"


def _kineto(path, lanes: dict[int, str], rank: int | None = None) -> None:
    """A small Kineto trace: one kernel on each GPU stream of ``lanes`` (tid -> thread name)."""
    events = [{"ph": "X", "cat": "cpu_op", "name": "aten::mm", "pid": 10, "tid": 11, "ts": 0, "dur": 100}]
    events += [{"ph": "M", "name": "thread_name", "pid": 10, "tid": 11, "args": {"name": "python main"}}]
    for i, (tid, name) in enumerate(lanes.items()):
        events.append({"ph": "X", "cat": "kernel", "name": f"k{i}", "pid": 0, "tid": tid, "ts": 10 + i, "dur": 5, "args": {"device": 0, "stream": tid}})
        events.append({"ph": "M", "name": "thread_name", "pid": 0, "tid": tid, "args": {"name": name}})
    doc = {"traceEvents": events, "baseTimeNanoseconds": 1_700_000_000_000_000_000}
    if rank is not None:
        doc["distributedInfo"] = {"rank": rank}
    path.write_bytes(gzip.compress(json.dumps(doc).encode()))


def test_a_tpu_xplane_names_every_device_lane_after_its_line(shared_dir, tmp_path):
    run = Run.open(import_traces([shared_dir / TPU], tmp_path / "r", progress=False))
    names = run.stream_names()
    assert {n for (_, d, _), n in names.items() if d == "tpu:0"} == {"XLA Modules", "XLA Ops", "Async XLA Ops", "XLA TraceMe"}
    assert all(st["rank"] == 0 for st in run.meta["streams"])


def test_kineto_device_thread_names_that_say_more_than_the_stream_number_are_kept(tmp_path):
    f = tmp_path / "t.pt.trace.json.gz"
    _kineto(f, {7: "stream 7 ", 20: "compute (high priority)"})
    run = Run.open(import_traces([f], tmp_path / "r", progress=False))
    assert run.stream_names() == {(0, "cuda:0", 20): "compute (high priority)"}
    assert {(t["pid"], t["tid"]) for t in run.meta["threads"]} == {(10, 11), (0, 7), (0, 20)}, "thread names unchanged"


def test_a_real_kineto_trace_names_no_stream_beyond_its_number(shared_dir, tmp_path):
    run = Run.open(import_traces([shared_dir / NW0], tmp_path / "r", progress=False))
    assert "streams" not in run.meta and run.stream_names() == {}
    mtia = Run.open(import_traces([shared_dir / HTA / "mtia_inference_trace/mtia_inference_rank_0.json.gz"], tmp_path / "m", progress=False))
    assert mtia.stream_names() == {}, "MTIA's 'Stream 101' is its number too"


def test_kineto_names_its_device_wide_sync_lane(shared_dir, tmp_path):
    run = Run.open(import_traces([shared_dir / HTA / "critical_path/end_to_end/simple_add/input/trace.json.gz"], tmp_path / "r", progress=False))
    assert run.stream_names() == {(0, "cuda:0", 4294967295): "Device 0"}
    lane = run.events.filter((run.events["device"] == "cuda:0") & (run.events["stream"] == 4294967295))
    assert set(lane["name"]) == {"Context Sync"}


def test_stream_names_merge_across_ranks(tmp_path):
    d = tmp_path / "job"
    d.mkdir()
    _kineto(d / "a.json.gz", {7: "copy engine"}, rank=0)
    _kineto(d / "b.json.gz", {9: "nccl"}, rank=1)
    run = Run.open(import_traces([d], tmp_path / "r", progress=False))
    assert run.stream_names() == {(0, "cuda:0", 7): "copy engine", (1, "cuda:0", 9): "nccl"}


def test_files_numbered_in_name_order_renumber_their_streams_too(tmp_path):
    d = tmp_path / "job"
    d.mkdir()
    _kineto(d / "a.json.gz", {7: "copy engine"})
    _kineto(d / "b.json.gz", {9: "nccl"})
    run = Run.open(import_traces([d], tmp_path / "r", progress=False))
    assert run.stream_names() == {(0, "cuda:0", 7): "copy engine", (1, "cuda:0", 9): "nccl"}


def test_a_chrome_export_carries_the_names_and_a_reimport_keeps_them(shared_dir, tmp_path):
    src = tmp_path / "tpu.xplane.pb"
    shutil.copy(shared_dir / TPU, src)
    run = Run.open(import_traces([src], tmp_path / "r", progress=False))
    exported = export_chrome_trace(run, tmp_path / "tpu.json.gz")
    doc = json.loads(gzip.decompress(exported.read_bytes()))
    lanes = {e["args"]["name"] for e in doc["traceEvents"] if e["ph"] == "M" and e["name"] == "thread_name" and e["pid"] == 0}
    assert {"XLA Ops", "XLA Modules"} <= lanes, "Perfetto shows the lines' names"
    again = Run.open(import_traces([exported], tmp_path / "again", progress=False))
    assert again.stream_names() == run.stream_names()
