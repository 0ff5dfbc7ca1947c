"""The registry of built-in collectors: what its probes start, and that a new entry is all
it takes to add one."""

from __future__ import annotations

import accelscope
from accelscope.collectors import registry
from accelscope.collectors.base import Collector
from accelscope.traces.run import Run


class Counting(Collector):
    """A collector that counts the steps it was told about."""

    name = "counting"

    def __init__(self):
        self.steps = 0

    def start(self, ctx) -> None:
        self.ctx = ctx

    def on_step(self, step: int) -> None:
        self.steps += 1


def _record(tmp_path, n: int = 3) -> Run:
    with accelscope.profile(tmp_path / "r", mode="light", framework="none", live=False) as prof:
        for _ in range(n):
            prof.step()
    return Run.open(prof.run_dir)


def test_a_registered_collector_starts_when_its_probe_says_so(tmp_path, monkeypatch):
    made = []

    def make(settings):
        made.append(Counting())
        return made[-1]

    monkeypatch.setattr(registry, "REGISTRY", [*registry.REGISTRY, registry.Entry("counting", lambda s: s.mode == "light", make)])
    run = _record(tmp_path)
    assert run.meta["collectors"]["counting"]["status"] == "ok"
    assert len(made) == 1 and made[0].steps == 3


def test_a_probe_that_says_no_keeps_the_collector_out_of_the_run(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "REGISTRY", [*registry.REGISTRY, registry.Entry("counting", lambda s: s.mode == "full", lambda s: Counting())])
    run = _record(tmp_path)
    assert "counting" not in run.meta["collectors"]


def test_a_probe_that_raises_keeps_the_collector_out_and_training_goes_on(tmp_path, monkeypatch):
    def broken(settings):
        raise OSError("cannot read /sys")

    monkeypatch.setattr(registry, "REGISTRY", [*registry.REGISTRY, registry.Entry("counting", broken, lambda s: Counting())])
    run = _record(tmp_path)
    assert "counting" not in run.meta["collectors"] and run.meta["steps"] == 3


def test_a_light_cpu_run_starts_only_what_applies(tmp_path):
    collectors = _record(tmp_path).meta["collectors"]
    assert collectors["host"]["status"] == "ok"
    assert "torch_profiler" not in collectors and "tensorflow_profiler" not in collectors, "no framework profiler line in a light run"


def test_a_user_collector_replaces_the_built_in_one_of_its_name(tmp_path):
    class MyHost(Counting):
        name = "host"

    mine = MyHost()
    with accelscope.profile(tmp_path / "r", mode="light", framework="none", live=False, collectors=[mine]) as prof:
        prof.step()
    run = Run.open(prof.run_dir)
    assert run.meta["collectors"]["host"]["status"] == "ok" and mine.steps == 1
    assert run.counters.filter(run.counters["name"] == "process_cpu_percent").height == 0, "the built-in host sampler did not run"
