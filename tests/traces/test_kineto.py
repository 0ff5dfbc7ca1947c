import gzip
import json

import numpy as np
import pytest

from accelscope.traces.kineto import TraceFormatError, read_kineto

NW0 = "traces/kineto/tb_plugin/samples/resnet50_num_workers_0/worker0.1623143089861.pt.trace.json.gz"
HTA = "traces/HolisticTraceAnalysis/tests/data"


def _reference_x_events(path):
    with gzip.open(path) if str(path).endswith(".gz") else open(path, "rb") as fh:
        doc = json.load(fh)
    return doc, [e for e in doc["traceEvents"] if e.get("ph") == "X" and e.get("cat") != "Trace"]


def test_real_v100_trace_converts_with_kinds_devices_and_streams(shared_dir):
    trace = read_kineto(shared_dir / NW0)
    ev = trace.events.to_pydict()
    assert {"kernel", "memcpy", "memset", "runtime", "cpu_op", "step"} <= set(ev["kind"])
    steps = sorted(n for n, k in zip(ev["name"], ev["kind"]) if k == "step")
    assert steps == sorted(f"ProfilerStep#{i}" for i in range(5, 11))
    assert {d for d, k in zip(ev["device"], ev["kind"]) if k == "kernel"} == {"cuda:0"}
    assert {s for s, k in zip(ev["stream"], ev["kind"]) if k == "kernel"} == {7}, "tid 'stream 7' -> stream 7"
    launches = {c for c, k in zip(ev["correlation_id"], ev["kind"]) if k == "runtime" and c}
    kernels = {c for c, k in zip(ev["correlation_id"], ev["kind"]) if k == "kernel"}
    assert len(kernels & launches) / len(kernels) > 0.99
    assert trace.rank == 0 and trace.rank_source == "default"
    assert trace.header["deviceProperties"][0]["name"].startswith("Tesla V100")
    assert trace.threads


def test_every_complete_event_is_kept_exactly(shared_dir):
    path = shared_dir / NW0
    doc, xs = _reference_x_events(path)
    ev = read_kineto(path).events
    assert ev.num_rows == len(xs)
    order = np.argsort(ev.column("start_ns").to_numpy(), kind="stable")
    got = sorted(zip(ev.column("start_ns").to_pylist(), ev.column("dur_ns").to_pylist(), ev.column("name").to_pylist()))
    want = sorted((e["ts"] * 1000, e["dur"] * 1000, e["name"]) for e in xs)
    assert got == want
    assert json.loads(ev.column("args")[int(order[0])].as_py()) is not None


def test_nanosecond_timestamps_survive_exactly(shared_dir):
    path = shared_dir / HTA / "ns_resolution_trace/rank-0.Apr_03_18_51_38.1102.pt.trace.json.gz"
    text = gzip.decompress(path.read_bytes()).decode()
    first_ts = text[text.index('"ts": ', text.index('"ph": "X"')) + 6 :].split(",")[0]
    ev = read_kineto(path).events
    whole, frac = first_ts.split(".")
    assert int(whole) * 1000 + int(frac.ljust(3, "0")[:3]) in set(ev.column("start_ns").to_pylist())


def test_relative_timestamps_use_base_time(shared_dir):
    path = shared_dir / HTA / "mtia_inference_trace/mtia_inference_rank_0.json.gz"
    trace = read_kineto(path)
    start = trace.events.column("start_ns").to_numpy()
    assert start.min() > 1_767_189_312_000_000_000, "baseTimeNanoseconds + ts"
    devices = set(trace.events.column("device").to_pylist())
    assert "mtia:17" in devices and not any(d.startswith("cuda") for d in devices)


@pytest.mark.parametrize(
    "rel, rank, source",
    [
        ("trace_filter/sampled_rank-1.json.gz", 1, "distributedInfo"),
        ("cpu_only/rank-34.Jul_15_10_52_41.1074.pt.trace.json.gz", 34, "distributedInfo"),
        ("rank_unavailable/rank_not_found.json.gz", 0, "default"),
        ("large_integer_trace/rank-70.Mar_25_20_48_12.2861.pt.trace.json.gz", 70, "file name"),
    ],
)
def test_rank_comes_from_distributed_info_then_file_name(shared_dir, rel, rank, source):
    trace = read_kineto(shared_dir / HTA / rel)
    assert (trace.rank, trace.rank_source) == (rank, source)
    assert set(trace.events.column("rank").to_pylist()) == {rank}


def test_cpu_only_rank_has_no_device_events(shared_dir):
    ev = read_kineto(shared_dir / HTA / "cpu_only/rank-34.Jul_15_10_52_41.1074.pt.trace.json.gz").events
    assert set(ev.column("device").to_pylist()) == {"cpu"}


@pytest.mark.parametrize("rel", ["trace_filter/sampled_rank-0.json.gz", "ns_resolution_trace/rank-0.Apr_03_18_51_38.1102.pt.trace.json.gz", "mtia_inference_trace/mtia_inference_rank_0.json.gz"])
def test_streaming_in_small_chunks_gives_the_same_result_as_one_decode(shared_dir, rel):
    path = shared_dir / HTA / rel
    whole = read_kineto(path, stream=False)
    pieces = read_kineto(path, stream=True, chunk_bytes=7777)
    assert pieces.events.equals(whole.events)
    assert pieces.header == whole.header and pieces.threads == whole.threads


def test_keep_steps_false_drops_profiler_steps(tmp_path):
    doc = {"traceEvents": [
        {"ph": "X", "cat": "user_annotation", "name": "ProfilerStep#3", "ts": 1.5, "dur": 2, "pid": 1, "tid": 1},
        {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "ts": 2, "dur": 1, "pid": 1, "tid": 1, "args": {"a": '}{"}'}},
    ], "baseTimeNanoseconds": 1_000_000}
    path = tmp_path / "t.json"
    path.write_text(json.dumps(doc))
    ev = read_kineto(path, keep_steps=False).events
    assert ev.column("name").to_pylist() == ["aten::mm"]
    assert ev.column("start_ns").to_pylist() == [1_000_000 + 2_000], "ts is µs after baseTimeNanoseconds"
    assert json.loads(ev.column("args")[0].as_py()) == {"a": '}{"}'}, "braces and escaped quotes inside strings"


@pytest.mark.parametrize(
    "content, message",
    [
        (b'{"traceEvents": [{"ph": "X", "ts": 1, "dur": 1}, {"ph": "X", "ts": 2', "truncated JSON"),
        (b'{"a": [1, 2]}', "no traceEvents array"),
        (b"[1, 2]", "without trace event objects"),
        (b'{"traceEvents": []}', "no complete"),
        (b'{"traceEvents": [{"ph": "X", "name": "a", "ts": 1, "dur": -5}]}', "negative duration"),
        (b'{"traceEvents": [{"ph": "X", "name": "a", "dur": 5}]}', "no timestamp"),
        (b'{"traceEvents": [{"ph": "X", "name": "a", "ts": "soon", "dur": 5}]}', "invalid trace event"),
        # Found by the fuzz test: timestamps whose ns do not fit an int64.
        (b'{"traceEvents": [{"ph": "X", "name": "a", "ts": 9223372036854776.0, "dur": 5}]}', "timestamp out of range"),
        (b'{"traceEvents": [{"ph": "X", "name": "a", "ts": 92233720368547760, "dur": 5}]}', "timestamp out of range"),
        (b'{"traceEvents": [{"ph": "X", "name": "a", "ts": 1, "dur": 1e30}]}', "duration out of range"),
        (b'{"traceEvents": [{"ph": "X", "name": "a", "ts": -9223372036854775808, "dur": 5}]}', "timestamp out of range"),
        (b'{"traceEvents": [{"ph": "X", "name": "a", "ts": 1, "dur": 9223372036854775}]}', "duration out of range"),
        (b'{"baseTimeNanoseconds": 1180591620717411303424, "traceEvents": [{"ph": "X", "name": "a", "ts": 1, "dur": 1}]}', "baseTimeNanoseconds out of range"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_bad_traces_fail_with_one_line_naming_the_file(tmp_path, content, message, stream):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(TraceFormatError) as info:
        read_kineto(path, stream=stream)
    assert message in str(info.value) and "bad.json" in str(info.value) and "\n" not in str(info.value)


def test_truncated_gzip_is_a_clean_error(shared_dir, tmp_path):
    data = (shared_dir / NW0).read_bytes()
    path = tmp_path / "cut.json.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(TraceFormatError, match="cut.json.gz: truncated"):
        read_kineto(path)
