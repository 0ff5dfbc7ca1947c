import json
import time

import accelscope
from accelscope.collectors.base import SamplerCollector
from accelscope.live import LIVE_FILE, LiveAnalyzer, StepRecord


def _wait_for(path, predicate, timeout_s=3.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            doc = json.loads(path.read_text())
            if predicate(doc):
                return doc
        except (OSError, ValueError):
            pass
        time.sleep(0.01)
    raise AssertionError(f"{path} never satisfied the condition")


def test_input_bound_steps_are_flagged_while_training_runs(tmp_path, caplog):
    def slow_batches():
        for i in range(6):
            time.sleep(0.03)
            yield i

    with accelscope.profile(tmp_path / "r", mode="light") as prof:
        live = prof.run_dir / LIVE_FILE
        for i, _ in enumerate(prof.iter(slow_batches())):
            time.sleep(0.01)
            prof.step()
            # Within one step of its end, the step is in the live status.
            doc = _wait_for(live, lambda d, i=i: d["steps"] >= i + 1, timeout_s=2.0)
        assert doc["last_step"]["verdict"] == "high"
        assert 0.6 < doc["recent"]["input_wait_share"] < 0.85
    final = json.loads(live.read_text())
    assert final["finished"] and final["steps"] == 6 and final["flagged_steps"] == 6
    flagged_logs = [r for r in caplog.records if "highly input-bound" in r.getMessage()]
    assert len(flagged_logs) == 1, "rate-limited: one message, not one per step"


def test_balanced_steps_are_not_flagged(tmp_path):
    with accelscope.profile(tmp_path / "r", mode="light") as prof:
        for _ in prof.iter(range(5)):
            time.sleep(0.01)
            prof.step()
    doc = json.loads((prof.run_dir / LIVE_FILE).read_text())
    assert doc["flagged_steps"] == 0 and doc["overall"]["verdict"] == "none"


class _FakeGpuUtil(SamplerCollector):
    """A device collector at the hardware boundary: reports 10 % utilisation."""

    name = "fake_gpu"

    def sample(self):
        self.ctx.writer.add_counter(("gpu_util_percent", "cuda:0", self.ctx.now_ns(), 10.0, 0))


def test_idle_heavy_steps_are_flagged_from_device_samples(tmp_path):
    with accelscope.profile(tmp_path / "r", mode="light", collectors=[_FakeGpuUtil(0.005)]) as prof:
        for _ in prof.iter(range(4)):
            time.sleep(0.05)
            prof.step()
    doc = json.loads((prof.run_dir / LIVE_FILE).read_text())
    assert doc["flagged_steps"] == 4
    assert all(f["idle_heavy"] and f["device_util_percent"] == 10.0 for f in doc["flags"])


def test_memory_stays_bounded_over_many_steps(tmp_path):
    live = LiveAnalyzer(tmp_path, window=50, status_interval_s=0.05)
    for i in range(20_000):
        live.on_step(StepRecord(i, i * 3_000_000, i * 3_000_000 + 2_000_000, 1_000_000))
        live.on_counter("gpu_util_percent", "cuda:0", i * 3_000_000, 50.0)
    live.close(timeout_s=30)
    assert live.steps == 20_000
    assert len(live._recent) == 50 and len(live._flags) == 20 and len(live._util) <= 4096
    assert json.loads((tmp_path / LIVE_FILE).read_text())["steps"] == 20_000


def test_live_can_be_switched_off(tmp_path):
    with accelscope.profile(tmp_path / "r", mode="light", live=False) as prof:
        for _ in prof.iter(range(2)):
            prof.step()
    assert not (prof.run_dir / LIVE_FILE).exists()
