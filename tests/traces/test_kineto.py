import json

import pytest

from accelscope.traces import kineto

NW0 = "traces/kineto/tb_plugin/samples/resnet50_num_workers_0/worker0.1623143089861.pt.trace.json.gz"


def test_real_v100_trace_converts_with_kinds_devices_and_streams(shared_dir):
    doc = kineto.load_json(shared_dir / NW0)
    table, threads = kineto.to_events(doc)
    ev = table.to_pydict()
    kinds = set(ev["kind"])
    assert {"kernel", "memcpy", "runtime", "cpu_op", "step"} <= kinds
    steps = sorted(n for n, k in zip(ev["name"], ev["kind"]) if k == "step")
    assert steps == sorted(f"ProfilerStep#{i}" for i in range(5, 11))
    kernel_devices = {d for d, k in zip(ev["device"], ev["kind"]) if k == "kernel"}
    assert kernel_devices == {"cuda:0"}
    assert all(s is not None for s, k in zip(ev["stream"], ev["kind"]) if k == "kernel")
    # Launches link to kernels by correlation id.
    launches = {c for c, k in zip(ev["correlation_id"], ev["kind"]) if k == "runtime" and c}
    kernels = {c for c, k in zip(ev["correlation_id"], ev["kind"]) if k == "kernel"}
    assert len(kernels & launches) / len(kernels) > 0.99
    assert all(d >= 0 for d in ev["dur_ns"])
    assert threads


def test_keep_steps_false_drops_profiler_steps():
    doc = {"traceEvents": [
        {"ph": "X", "cat": "user_annotation", "name": "ProfilerStep#3", "ts": 1.5, "dur": 2, "pid": 1, "tid": 1},
        {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "ts": 2, "dur": 1, "pid": 1, "tid": 1},
    ], "baseTimeNanoseconds": 1_000_000}
    table, _ = kineto.to_events(doc, keep_steps=False)
    assert table.column("name").to_pylist() == ["aten::mm"]
    assert table.column("start_ns").to_pylist() == [1_000_000 + 2_000], "ts is µs after baseTimeNanoseconds"


@pytest.mark.parametrize("content, message", [(b"{", "not a readable trace"), (b"[1, 2]", "not a Kineto trace"), (b'{"a": 1}', "not a Kineto trace")])
def test_load_json_errors_name_the_file(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(Exception) as info:
        kineto.load_json(path)
    assert message in str(info.value) and "bad.json" in str(info.value)
