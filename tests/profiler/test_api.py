import logging
import threading
import time

import polars as pl
import pytest

import accelscope
from accelscope.collectors.base import Collector, CollectorUnavailable, SamplerCollector
from accelscope.schedule import Schedule
from accelscope.traces.run import Run


def _loop(prof, n=5, wait_s=0.0, work_s=0.0):
    def batches():
        for i in range(n):
            time.sleep(wait_s)
            yield i

    for _ in prof.iter(batches()):
        time.sleep(work_s)
        prof.step()


def test_every_step_and_input_wait_is_recorded(tmp_path):
    with accelscope.profile(tmp_path / "r", mode="light") as prof:
        _loop(prof, n=6, wait_s=0.01, work_s=0.005)
    ev = Run.open(prof.run_dir).events
    steps = ev.filter(ev["kind"] == "step").sort("start_ns")
    waits = ev.filter(ev["kind"] == "input_wait").sort("start_ns")
    assert steps["name"].to_list() == [f"ProfilerStep#{i}" for i in range(6)]
    assert waits.height == 7, "six batches plus the final StopIteration"
    assert waits["name"][-1].endswith("[exhausted]")
    assert all(9e6 <= d < 60e6 for d in waits["dur_ns"][:6]), "each wait is the 10 ms sleep"
    # Steps tile the loop: each starts where the previous one ended.
    assert (steps["start_ns"][1:] == (steps["start_ns"] + steps["dur_ns"])[:-1]).all()
    # The first step starts when the loop first asks for a batch.
    assert steps["start_ns"][0] == waits["start_ns"][0]


def test_start_step_leaves_the_time_before_it_out_of_the_step(tmp_path):
    with accelscope.profile(tmp_path / "r", mode="light", live=False) as prof:
        for _ in range(3):
            time.sleep(0.03)  # between steps: validation, callbacks
            prof.start_step()
            time.sleep(0.005)
            prof.step()
    steps = Run.open(prof.run_dir).events.filter(pl.col("kind") == "step")
    assert steps.height == 3 and steps["dur_ns"].max() < 25e6


def test_input_timing_is_noted_once_input_is_timed(tmp_path):
    with accelscope.profile(tmp_path / "a", mode="light", live=False) as prof:
        prof.step()
    assert "input_timing" not in Run.open(prof.run_dir).meta
    with accelscope.profile(tmp_path / "b", mode="light", live=False) as prof:
        for _ in prof.iter([1]):
            prof.step()
    assert Run.open(prof.run_dir).meta["input_timing"] == "every step"


def test_clock_is_unix_epoch_ns(tmp_path):
    before = time.time_ns()
    with accelscope.profile(tmp_path / "r", mode="light") as prof:
        _loop(prof, n=2)
    after = time.time_ns()
    ev = Run.open(prof.run_dir).events
    assert before <= ev["start_ns"].min() and (ev["start_ns"] + ev["dur_ns"]).max() <= after + 1_000_000


def test_region_as_context_manager_and_decorator(tmp_path):
    with accelscope.profile(tmp_path / "r", mode="light") as prof:
        @prof.region("decorated")
        def f(x):
            time.sleep(0.002)
            return x + 1

        with prof.region("outer"):
            assert f(1) == 2
        prof.step()
    ev = Run.open(prof.run_dir).events.filter(accelscope.open_run(prof.run_dir).events["kind"] == "annotation")
    by_name = {r["name"]: r for r in ev.iter_rows(named=True)}
    assert set(by_name) == {"decorated", "outer"}
    outer, inner = by_name["outer"], by_name["decorated"]
    assert outer["start_ns"] <= inner["start_ns"] and inner["start_ns"] + inner["dur_ns"] <= outer["start_ns"] + outer["dur_ns"]
    assert inner["dur_ns"] >= 2_000_000


def test_existing_run_is_never_overwritten(tmp_path):
    with accelscope.profile(tmp_path / "r", mode="light") as first:
        _loop(first, n=1)
    with accelscope.profile(tmp_path / "r", mode="light") as second:
        _loop(second, n=1)
    assert first.run_dir == tmp_path / "r" and second.run_dir == tmp_path / "r.1"
    assert Run.open(first.run_dir).meta["complete"] and Run.open(second.run_dir).meta["complete"]


def test_unwritable_output_leaves_training_running(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with accelscope.profile(blocker / "run", mode="light") as prof:
        _loop(prof, n=3)
    assert prof.run_dir is None or not (blocker / "run").exists()
    assert any("profiling is off" in r.message for r in caplog.records)


def test_training_exception_propagates_and_the_run_is_closed(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with accelscope.profile(tmp_path / "r", mode="light") as prof:
            prof.step()
            raise RuntimeError("boom")
    meta = Run.open(prof.run_dir).meta
    assert meta["complete"] is True and "boom" in meta["training_error"]


def test_invalid_arguments_are_value_errors():
    with pytest.raises(ValueError, match="mode"):
        accelscope.profile("x", mode="fast")
    with pytest.raises(ValueError, match="host_interval_s"):
        accelscope.profile("x", host_interval_s=0)
    with pytest.raises(ValueError, match="framework"):
        accelscope.profile("x", framework="jax2")


class _Broken(Collector):
    def __init__(self, where: str):
        self.name = f"broken_{where}"
        self.where = where
        self.calls = 0

    def start(self, ctx):
        if self.where == "start":
            raise RuntimeError("driver exploded")

    def on_step(self, step):
        self.calls += 1
        if self.where == "step":
            raise RuntimeError("step exploded")


class _BrokenSampler(SamplerCollector):
    name = "broken_sampler"

    def sample(self):
        raise OSError("sensor vanished")


class _HungSampler(SamplerCollector):
    name = "hung_sampler"

    def __init__(self):
        super().__init__(interval_s=0.01)
        self.hang_timeout_s = 0.3
        self.release = threading.Event()

    def sample(self):
        self.release.wait(10)


class _Unavailable(Collector):
    name = "no_device"

    def start(self, ctx):
        raise CollectorUnavailable("no driver here")


@pytest.mark.parametrize(
    "collector, reason",
    [
        (lambda: _Broken("start"), "driver exploded"),
        (lambda: _Broken("step"), "step exploded"),
        (lambda: _BrokenSampler(0.01), "sensor vanished"),
    ],
)
def test_collector_failures_never_reach_training(tmp_path, caplog, collector, reason):
    c = collector()
    with accelscope.profile(tmp_path / "r", mode="light", collectors=[c]) as prof:
        _loop(prof, n=20, work_s=0.003)
    assert prof.steps == 20
    meta = Run.open(prof.run_dir).meta
    assert meta["collectors"][c.name]["status"] == "dropped"
    assert reason in meta["collectors"][c.name]["reason"]
    assert meta["collectors"]["host"]["status"] == "ok", "one failure must not stop the others"
    assert sum(c.name in r.message for r in caplog.records if r.levelno == logging.WARNING) == 1
    if isinstance(c, _Broken) and c.where == "step":
        assert c.calls == 1, "a dropped collector is not called again"


def test_hung_collector_is_dropped_without_stalling_training(tmp_path):
    c = _HungSampler()
    t0 = time.perf_counter()
    with accelscope.profile(tmp_path / "r", mode="light", collectors=[c]) as prof:
        _loop(prof, n=150, work_s=0.01)
    elapsed = time.perf_counter() - t0
    c.release.set()
    meta = Run.open(prof.run_dir).meta
    assert meta["collectors"]["hung_sampler"]["status"] == "dropped"
    assert "hung" in meta["collectors"]["hung_sampler"]["reason"]
    assert elapsed < 10, "a hung collector must not block the loop or profile exit"


def test_unavailable_collector_is_recorded_not_dropped(tmp_path):
    with accelscope.profile(tmp_path / "r", mode="light", collectors=[_Unavailable()]) as prof:
        _loop(prof, n=2)
    entry = Run.open(prof.run_dir).meta["collectors"]["no_device"]
    assert entry == {"status": "unavailable", "reason": "no driver here"}


def test_metadata_describes_the_run(tmp_path):
    with accelscope.profile(tmp_path / "r", mode="light", framework="none") as prof:
        _loop(prof, n=3)
    meta = Run.open(prof.run_dir).meta
    assert meta["clock"]["name"] == "unix_epoch_ns"
    assert meta["framework"]["name"] == "none"
    assert meta["devices"][0]["id"] == "cpu"
    assert meta["steps"] == 3 and meta["ranks"] == [0]
    assert meta["end_ns"] > meta["start_ns"]
    assert any("training" in t["name"] for t in meta["threads"])


def test_full_mode_traces_only_the_scheduled_windows(tmp_path):
    torch = pytest.importorskip("torch")
    sched = Schedule(skip_first=1, wait=2, warmup=1, active=2, repeat=2)
    x = torch.randn(64, 64)
    with accelscope.profile(tmp_path / "r", mode="full", schedule=sched) as prof:
        for _ in prof.iter(range(12)):
            (x @ x).sum()
            prof.step()
    run = Run.open(prof.run_dir)
    assert run.meta["collectors"]["torch_profiler"]["status"] == "ok"
    ev = run.events
    steps = ev.filter(ev["kind"] == "step").sort("start_ns")
    ops = ev.filter((ev["kind"] == "cpu_op") & (ev["name"] == "aten::mm"))
    traced = set()
    for op in ops.iter_rows(named=True):
        inside = steps.filter((steps["start_ns"] <= op["start_ns"]) & (op["start_ns"] + op["dur_ns"] <= steps["start_ns"] + steps["dur_ns"]))
        assert inside.height == 1, "Kineto and accelscope share one clock: every op falls inside a step"
        traced.add(int(inside["name"][0].split("#")[1]))
    expected = {s for a, b in sched.windows(12) for s in range(a, b + 1)}
    assert traced == expected
    assert not (prof.run_dir / ".tmp-torch").exists(), "temporary Kineto exports are cleaned up"


def test_memory_stays_flat_over_many_steps(tmp_path):
    import psutil

    proc = psutil.Process()
    with accelscope.profile(tmp_path / "r", mode="light", flush_interval_s=0.05) as prof:
        def run(n):
            for _ in prof.iter(range(n)):
                time.sleep(0.0001)
                prof.step()

        run(5_000)
        time.sleep(0.2)  # let the writer flush
        rss_early = proc.memory_info().rss
        run(20_000)
        time.sleep(0.2)
        rss_late = proc.memory_info().rss
    assert prof.steps == 25_000
    assert rss_late - rss_early < 30 * 2**20, "recorded rows go to disk, not to memory"
    assert Run.open(prof.run_dir).events.filter(accelscope.open_run(prof.run_dir).events["kind"] == "step").height == 25_000
