"""meta["traced_steps"]: what the framework collectors record about their windows, written
from converter threads while the writer flushes."""

from __future__ import annotations

import threading

from accelscope.collectors.base import CollectorContext, TracedSteps, Window
from accelscope.traces.run import Run, RunWriter


def _ctx(tmp_path) -> CollectorContext:
    writer = RunWriter(tmp_path / "r", {"collectors": {}}, flush_interval_s=0.001)
    return CollectorContext(writer, lambda: 0, 1, 0, lambda name, reason: None)


def test_a_profiler_that_ran_lists_an_empty_list_until_a_window_lands(tmp_path):
    ctx = _ctx(tmp_path)
    traced = TracedSteps(ctx, "torch_profiler")
    assert ctx.writer.meta["traced_steps"] == {"torch_profiler": []}
    traced.landed((23, 25))
    traced.landed((11, 13))
    ctx.writer.close()
    assert Run.open(tmp_path / "r").meta["traced_steps"] == {"torch_profiler": [[11, 13], [23, 25]]}


def test_two_profilers_landing_from_their_threads_keep_each_others_windows(tmp_path):
    ctx = _ctx(tmp_path)
    a, b = TracedSteps(ctx, "torch_profiler"), TracedSteps(ctx, "tensorflow_profiler")

    def land(traced: TracedSteps, offset: int) -> None:
        for i in range(200):
            traced.landed((offset + 10 * i, offset + 10 * i + 2))

    threads = [threading.Thread(target=land, args=(a, 0)), threading.Thread(target=land, args=(b, 5))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ctx.writer.close()
    listed = Run.open(tmp_path / "r").meta["traced_steps"]
    assert listed["torch_profiler"] == [[10 * i, 10 * i + 2] for i in range(200)]
    assert listed["tensorflow_profiler"] == [[5 + 10 * i, 5 + 10 * i + 2] for i in range(200)]


def test_a_window_spans_its_first_steps_start_to_its_last_steps_end():
    w = Window(11, (100, 200))
    w.add(12, (200, 300))
    w.add(13, (310, 400))
    assert (w.steps, w.start_ns, w.end_ns) == ((11, 13), 100, 400)
    assert Window(3, None).start_ns is None


def test_window_events_keep_host_events_in_the_steps_and_device_events_that_ran_late():
    import pyarrow as pa

    from accelscope.collectors.base import window_events

    events = pa.table({"start_ns": [90, 100, 250, 399, 400, 450, 620], "device": ["cpu", "cpu", "cpu", "cpu", "cpu", "cuda:0", "cuda:0"]})
    w = Window(3, (100, 250))
    w.add(4, (250, 400))
    assert window_events(events, w)["start_ns"].to_pylist() == [100, 250, 399, 450, 620]
    assert window_events(events, w, to_ns=500)["start_ns"].to_pylist() == [100, 250, 399, 450], "device events until the tracer stopped"
    assert window_events(events, None, from_ns=95, to_ns=420)["start_ns"].to_pylist() == [100, 250, 399, 400], "no step times: the tracer's bounds"
    assert window_events(events, None).num_rows == 7


def test_window_memory_keeps_allocator_events_in_the_steps_whatever_their_device():
    import pyarrow as pa

    from accelscope.collectors.base import window_memory

    memory = pa.table({"time_ns": [90, 100, 250, 399, 400, 450], "device": ["cpu", "cuda:0", "cpu", "cuda:0", "cuda:0", "cuda:0"]})
    w = Window(3, (100, 250))
    w.add(4, (250, 400))
    assert window_memory(memory, w)["time_ns"].to_pylist() == [100, 250, 399], "a device's allocations are timed on the host"
    assert window_memory(memory, w, to_ns=500)["time_ns"].to_pylist() == [100, 250, 399]
    assert window_memory(memory, None).num_rows == 6
