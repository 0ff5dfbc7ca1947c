"""Property tests: whatever bytes the importers get, the result is a valid run or one clean error."""

import gzip
import json
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accelscope.errors import AccelscopeError
from accelscope.traces.importer import import_traces
from accelscope.traces.kineto import read_kineto
from accelscope.traces.run import Run

HTA_SMALL = "traces/HolisticTraceAnalysis/tests/data/critical_path/cuda_event_sync/event_sync_trace.json.gz"
XPLANE_SMALL = "xplane/local_cpu_jax0102_steptrace.xplane.pb"

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False), st.text(max_size=12))
events = st.lists(
    st.fixed_dictionaries(
        {"ph": st.sampled_from(["X", "M", "i", "I", "s", "f", "B", "E", "b", "e", "n", "S", "T", "F", "C"]), "name": json_scalars},
        optional={"cat": st.sampled_from(["kernel", "cpu_op", "gpu_memcpy", "cuda_runtime", "user_annotation", "Kernel", "weird", "Trace"]),
                  "ts": json_scalars, "dur": json_scalars, "pid": json_scalars, "tid": json_scalars,
                  "id": json_scalars, "scope": json_scalars,
                  "id2": st.one_of(json_scalars, st.dictionaries(st.sampled_from(["local", "global", "x"]), json_scalars, max_size=2)),
                  "args": st.dictionaries(st.sampled_from(["device", "stream", "correlation", "name", "value", "x"]), json_scalars, max_size=3)},
    ),
    max_size=12,
)


def _check(path, tmp):
    """Import must either produce a complete, readable run or raise a one-line AccelscopeError."""
    out = tmp / f"out-{uuid.uuid4().hex}"
    try:
        run_dir = import_traces([path], out, progress=False)
    except AccelscopeError as exc:
        assert "\n" not in str(exc) and str(path.name) in str(exc)
        assert not out.exists()
        return
    run = Run.open(run_dir)
    assert run.meta["complete"] and run.events.height > 0
    assert (run.events["dur_ns"] >= 0).all()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=st.fixed_dictionaries({"traceEvents": events}, optional={"baseTimeNanoseconds": json_scalars, "distributedInfo": st.dictionaries(st.just("rank"), json_scalars)}))
def test_arbitrary_kineto_documents(tmp_path, doc):
    path = tmp_path / "gen.json"
    path.write_text(json.dumps(doc))
    _check(path, tmp_path)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(evs=events, ending=st.sampled_from(["]", "", ",", ",\n", "\n]\n", "] x"]))
def test_arbitrary_array_documents(tmp_path, evs, ending):
    """The bare array form (Chrome's JSON Array Format), closed or not."""
    path = tmp_path / "gen.json"
    path.write_text("[" + ",\n".join(json.dumps(e) for e in evs) + ending)
    _check(path, tmp_path)


def _array_parts(shared_dir) -> tuple[list[dict], bytes, list[int]]:
    """A real trace's events in the array form, one element per line, and where each element ends."""
    events = json.loads(gzip.decompress((shared_dir / HTA_SMALL).read_bytes()))["traceEvents"]
    text, ends = b"[\n", []
    for i, e in enumerate(events):
        text += (b",\n" if i else b"") + json.dumps(e).encode()
        ends.append(len(text))
    return events, text + b"\n]\n", ends


def _array_text(shared_dir) -> bytes:
    return _array_parts(shared_dir)[1]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_array_cut_anywhere_keeps_exactly_the_complete_elements_or_fails_cleanly(shared_dir, tmp_path, data):
    """A writer killed mid-run: cut after a complete element (the closing "]" missing) is
    read as exactly the elements before the cut; cut inside one is one clean error."""
    events, text, ends = _array_parts(shared_dir)
    cut = min(len(text), data.draw(st.one_of(st.integers(1, len(text)), st.sampled_from(ends).flatmap(lambda e: st.integers(e - 1, e + 3)))))
    k = sum(1 for e in ends if e <= cut)  # complete elements before the cut
    rest = text[ends[k - 1] : cut] if k else b"-"
    readable = k > 0 and rest.strip(b" \n,") in (b"", b"]") and not (b"," in rest and b"]" in rest)
    path = tmp_path / "cut.json"
    path.write_bytes(text[:cut])
    try:
        got = read_kineto(path, stream=data.draw(st.booleans()), chunk_bytes=data.draw(st.sampled_from([512, 4096, 1 << 20])))
    except AccelscopeError as exc:
        assert "\n" not in str(exc) and "cut.json" in str(exc)
        assert not readable or not any(e.get("ph") == "X" and e.get("cat") != "Trace" for e in events[:k]), f"refused a cut after element {k}: {exc}"
        return
    assert readable, f"imported a cut inside element {k + 1}: ...{text[cut - 30 : cut]!r}"
    ref = tmp_path / "ref.json"
    ref.write_text(json.dumps({"traceEvents": events[:k]}))
    assert got.events.equals(read_kineto(ref).events)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), array=st.booleans())
def test_mutated_real_kineto_trace(shared_dir, tmp_path, data, array):
    raw = bytearray(_array_text(shared_dir) if array else gzip.decompress((shared_dir / HTA_SMALL).read_bytes()))
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        i = data.draw(st.integers(0, len(raw) - 1))
        if op == "flip":
            raw[i] = data.draw(st.sampled_from(b'{}[]",:0-. \\x'))
        elif op == "cut":
            del raw[i:]
            if not raw:
                raw = bytearray(b"{")
        elif op == "insert":
            raw[i:i] = data.draw(st.binary(min_size=1, max_size=8))
        else:
            del raw[i : i + data.draw(st.integers(1, 64))]
        if not raw:
            raw = bytearray(b"{")
    path = tmp_path / "mut.json"
    path.write_bytes(bytes(raw))
    _check(path, tmp_path)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_real_xplane(shared_dir, tmp_path, data):
    raw = bytearray((shared_dir / XPLANE_SMALL).read_bytes())
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(raw) - 1))
        if data.draw(st.booleans()):
            raw[i] = data.draw(st.integers(0, 255))
        else:
            del raw[i:]
            if not raw:
                raw = bytearray(b"\x00")
    path = tmp_path / "mut.xplane.pb"
    path.write_bytes(bytes(raw))
    _check(path, tmp_path)


@pytest.mark.parametrize("data", [b"", b"\x1f\x8b", b"\x00\xff" * 10, "é".encode("latin-1"), b"null", b"{}"])
def test_tiny_garbage_files(tmp_path, data):
    path = tmp_path / "g.json"
    path.write_bytes(data)
    _check(path, tmp_path)
