import subprocess
import sys
import time

import accelscope
from accelscope.collectors.host import HostSampler
from accelscope.traces.run import Run

EXPECTED = {
    "process_cpu_percent", "process_rss_bytes", "children_cpu_percent", "children_rss_bytes",
    "children_count", "system_cpu_percent", "system_memory_used_bytes", "system_memory_available_bytes",
}


def test_samples_process_children_and_system_at_the_configured_rate(tmp_path):
    # A busy child process stands in for a DataLoader worker.
    child = subprocess.Popen([sys.executable, "-c", "import time\nt=time.time()\nwhile time.time()-t<3: pass"])
    try:
        with accelscope.profile(tmp_path / "r", mode="light", host_interval_s=0.05) as prof:
            time.sleep(1.0)
            prof.step()
    finally:
        child.kill()
        child.wait()
    c = Run.open(prof.run_dir).counters
    assert set(c["name"].unique()) == EXPECTED
    per_metric = c.group_by("name").len()["len"]
    assert per_metric.min() >= 10, "about 20 samples expected in 1 s at 20 Hz"
    children = c.filter(c["name"] == "children_count")["value"]
    assert children.max() >= 1
    busy = c.filter(c["name"] == "children_cpu_percent")["value"]
    assert busy.max() > 50, "the busy child uses most of a core"
    rss = c.filter(c["name"] == "process_rss_bytes")["value"]
    assert rss.min() > 10 * 2**20


def test_rejects_non_positive_interval():
    import pytest

    with pytest.raises(ValueError):
        HostSampler(0)


def _steady_loop(prof, seconds: float) -> int:
    steps = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.005)
        prof.step()
        steps += 1
    return steps


def test_psutil_failing_mid_run_drops_the_sampler_not_training(tmp_path, monkeypatch, caplog):
    import logging

    import psutil

    calls = {"n": 0}
    real = psutil.virtual_memory

    def failing():
        calls["n"] += 1
        if calls["n"] > 3:
            raise psutil.AccessDenied(pid=None, name="/proc/meminfo")
        return real()

    monkeypatch.setattr(psutil, "virtual_memory", failing)
    with caplog.at_level(logging.WARNING, logger="accelscope"):
        with accelscope.profile(tmp_path / "r", mode="light", host_interval_s=0.02, live=False) as prof:
            steps = _steady_loop(prof, 0.6)
    run = Run.open(prof.run_dir)
    assert prof.steps == steps and run.meta["steps"] == steps
    assert run.meta["collectors"]["host"]["status"] == "dropped"
    assert "AccessDenied" in run.meta["collectors"]["host"]["reason"]
    assert run.counters.filter(run.counters["name"] == "process_rss_bytes").height == 3, "samples before the failure are kept"
    assert sum("collector host dropped" in r.getMessage() for r in caplog.records) == 1


def test_psutil_blocking_is_caught_by_the_watchdog_and_training_keeps_its_pace(tmp_path, monkeypatch):
    import threading

    import psutil

    release = threading.Event()
    real = psutil.virtual_memory
    calls = {"n": 0}

    def blocking():
        calls["n"] += 1
        if calls["n"] > 2:
            release.wait(30)  # a /proc read stuck on a wedged filesystem
        return real()

    monkeypatch.setattr(psutil, "virtual_memory", blocking)
    real_init = HostSampler.__init__

    def quick_watchdog(self, *a, **k):
        real_init(self, *a, **k)
        self.hang_timeout_s = 0.4

    monkeypatch.setattr(HostSampler, "__init__", quick_watchdog)
    try:
        t0 = time.perf_counter()
        with accelscope.profile(tmp_path / "r", mode="light", host_interval_s=0.02, live=False) as prof:
            steps = _steady_loop(prof, 2.0)
        elapsed = time.perf_counter() - t0
    finally:
        release.set()
    status = Run.open(prof.run_dir).meta["collectors"]["host"]
    assert status["status"] == "dropped" and "hung" in status["reason"]
    assert steps > 200 and elapsed < 4
