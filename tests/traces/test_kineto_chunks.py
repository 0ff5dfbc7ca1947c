"""One large Kineto JSON file decoded by several processes, a byte range each
(traces/kineto_chunks.py): the same trace as a serial read, or a serial read where the
ranges cannot be trusted. The size thresholds are lowered so that a real 34 MiB trace splits."""

import gzip
import json
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool

import pytest

from accelscope.traces import kineto_chunks
from accelscope.traces.importer import import_traces
from accelscope.traces.kineto import TraceFormatError, read_kineto
from accelscope.traces.run import Run

NW0 = "traces/kineto/tb_plugin/samples/resnet50_num_workers_0/worker0.1623143089861.pt.trace.json.gz"
SMALL = "traces/HolisticTraceAnalysis/tests/data/critical_path/cuda_event_sync/event_sync_trace.json.gz"


@pytest.fixture
def ranged(monkeypatch):
    """Split files from 1 MiB up; records whether each read was done in ranges."""
    monkeypatch.setattr(kineto_chunks, "HEAD_START_BYTES", 1 << 19)
    monkeypatch.setattr(kineto_chunks, "MIN_BYTES", 1 << 20)
    used = []
    original = kineto_chunks.read_in_ranges

    def spied(*args, **kwargs):
        got = original(*args, **kwargs)
        used.append(got is not None)
        return got

    monkeypatch.setattr(kineto_chunks, "read_in_ranges", spied)
    return used


def _same(a, b):
    assert a.events.equals(b.events)
    assert a.header == b.header and a.threads == b.threads and a.processes == b.processes
    assert a.rank == b.rank and a.rank_source == b.rank_source


@pytest.fixture(scope="module")
def nw0_json(shared_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("nw0") / "nw0.json"
    path.write_bytes(gzip.decompress((shared_dir / NW0).read_bytes()))
    return path


@pytest.mark.parametrize("workers", [2, 3])
def test_a_real_trace_read_in_ranges_is_the_serial_read(nw0_json, ranged, workers):
    _same(read_kineto(nw0_json, workers=workers), read_kineto(nw0_json))
    assert ranged == [True]


def test_progress_rises_while_the_ranges_are_read_and_ends_at_the_file_size(nw0_json, ranged):
    seen = []
    read_kineto(nw0_json, workers=2, on_bytes=seen.append)
    size = nw0_json.stat().st_size
    assert ranged == [True] and len(seen) > 2 and seen == sorted(seen) and seen[-1] == size
    assert 0 < seen[0] < size  # not only one jump at the end


def _padded(shared_dir, tmp_path, extra, copies=60):
    """The small real trace, its events repeated until the file is over 1 MiB, with ``extra`` args."""
    doc = json.loads(gzip.decompress((shared_dir / SMALL).read_bytes()))
    events = []
    for i in range(copies):
        for e in doc["traceEvents"]:
            events.append(dict(e, ts=e["ts"] + i * 10**6, args={**e.get("args", {}), **extra}) if "ts" in e else e)
    path = tmp_path / "t.json"
    path.write_text(json.dumps(dict(doc, traceEvents=events)))
    assert path.stat().st_size > 1 << 20
    return path


def test_a_cut_inside_a_string_falls_back_to_the_serial_read(shared_dir, tmp_path, ranged):
    path = _padded(shared_dir, tmp_path, {"note": 'x}, {"ph": "X"}, {' * 200})
    _same(read_kineto(path, workers=2), read_kineto(path))
    assert ranged == [False]


def test_begin_end_pairs_fall_back_to_the_serial_read(tmp_path, ranged):
    events = [{"ph": ph, "name": f"span{i}", "pid": 1, "tid": 1, "ts": i * 10 + (5 if ph == "E" else 0), "args": {"pad": "x" * 200}}
              for i in range(6000) for ph in ("B", "E")]
    path = tmp_path / "spans.json"
    path.write_text(json.dumps({"traceEvents": events}))
    got = read_kineto(path, workers=2)
    _same(got, read_kineto(path))
    assert got.spans["paired"] == 6000 and ranged == [False]


def test_a_gzipped_file_is_decompressed_and_read_in_ranges(shared_dir, ranged):
    _same(read_kineto(shared_dir / NW0, workers=2), read_kineto(shared_dir / NW0))
    assert ranged == [True]


def test_a_corrupt_gzip_gives_the_serial_read_error(nw0_json, tmp_path, ranged):
    bad = tmp_path / "bad.json.gz"
    packed = bytearray(gzip.compress(nw0_json.read_bytes()))
    packed[len(packed) // 2 : len(packed) // 2 + 64] = bytes(64)
    bad.write_bytes(bytes(packed))
    with pytest.raises(TraceFormatError) as serial:
        read_kineto(bad)
    with pytest.raises(TraceFormatError) as ranges:
        read_kineto(bad, workers=2)
    assert str(ranges.value) == str(serial.value) and ranged == [False]


def test_a_truncated_file_gives_the_serial_read_error(nw0_json, tmp_path, ranged):
    cut = tmp_path / "cut.json"
    cut.write_bytes(nw0_json.read_bytes()[: 30 << 20])
    with pytest.raises(TraceFormatError) as serial:
        read_kineto(cut)
    with pytest.raises(TraceFormatError) as ranges:
        read_kineto(cut, workers=2)
    assert str(ranges.value) == str(serial.value) and "truncated" in str(serial.value)


def test_importing_one_file_with_workers_splits_it(nw0_json, tmp_path, ranged):
    one = Run.open(import_traces([nw0_json], tmp_path / "one", progress=False, workers=1))
    two = Run.open(import_traces([nw0_json], tmp_path / "two", progress=False, workers=2))
    assert ranged == [True]
    assert two.events.equals(one.events)


def test_a_worker_that_dies_leaves_the_file_to_the_serial_read(nw0_json, ranged, monkeypatch):
    class DeadPool:
        """A pool whose worker died (killed, out of memory): every task's future says so."""

        def __init__(self, *args, **kwargs):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def submit(self, *args, **kwargs):
            f = Future()
            f.set_exception(BrokenProcessPool("A process in the process pool was terminated abruptly"))
            return f

    monkeypatch.setattr(kineto_chunks, "ProcessPoolExecutor", DeadPool)
    _same(read_kineto(nw0_json, workers=2), read_kineto(nw0_json))
    assert ranged == [False]
