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
