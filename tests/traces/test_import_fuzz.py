"""Property tests: whatever bytes the importers get, the result is a valid run or one clean error."""

import gzip
import json
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accelscope.errors import AccelscopeError
from accelscope.traces.importer import import_traces
from accelscope.traces.run import Run

HTA_SMALL = "traces/HolisticTraceAnalysis/tests/data/critical_path/cuda_event_sync/event_sync_trace.json.gz"
XPLANE_SMALL = "xplane/local_cpu_jax0102_steptrace.xplane.pb"

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False), st.text(max_size=12))
events = st.lists(
    st.fixed_dictionaries(
        {"ph": st.sampled_from(["X", "M", "i", "s", "f", "B"]), "name": json_scalars},
        optional={"cat": st.sampled_from(["kernel", "cpu_op", "gpu_memcpy", "cuda_runtime", "user_annotation", "Kernel", "weird", "Trace"]),
                  "ts": json_scalars, "dur": json_scalars, "pid": json_scalars, "tid": json_scalars,
                  "args": st.dictionaries(st.sampled_from(["device", "stream", "correlation", "name", "x"]), json_scalars, max_size=3)},
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
@given(data=st.data())
def test_mutated_real_kineto_trace(shared_dir, tmp_path, data):
    raw = bytearray(gzip.decompress((shared_dir / HTA_SMALL).read_bytes()))
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
