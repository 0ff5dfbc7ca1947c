"""Generic Chrome traces (tools other than Kineto): begin/end pairs and instants become host
annotation slices, counter events counter samples."""

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


def test_unmatched_ends_and_unclosed_begins_give_no_slices(tmp_path):
    t, rows = _events(tmp_path, [
        {"ph": "E", "pid": 1, "tid": 1, "ts": 1},
        {"ph": "B", "name": "kept", "pid": 1, "tid": 1, "ts": 2},
        {"ph": "C", "name": "memory", "pid": 1, "ts": 3, "args": {"bytes": 10}},
        {"ph": "E", "pid": 1, "tid": 1, "ts": 4},
        {"ph": "B", "name": "backwards", "pid": 1, "tid": 2, "ts": 9},
        {"ph": "E", "pid": 1, "tid": 2, "ts": 8},
        {"ph": "B", "name": "open at the end", "pid": 1, "tid": 1, "ts": 5},
    ])
    assert [r["name"] for r in rows] == ["kept"]
    # dropped events: the lone end, the end before its begin, that begin (never closed), the last begin
    assert t.spans == {"paired": 1, "dropped": 4}


@pytest.mark.parametrize("stream", [False, True])
def test_begin_end_pairs_at_epoch_microseconds_keep_their_nanoseconds(tmp_path, stream):
    """Absolute µs with ns decimals (Perfetto's and XProf's JSON) are beyond a float64's
    precision: starts and durations come from the number text, exact to the ns."""
    base = 1_700_000_000_000_000  # µs since 1970: 2023
    path = tmp_path / "epoch.json"
    path.write_text('{"traceEvents": ['
                    f'{{"ph": "B", "name": "outer", "pid": 1, "tid": 1, "ts": {base}.001}},'
                    f'{{"ph": "B", "name": "inner", "pid": 1, "tid": 1, "ts": {base + 5}.123}},'
                    f'{{"ph": "E", "pid": 1, "tid": 1, "ts": {base + 5}.124}},'
                    f'{{"ph": "E", "pid": 1, "tid": 1, "ts": {base + 9}.999}}]}}')
    t = read_kineto(path, stream=stream, chunk_bytes=64)
    rows = sorted(t.events.select(["name", "start_ns", "dur_ns"]).to_pylist(), key=lambda r: r["start_ns"])
    ns = base * 1000
    assert rows == [{"name": "outer", "start_ns": ns + 1, "dur_ns": 9_998}, {"name": "inner", "start_ns": ns + 5_123, "dur_ns": 1}]


@pytest.mark.parametrize("stream", [False, True])
def test_another_tools_instants_are_zero_length_host_annotations(tmp_path, stream):
    t, rows = _events(tmp_path, [
        {"ph": "X", "name": "work", "cat": "app", "pid": 1, "tid": 1, "ts": 0, "dur": 10},
        {"ph": "i", "name": "mark", "pid": 1, "tid": 1, "ts": 3, "s": "t"},
        {"ph": "I", "name": "legacy mark", "pid": 1, "tid": 2, "ts": 4.5},
        {"ph": "n", "name": "async mark", "cat": "net", "id": 7, "pid": 1, "tid": 1, "ts": 6},
    ], stream=stream)
    marks = [(r["name"], r["kind"], r["device"], r["start_ns"], r["dur_ns"], r["tid"]) for r in rows if r["name"] != "work"]
    assert marks == [("mark", S.ANNOTATION, "cpu", 3_000, 0, 1), ("legacy mark", S.ANNOTATION, "cpu", 4_500, 0, 2), ("async mark", S.ANNOTATION, "cpu", 6_000, 0, 1)]
    assert t.spans == {"instants": 3}


def test_kinetos_own_instants_stay_out_of_the_slices(tmp_path):
    """torch's profiler writes memory samples and its markers as instants; they are not work."""
    t, rows = _events(tmp_path, [
        {"ph": "X", "name": "aten::add", "cat": "cpu_op", "pid": 1, "tid": 1, "ts": 0, "dur": 10},
        {"ph": "i", "name": "[memory]", "cat": "cpu_instant_event", "pid": 1, "tid": 1, "ts": 3, "s": "t", "args": {"Bytes": 512}},
        {"ph": "i", "name": "Iteration Start: PyTorch Profiler", "pid": 1, "tid": 1, "ts": 0, "s": "g"},
    ])
    assert [r["name"] for r in rows] == ["aten::add"] and "instants" not in t.spans


def test_a_trace_of_instants_only_imports(tmp_path):
    _, rows = _events(tmp_path, [{"ph": "i", "name": f"tick {i}", "pid": 1, "tid": 1, "ts": i, "s": "t"} for i in range(3)])
    assert [(r["name"], r["dur_ns"]) for r in rows] == [("tick 0", 0), ("tick 1", 0), ("tick 2", 0)]


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


def test_async_local_ids_are_per_process_global_ids_are_not(tmp_path):
    # id2.local is scoped to its process (spec, Perfetto): two pids may reuse it; id2.global may not.
    _, rows = _events(tmp_path, [
        {"ph": "b", "cat": "io", "id2": {"local": "0x7"}, "name": "p1-read", "pid": 1, "tid": 1, "ts": 0},
        {"ph": "b", "cat": "io", "id2": {"local": "0x7"}, "name": "p2-read", "pid": 2, "tid": 1, "ts": 1},
        {"ph": "e", "cat": "io", "id2": {"local": "0x7"}, "pid": 1, "tid": 5, "ts": 10},
        {"ph": "e", "cat": "io", "id2": {"local": "0x7"}, "pid": 2, "tid": 5, "ts": 4},
        {"ph": "b", "cat": "io", "id2": {"global": "0x9"}, "name": "handoff", "pid": 1, "tid": 1, "ts": 2},
        {"ph": "e", "cat": "io", "id2": {"global": "0x9"}, "pid": 2, "tid": 3, "ts": 6},
    ])
    assert [(r["name"], r["pid"], r["dur_ns"]) for r in rows] == [("p1-read", 1, 10_000), ("p2-read", 2, 3_000), ("handoff", 1, 4_000)]


def test_an_async_id_given_as_a_number_or_a_string_is_one_id(tmp_path):
    _, rows = _events(tmp_path, [
        {"ph": "b", "cat": "net", "id": 256, "name": "fetch", "pid": 1, "tid": 1, "ts": 0},
        {"ph": "e", "cat": "net", "id": "256", "name": "fetch", "pid": 1, "tid": 1, "ts": 3},
    ])
    assert [(r["name"], r["dur_ns"]) for r in rows] == [("fetch", 3_000)]


def test_async_events_with_another_scope_or_without_an_id_do_not_pair(tmp_path):
    t, rows = _events(tmp_path, [
        {"ph": "b", "cat": "net", "id": 1, "scope": "a", "name": "scoped", "pid": 1, "tid": 1, "ts": 0},
        {"ph": "e", "cat": "net", "id": 1, "scope": "b", "name": "scoped", "pid": 1, "tid": 1, "ts": 3},
        {"ph": "b", "cat": "net", "name": "no id", "pid": 1, "tid": 1, "ts": 0},
        {"ph": "e", "cat": "net", "name": "no id", "pid": 1, "tid": 1, "ts": 2},
        {"ph": "X", "cat": "cpu_op", "name": "work", "pid": 1, "tid": 1, "ts": 0, "dur": 1},
    ])
    assert [r["name"] for r in rows] == ["work"]
    assert t.spans == {"paired": 0, "dropped": 4}


def test_legacy_async_start_finish_pairs_become_annotations(tmp_path):
    # "S"/"F": the deprecated async phases chrome://tracing still reads.
    _, rows = _events(tmp_path, [
        {"ph": "S", "cat": "gc", "id": "0x1", "name": "collect", "pid": 1, "tid": 1, "ts": 100},
        {"ph": "T", "cat": "gc", "id": "0x1", "name": "collect", "pid": 1, "tid": 1, "ts": 150, "args": {"step": "mark"}},
        {"ph": "F", "cat": "gc", "id": "0x1", "name": "collect", "pid": 1, "tid": 2, "ts": 250},
    ], array=True)
    assert [(r["name"], r["kind"], r["start_ns"], r["dur_ns"]) for r in rows] == [("collect", S.ANNOTATION, 100_000, 150_000)]


def test_an_end_that_names_a_begin_closes_that_begin_not_the_latest(tmp_path):
    # Perfetto's rule: an end with a name closes the latest open slice of that name.
    _, rows = _events(tmp_path, [
        {"ph": "B", "name": "outer", "pid": 1, "tid": 1, "ts": 0},
        {"ph": "B", "name": "inner", "pid": 1, "tid": 1, "ts": 1},
        {"ph": "E", "name": "outer", "pid": 1, "tid": 1, "ts": 5},
        {"ph": "E", "pid": 1, "tid": 1, "ts": 7},
    ])
    assert [(r["name"], r["dur_ns"]) for r in rows] == [("outer", 5_000), ("inner", 6_000)]


def test_an_end_naming_no_open_begin_is_dropped(tmp_path):
    t, rows = _events(tmp_path, [
        {"ph": "B", "name": "open", "pid": 1, "tid": 1, "ts": 0},
        {"ph": "E", "name": "something else", "pid": 1, "tid": 1, "ts": 5},
        {"ph": "E", "pid": 1, "tid": 1, "ts": 9},
    ])
    assert [(r["name"], r["dur_ns"]) for r in rows] == [("open", 9_000)]
    assert t.spans == {"paired": 1, "dropped": 1}


def test_the_end_events_args_are_merged_into_the_slice(tmp_path):
    t, _ = _events(tmp_path, [
        {"ph": "B", "name": "load", "pid": 1, "tid": 1, "ts": 0, "args": {"file": "a.bin", "bytes": 0}},
        {"ph": "E", "pid": 1, "tid": 1, "ts": 2, "args": {"bytes": 4096}},
    ])
    assert json.loads(t.events.column("args")[0].as_py()) == {"file": "a.bin", "bytes": 4096}


def test_counter_values_written_as_numeric_strings_are_read(tmp_path):
    t, _ = _events(tmp_path, [
        {"ph": "X", "cat": "cpu_op", "name": "work", "pid": 1, "tid": 1, "ts": 0, "dur": 10},
        {"ph": "C", "name": "heap", "pid": 1, "ts": 2, "args": {"value": "1.5e3", "note": "n/a", "bad": "nan"}},
    ])
    assert [(r["name"], r["value"]) for r in t.counters.to_pylist()] == [("heap", 1500.0)]


def test_a_counter_name_several_processes_write_is_one_series_per_process(tmp_path):
    t, _ = _events(tmp_path, [
        {"ph": "X", "cat": "cpu_op", "name": "work", "pid": 1, "tid": 1, "ts": 0, "dur": 10},
        {"ph": "C", "name": "rss", "pid": 1, "ts": 1, "args": {"value": 10}},
        {"ph": "C", "name": "rss", "pid": 2, "ts": 1, "args": {"value": 99}},
        {"ph": "C", "name": "threads", "pid": 2, "ts": 1, "args": {"value": 4}},
        {"ph": "C", "name": "queue", "id": 3, "pid": 2, "ts": 1, "args": {"value": 5}},
    ])
    assert [(r["name"], r["value"]) for r in t.counters.to_pylist()] == [("rss (pid 1)", 10.0), ("rss (pid 2)", 99.0), ("threads", 4.0), ("queue id: 3", 5.0)]


def _meta(tmp_path, doc):
    path = tmp_path / "t.json"
    path.write_text(json.dumps(doc))
    return by_name("kineto").read(Source(path, "kineto"), None).meta


def test_another_tools_trace_names_no_framework_and_a_clock_by_its_values(tmp_path):
    slice_at = lambda ts: {"ph": "X", "name": "work", "pid": 1, "tid": 1, "ts": ts, "dur": 1}  # noqa: E731
    boot = _meta(tmp_path, [slice_at(52_000_123)])  # Chrome: µs since boot
    epoch = _meta(tmp_path, [slice_at(1_700_000_000_000_000)])
    assert boot["framework"]["name"] == epoch["framework"]["name"] == "none"
    assert (boot["clock"]["name"], epoch["clock"]["name"]) == ("relative_ns", "unix_epoch_ns")


def test_a_kineto_category_or_header_key_makes_it_a_torch_trace(tmp_path):
    op = {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "pid": 1, "tid": 1, "ts": 5, "dur": 1}
    plain = {"ph": "X", "name": "work", "pid": 1, "tid": 1, "ts": 5, "dur": 1}
    assert _meta(tmp_path, [op])["framework"]["name"] == "torch"
    assert _meta(tmp_path, {"schemaVersion": 1, "traceEvents": [plain]})["framework"]["name"] == "torch"
    assert _meta(tmp_path, {"traceEvents": [plain]})["framework"]["name"] == "none"
