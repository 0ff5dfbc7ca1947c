"""Every form of Chrome trace JSON imports: the object form with ``traceEvents`` anywhere
among its keys, the bare array form (with or without its closing ``]``), and the legacy
autograd profiler's ``export_chrome_trace()`` output."""

import gzip
import json
import subprocess
import sys

import pytest

from accelscope.traces import schema as S
from accelscope.traces.chrome_json import NotATraceError
from accelscope.traces.formats import Source, by_name
from accelscope.traces.kineto import TraceFormatError, read_kineto

NW0 = "traces/kineto/tb_plugin/samples/resnet50_num_workers_0/worker0.1623143089861.pt.trace.json.gz"
HTA = "traces/HolisticTraceAnalysis/tests/data"
SAMPLED = f"{HTA}/trace_filter/sampled_rank-0.json.gz"
SMALL = f"{HTA}/critical_path/cuda_event_sync/event_sync_trace.json.gz"


def _doc(path):
    return json.loads(gzip.decompress(path.read_bytes()))


def _write_array(path, events, ending=b"\n]\n"):
    """The array form as Kineto wrote it in late 2020: one element per line."""
    path.write_bytes(b"[\n" + b",\n".join(json.dumps(e).encode() for e in events) + ending)
    return path


def test_bare_array_of_a_real_trace_gives_the_same_events_as_its_object_form(shared_dir, tmp_path):
    events = _doc(shared_dir / NW0)["traceEvents"]
    obj = tmp_path / "obj.json"
    obj.write_text(json.dumps({"traceEvents": events}))
    arr = read_kineto(_write_array(tmp_path / "arr.json", events))
    assert arr.json_form == "array" and arr.events.num_rows == 44_665
    assert arr.events.equals(read_kineto(obj).events)
    assert arr.threads == read_kineto(obj).threads


def test_bare_array_streamed_in_small_chunks_gives_the_same_events(shared_dir, tmp_path):
    path = _write_array(tmp_path / "arr.json", _doc(shared_dir / SAMPLED)["traceEvents"])
    whole = read_kineto(path, stream=False)
    pieces = read_kineto(path, stream=True, chunk_bytes=7777)
    assert pieces.json_form == "array" and pieces.events.equals(whole.events)


@pytest.mark.parametrize("ending", [b"", b",", b",\n", b"\n  "])
@pytest.mark.parametrize("stream", [False, True])
def test_array_missing_its_closing_bracket_after_a_complete_element_imports(shared_dir, tmp_path, ending, stream):
    events = _doc(shared_dir / SMALL)["traceEvents"]
    full = read_kineto(_write_array(tmp_path / "full.json", events), stream=stream)
    cut = read_kineto(_write_array(tmp_path / "cut.json", events, ending=ending), stream=stream, chunk_bytes=1000)
    assert cut.json_form == "array (no closing ']')"
    assert cut.events.equals(full.events)


@pytest.mark.parametrize("stream", [False, True])
def test_array_cut_inside_an_element_is_one_line_naming_the_file(shared_dir, tmp_path, stream):
    path = _write_array(tmp_path / "killed.json", _doc(shared_dir / SMALL)["traceEvents"], ending=b"")
    path.write_bytes(path.read_bytes()[:-25])
    with pytest.raises(TraceFormatError) as info:
        read_kineto(path, stream=stream, chunk_bytes=1000)
    message = str(info.value)
    assert "killed.json" in message and "truncated JSON inside an event" in message and "\n" not in message


@pytest.mark.parametrize("stream", [False, True])
def test_text_after_the_array_is_an_error(tmp_path, stream):
    path = tmp_path / "extra.json"
    path.write_bytes(b'[{"ph": "X", "name": "a", "ts": 1, "dur": 1}] {"x": 1}')
    with pytest.raises(TraceFormatError, match="extra.json: invalid JSON after the event array"):
        read_kineto(path, stream=stream)


@pytest.mark.parametrize("content", [b"[]", b"  [1, 2, 3]\n", b'["a", null]'])
def test_an_array_without_event_objects_is_not_a_trace(tmp_path, content):
    path = tmp_path / "list.json"
    path.write_bytes(content)
    with pytest.raises(NotATraceError, match="list.json: a JSON array without trace event objects"):
        read_kineto(path)


def test_legacy_autograd_export_imports_as_host_ops(tmp_path):
    torch = pytest.importorskip("torch")
    from torch.autograd.profiler_legacy import profile

    x = torch.randn(32, 32, requires_grad=True)
    with profile() as prof:
        for i in range(3):
            with torch.autograd.profiler.record_function(f"ProfilerStep#{i}"):
                (x @ x).relu().sum().backward()
    path = tmp_path / "legacy.json"
    prof.function_events.export_chrome_trace(str(path))
    assert path.read_bytes().startswith(b'[{"name": "ProfilerStep#0", "ph": "X"'), "the legacy export, a bare array"
    raw = json.loads(path.read_text())
    t = read_kineto(path)
    assert t.legacy_autograd and t.json_form == "array"
    ev = t.events
    assert ev.num_rows == len(raw)
    assert sorted(set(ev.column("kind").to_pylist())) == [S.CPU_OP, S.STEP]
    assert ev.column("name").to_pylist().count("aten::mm") == sum(e["name"] == "aten::mm" for e in raw)
    assert set(ev.column("device").to_pylist()) == {"cpu"} and set(ev.column("pid").to_pylist()) == {0}
    assert ev.column("start_ns").to_pylist()[0] == round(raw[0]["ts"] * 1000), "relative float µs, exact to the ns"


def test_legacy_autograd_export_is_on_a_relative_clock(tmp_path):
    path = tmp_path / "legacy.json"
    path.write_bytes(b'[{"name": "aten::add", "ph": "X", "ts": 12.5, "dur": 3.25, "tid": 1, "pid": "CPU functions", "args": {}}]')
    meta = by_name("kineto").read(Source(path, "kineto"), None).meta
    assert meta["clock"]["name"] == "relative_ns" and meta["json_form"] == "array"


def test_legacy_cuda_functions_kernels_land_on_their_device(tmp_path):
    # What torch <= 1.7's export_chrome_trace wrote for a kernel: no cat, pid "CUDA functions", tid the device.
    path = tmp_path / "legacy17.json"
    path.write_bytes(
        b'[{"name": "aten::mm", "ph": "X", "ts": 10.0, "dur": 5.0, "tid": 7, "pid": "CPU functions", "args": {}}, '
        b'{"name": "aten::mm", "ph": "s", "ts": 10.0, "tid": 7, "pid": "CPU functions", "id": 0, "cat": "cpu_to_cuda", "args": {}}, '
        b'{"name": "aten::mm", "ph": "f", "ts": 12.0, "tid": 1, "pid": "CUDA functions", "id": 0, "cat": "cpu_to_cuda", "args": {}}, '
        b'{"name": "volta_sgemm", "ph": "X", "ts": 12.0, "dur": 4.0, "tid": 1, "pid": "CUDA functions", "args": {}}]'
    )
    ev = read_kineto(path).events.to_pylist()
    assert [(e["kind"], e["device"], e["stream"]) for e in ev] == [(S.CPU_OP, "cpu", None), (S.KERNEL, "cuda:1", 0)]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("where", ["first", "last"])
def test_trace_events_may_come_anywhere_among_the_keys(shared_dir, tmp_path, where, stream):
    doc = _doc(shared_dir / SMALL)
    header = {k: v for k, v in doc.items() if k != "traceEvents"}
    moved = {"traceEvents": doc["traceEvents"], **header} if where == "first" else {**header, "traceEvents": doc["traceEvents"]}
    path, reference = tmp_path / "moved.json", tmp_path / "as-recorded.json"
    path.write_text(json.dumps(moved))
    reference.write_text(json.dumps(doc))  # args are kept as JSON text: same serialiser
    assert list(doc).index("traceEvents") not in (0, len(doc) - 1), "recorded with traceEvents in the middle"
    t = read_kineto(path, stream=stream, chunk_bytes=4096)
    assert t.header == header and t.rank == header["distributedInfo"]["rank"]
    assert t.events.equals(read_kineto(reference).events)


def test_display_time_unit_does_not_scale_timestamps(tmp_path):
    # Chrome trace format: JSON timestamps are always µs; displayTimeUnit only sets how viewers show them.
    path = tmp_path / "ns.json"
    path.write_text(json.dumps({"displayTimeUnit": "ns", "traceEvents": [{"ph": "X", "cat": "cpu_op", "name": "a", "ts": 5, "dur": 2, "pid": 1, "tid": 1}]}))
    t = read_kineto(path)
    assert t.events.column("start_ns").to_pylist() == [5000] and t.events.column("dur_ns").to_pylist() == [2000]


@pytest.mark.parametrize("content", [b'[[}', b'{"traceEvents": [[}]}', b'[["a"}, {"ph": "X"}]'])
@pytest.mark.parametrize("stream", [False, True])
def test_a_brace_closing_a_bracket_is_one_line(tmp_path, content, stream):
    # Found by the fuzz test: a mutated trace whose first "{" became "[".
    path = tmp_path / "mismatch.json"
    path.write_bytes(content)
    with pytest.raises(TraceFormatError, match="mismatch.json: "):
        read_kineto(path, stream=stream)


@pytest.mark.parametrize("ending", [b"\n]\n", b",\n"])
@pytest.mark.parametrize("stream", [False, True])
def test_gzipped_array_form_gives_the_same_events_as_plain(shared_dir, tmp_path, ending, stream):
    plain = _write_array(tmp_path / "arr.json", _doc(shared_dir / SMALL)["traceEvents"], ending=ending)
    packed = tmp_path / "arr.json.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    got = read_kineto(packed, stream=stream, chunk_bytes=4096)
    assert got.json_form == read_kineto(plain).json_form == ("array" if b"]" in ending else "array (no closing ']')")
    assert got.events.equals(read_kineto(plain).events)


@pytest.mark.parametrize(
    "content",
    [b'[{"ph": "X", "name": "a", "ts": 1, "dur": 1}, 5]', b'[7, {"ph": "X", "name": "a", "ts": 1, "dur": 1}]',
     b'{"traceEvents": [{"ph": "X", "name": "a", "ts": 1, "dur": 1}, "x"]}', b'[{"ph": "X", "name": "a", "ts": 1, "dur": 1}, [1]]'],
)
@pytest.mark.parametrize("stream", [False, True])
def test_an_event_that_is_not_an_object_is_one_line_in_either_form(tmp_path, content, stream):
    path = tmp_path / "scalar.json"
    path.write_bytes(content)
    with pytest.raises(TraceFormatError, match=r"^\S*scalar.json: invalid trace event \(.*(object|array)") as info:
        read_kineto(path, stream=stream, chunk_bytes=16)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("content, what", [(b"42", "a number"), (b' "trace"', "a string"), (b"null", "null"), (b"true", "a boolean")])
@pytest.mark.parametrize("stream", [False, True])
def test_json_in_neither_form_is_not_a_trace(tmp_path, content, what, stream):
    path = tmp_path / "scalar.json"
    path.write_bytes(content)
    with pytest.raises(NotATraceError, match=f"scalar.json: not a Kineto trace: the top level is {what}, neither an object with traceEvents nor an array of events"):
        read_kineto(path, stream=stream)


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "accelscope", *args], capture_output=True, text=True, timeout=300, cwd=cwd)


def _write_bytes(path, data):
    path.write_bytes(data)
    return path


def _cut_inside_an_element(shared, tmp):
    path = _write_array(tmp / "killed.json", _doc(shared / SMALL)["traceEvents"], ending=b"")
    path.write_bytes(path.read_bytes()[:-25])
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (_cut_inside_an_element, "truncated JSON inside an event"),
        (lambda s, t: _write_array(t / "junk.json", [{"ph": "X", "name": "a", "ts": 1, "dur": 1}], ending=b", 5]"), "not an object"),
        (lambda s, t: _write_array(t / "after.json", [{"ph": "X", "name": "a", "ts": 1, "dur": 1}], ending=b"] []"), "invalid JSON after the event array"),
        (lambda s, t: _write_array(t / "numbers.json", [], ending=b"1, 2]"), "without trace event objects"),
        (lambda s, t: _write_bytes(t / "number.json", b"3"), "neither an object with traceEvents nor an array"),
    ],
)
def test_cli_import_of_a_bad_array_is_one_line_exit_2_and_leaves_nothing(shared_dir, tmp_path, make, message):
    path = make(shared_dir, tmp_path)
    proc = _cli("import", str(path), "-o", "r", cwd=tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert message in lines[0] and path.name in lines[0], lines
    assert not (tmp_path / "r").exists() and not list(tmp_path.glob("*.accelscope"))


def test_cli_imports_an_array_killed_after_a_complete_element(shared_dir, tmp_path):
    events = _doc(shared_dir / SMALL)["traceEvents"]
    path = _write_array(tmp_path / "killed.json", events, ending=b",\n")
    proc = _cli("import", str(path), "-o", "r", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "r" / "meta.json").read_text())["json_form"] == "array (no closing ']')"
    slices = sum(e.get("ph") == "X" and e.get("cat") != "Trace" for e in events)
    assert f"imported {slices} events" in proc.stdout
