"""Generic Chrome traces (tools other than Kineto): begin/end pairs become host annotation
slices, counter events counter samples; instants are skipped."""

import json

import pytest

from accelscope.traces import schema as S
from accelscope.traces.formats import Source, by_name
from accelscope.traces.kineto import read_kineto


def _events(tmp_path, events, stream=False, array=False):
    path = tmp_path / "generic.json"
    path.write_text(json.dumps(events if array else {"traceEvents": events}))
    t = read_kineto(path, stream=stream, chunk_bytes=64)
    return t, sorted(t.events.select(["name", "kind", "device", "start_ns", "dur_ns", "pid", "tid"]).to_pylist(), key=lambda r: (r["start_ns"], r["name"]))


@pytest.mark.parametrize("stream", [False, True])
def test_begin_end_pairs_nest_per_thread(tmp_path, stream):
    _, rows = _events(tmp_path, [
        {"ph": "B", "name": "outer", "pid": 1, "tid": 1, "ts": 10},
        {"ph": "B", "name": "inner", "pid": 1, "tid": 1, "ts": 12.5},
        {"ph": "E", "pid": 1, "tid": 1, "ts": 14},
        {"ph": "E", "pid": 1, "tid": 1, "ts": 20},
    ], stream=stream)
    assert [(r["name"], r["start_ns"], r["dur_ns"]) for r in rows] == [("outer", 10_000, 10_000), ("inner", 12_500, 1_500)]
    assert {(r["kind"], r["device"]) for r in rows} == {(S.ANNOTATION, "cpu")}


def test_an_end_closes_the_latest_begin_of_its_own_thread(tmp_path):
    _, rows = _events(tmp_path, [
        {"ph": "B", "name": "a", "pid": 1, "tid": 1, "ts": 0},
        {"ph": "B", "name": "b", "pid": 1, "tid": 2, "ts": 1},
        {"ph": "E", "pid": 1, "tid": 1, "ts": 5},
        {"ph": "E", "pid": 1, "tid": 2, "ts": 3},
    ], array=True)
    assert [(r["name"], r["tid"], r["dur_ns"]) for r in rows] == [("a", 1, 5_000), ("b", 2, 2_000)]


def test_async_pairs_match_by_category_and_id_not_thread(tmp_path):
    _, rows = _events(tmp_path, [
        {"ph": "b", "cat": "net", "id": "0x1", "name": "fetch", "pid": 1, "tid": 1, "ts": 0},
        {"ph": "b", "cat": "net", "id2": {"local": "0x2"}, "name": "upload", "pid": 1, "tid": 1, "ts": 1},
        {"ph": "b", "cat": "disk", "id": "0x1", "name": "read", "pid": 1, "tid": 1, "ts": 2},
        {"ph": "e", "cat": "net", "id": "0x1", "name": "fetch", "pid": 1, "tid": 9, "ts": 7},
        {"ph": "e", "cat": "disk", "id": "0x1", "name": "read", "pid": 1, "tid": 9, "ts": 4},
        {"ph": "e", "cat": "net", "id2": {"local": "0x2"}, "name": "upload", "pid": 1, "tid": 9, "ts": 6},
    ])
    assert [(r["name"], r["tid"], r["dur_ns"]) for r in rows] == [("fetch", 1, 7_000), ("upload", 1, 5_000), ("read", 1, 2_000)]


def test_pairs_split_across_chunks_match_the_whole_document(tmp_path):
    events = [e for i in range(200) for e in (
        {"ph": "B", "name": f"op{i}", "pid": 1, "tid": 1, "ts": 10 * i, "args": {"i": i}},
        {"ph": "X", "cat": "cpu_op", "name": "aten::add", "pid": 1, "tid": 1, "ts": 10 * i + 1, "dur": 2},
        {"ph": "E", "pid": 1, "tid": 1, "ts": 10 * i + 5},
    )]
    whole, _ = _events(tmp_path, events, stream=False)
    pieces, _ = _events(tmp_path, events, stream=True)
    assert whole.events.num_rows == 400 and pieces.spans == whole.spans == {"paired": 200, "dropped": 0}
    assert pieces.events.sort_by("start_ns").equals(whole.events.sort_by("start_ns"))


def test_unmatched_ends_unclosed_begins_and_instants_give_no_slices(tmp_path):
    t, rows = _events(tmp_path, [
        {"ph": "E", "pid": 1, "tid": 1, "ts": 1},
        {"ph": "B", "name": "kept", "pid": 1, "tid": 1, "ts": 2},
        {"ph": "C", "name": "memory", "pid": 1, "ts": 3, "args": {"bytes": 10}},
        {"ph": "i", "name": "mark", "pid": 1, "tid": 1, "ts": 3, "s": "t"},
        {"ph": "E", "pid": 1, "tid": 1, "ts": 4},
        {"ph": "B", "name": "backwards", "pid": 1, "tid": 2, "ts": 9},
        {"ph": "E", "pid": 1, "tid": 2, "ts": 8},
        {"ph": "B", "name": "open at the end", "pid": 1, "tid": 1, "ts": 5},
    ])
    assert [r["name"] for r in rows] == ["kept"]
    assert t.spans == {"paired": 1, "dropped": 3}


def test_a_generic_trace_imports_with_its_span_counts_in_the_metadata(tmp_path):
    path = tmp_path / "tool.json"
    path.write_text(json.dumps([{"ph": "B", "name": "ProfilerStep#1", "pid": 3, "tid": 3, "ts": 0}, {"ph": "E", "pid": 3, "tid": 3, "ts": 100}]))
    rank = by_name("kineto").read(Source(path, "kineto"), None)
    assert rank.meta["chrome_spans"] == {"paired": 1, "dropped": 0}
    assert rank.events.column("kind").to_pylist() == [S.STEP], "a step marker written as a B/E pair is a step"


@pytest.mark.parametrize("stream", [False, True])
def test_counter_events_become_host_counter_samples_one_series_per_key(tmp_path, stream):
    t, _ = _events(tmp_path, [
        {"ph": "X", "cat": "cpu_op", "name": "work", "pid": 1, "tid": 1, "ts": 0, "dur": 10},
        {"ph": "C", "name": "heap", "pid": 1, "ts": 2, "args": {"value": 100}},
        {"ph": "C", "name": "queue", "pid": 1, "ts": 3.5, "args": {"cats": 1, "dogs": 2.5, "label": "x"}},
    ], stream=stream)
    rows = t.counters.to_pylist()
    assert [(r["name"], r["time_ns"], r["value"], r["device"]) for r in rows] == [
        ("heap", 2_000, 100.0, "cpu"), ("queue.cats", 3_500, 1.0, "cpu"), ("queue.dogs", 3_500, 2.5, "cpu")
    ], "a series that is not a number is skipped"


def test_counters_share_the_events_clock_and_reach_the_rank(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"baseTimeNanoseconds": 10**18, "distributedInfo": {"rank": 3}, "traceEvents": [
        {"ph": "X", "cat": "cpu_op", "name": "work", "pid": 1, "tid": 1, "ts": 1, "dur": 10},
        {"ph": "C", "name": "heap", "pid": 1, "ts": 1, "args": {"value": 7}},
    ]}))
    rank = by_name("kineto").read(Source(path, "kineto"), None)
    assert rank.counters.column("time_ns").to_pylist() == rank.events.column("start_ns").to_pylist() == [10**18 + 1_000]
    assert rank.counters.column("rank").to_pylist() == [3]


def test_a_kineto_trace_without_counter_events_has_no_counter_table(tmp_path):
    t, _ = _events(tmp_path, [{"ph": "X", "cat": "cpu_op", "name": "work", "pid": 1, "tid": 1, "ts": 1, "dur": 10}])
    assert t.counters is None
