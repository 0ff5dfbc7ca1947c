"""The streaming scanner's guessed cuts (traces/chrome_json.py): inside the object form's
event array a batch ends at the last "}, {" of a chunk, found without scanning it; a guess
that lands inside a string or between nested objects must be caught and scanned again, so
the events are always those of one whole-document decode."""

import gzip
import json

import msgspec
import pytest

from accelscope.traces.chrome_json import Scanner, gzip_size
from accelscope.traces.kineto import read_kineto

NW0 = "traces/kineto/tb_plugin/samples/resnet50_num_workers_0/worker0.1623143089861.pt.trace.json.gz"
SMALL = "traces/HolisticTraceAnalysis/tests/data/critical_path/cuda_event_sync/event_sync_trace.json.gz"


@pytest.fixture
def rescans(monkeypatch):
    """How many times a guessed cut was wrong and its bytes were scanned again."""
    calls = []
    original = Scanner.rescan

    def counted(self):
        calls.append(1)
        return original(self)

    monkeypatch.setattr(Scanner, "rescan", counted)
    return calls


def _with_args(shared_dir, tmp_path, extra):
    doc = json.loads(gzip.decompress((shared_dir / SMALL).read_bytes()))
    for e in doc["traceEvents"]:
        e.setdefault("args", {}).update(extra)
    path = tmp_path / "t.json"
    path.write_text(json.dumps(doc))
    return path


def test_a_boundary_inside_a_string_is_scanned_again(shared_dir, tmp_path, rescans):
    path = _with_args(shared_dir, tmp_path, {"note": 'x}, {"ph": "X"}, {' * 40})
    streamed = read_kineto(path, stream=True, chunk_bytes=4096)
    assert rescans  # the guesses landed in the strings, and were caught
    assert streamed.events.equals(read_kineto(path, stream=False).events)


def test_a_boundary_between_nested_objects_is_scanned_again(shared_dir, tmp_path, rescans):
    path = _with_args(shared_dir, tmp_path, {"inputs": [{"shape": [i, 3]} for i in range(60)]})
    streamed = read_kineto(path, stream=True, chunk_bytes=4096)
    assert rescans
    assert streamed.events.equals(read_kineto(path, stream=False).events)


def test_a_real_trace_streams_on_guessed_cuts_alone(shared_dir, rescans):
    path = shared_dir / NW0
    streamed = read_kineto(path, stream=True, chunk_bytes=7777)
    assert not rescans
    assert streamed.events.equals(read_kineto(path, stream=False).events)


def test_a_wrong_guess_gives_a_batch_the_decoder_refuses_and_a_rescan_the_right_one(tmp_path):
    events = [{"ph": "X", "name": "a", "ts": 1, "dur": 1}, {"ph": "X", "name": 'b}, {"c', "ts": 2, "dur": 1}]
    text = json.dumps({"traceEvents": events}).encode()
    cut_inside = text.index(b'{\\"c') + 4  # the chunk ends inside the second event's name, after its "}, {"
    scanner = Scanner(tmp_path / "t.json")
    start = text.index(b"[") + 1
    assert scanner.feed(text[:start]) is None and scanner.state == "in"  # the event array found, nothing complete yet
    guessed = scanner.feed(text[start:cut_inside])
    assert scanner.last_fast
    with pytest.raises(msgspec.DecodeError):
        msgspec.json.decode(guessed)
    assert json.loads(scanner.rescan()) == events[:1]
    assert not scanner.fast
    assert json.loads(scanner.feed(text[cut_inside:])) == events[1:]  # scanned: the closing bracket is seen
    assert scanner.flush() is None and scanner.state == "after"
    assert scanner.header() == {}


def test_gzip_size_reads_the_trailer_and_leaves_plain_files_alone(tmp_path):
    gz, plain = tmp_path / "t.json.gz", tmp_path / "t.json"
    gz.write_bytes(gzip.compress(b"[]" * 5000))
    plain.write_bytes(b"[]")
    assert (gzip_size(gz), gzip_size(plain)) == (10_000, None)
