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


def test_a_factory_that_raises_drops_the_collector_and_training_goes_on(tmp_path, monkeypatch):
    def broken(settings):
        raise RuntimeError("no such device")

    monkeypatch.setattr(registry, "REGISTRY", [*registry.REGISTRY, registry.Entry("counting", lambda s: True, broken)])
    run = _record(tmp_path)
    assert run.meta["collectors"]["counting"] == {"status": "dropped", "reason": "failed to start: RuntimeError: no such device"}
    assert run.meta["collectors"]["host"]["status"] == "ok" and run.meta["steps"] == 3


def test_a_probe_that_says_no_is_logged_at_debug_level_with_what_it_needs(tmp_path, caplog):
    import logging

    with caplog.at_level(logging.DEBUG, logger="accelscope"):
        _record(tmp_path)
    assert any("torch_profiler not started (needs mode='full'" in r.getMessage() and r.levelno == logging.DEBUG for r in caplog.records)


def test_every_entry_says_what_it_needs_and_names_are_unique():
    names = [e.name for e in registry.REGISTRY]
    assert len(names) == len(set(names))
    assert all(e.needs for e in registry.REGISTRY)


def test_probes_import_nothing_heavy(tmp_path):
    import os
    import subprocess
    import sys

    code = (
        "import sys, pathlib\n"
        "from accelscope.collectors import registry\n"
        "from accelscope.schedule import Schedule\n"
        "for mode in ('full', 'light'):\n"
        "    for fw in ('torch', 'tensorflow', 'none'):\n"
        "        s = registry.Settings(mode, fw, Schedule(), 0.1, pathlib.Path('.'))\n"
        "        [e.probe(s) for e in registry.REGISTRY]\n"
        "print(sorted(m for m in ('torch', 'tensorflow', 'grpc', 'pynvml', 'jax') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
