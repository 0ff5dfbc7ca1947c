"""The NVML collector against a scripted libnvidia-ml.so.1 (nvml_shim.c) loaded by the
real pynvml. Each scenario runs in a subprocess so it gets a fresh pynvml and its own
LD_LIBRARY_PATH (the dynamic loader reads it once, at process start)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from accelscope.collectors.nvml import visible_nvml_indices
from accelscope.traces.run import Run

HERE = Path(__file__).resolve().parent
GIB = 2**30

RUNNER = textwrap.dedent(
    """
    import json, sys, time
    import accelscope
    from accelscope.collectors.nvml import NvmlCollector

    out, seconds, kwargs = sys.argv[1], float(sys.argv[2]), json.loads(sys.argv[3])
    hang_timeout_s = kwargs.pop("hang_timeout_s", None)
    collector = NvmlCollector(0.02, **kwargs)
    if hang_timeout_s is not None:
        collector.hang_timeout_s = hang_timeout_s
    steps = 0
    with accelscope.profile(out, mode="light", live=False, collectors=[collector]) as prof:
        end = time.monotonic() + seconds
        while time.monotonic() < end:  # the "training loop"
            sum(range(20000))
            time.sleep(0.005)
            prof.step()
            steps += 1
    print(json.dumps({"run_dir": str(prof.run_dir), "steps": steps, "pynvml": "pynvml" in sys.modules}))
    """
)

BASE_SCRIPT = """\
count 2
util 0 10 1
util 1 30 1
memutil 0 7
mem 0 17179869184 2147483648
mem 1 8589934592 1073741824
power 0 150000
power 1 70000
temp 0 41
temp 1 52
clocks 0 1410 5001
clocks 1 1200 4000
throttle 0 4
pcie 0 100 200
procmem 0 1000000
procmem 1 0
hires 0 90
hires 1 95
"""


@pytest.fixture(scope="session")
def shim_dir(tmp_path_factory) -> Path:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc not found: the scripted NVML library (nvml_shim.c) cannot be built")
    pytest.importorskip("pynvml", reason="nvidia-ml-py is not installed (accelscope[nvml])")
    out = tmp_path_factory.mktemp("nvml-shim")
    subprocess.run([gcc, "-shared", "-fPIC", "-O1", "-o", str(out / "libnvidia-ml.so.1"), str(HERE / "nvml_shim.c")], check=True)
    return out


def run_profiled(tmp_path: Path, lib_dir: Path | None, script: str = BASE_SCRIPT, seconds: float = 0.4, env: dict[str, str] | None = None, **kwargs):
    script_path = tmp_path / "script.txt"
    script_path.write_text(script)
    full_env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "LD_LIBRARY_PATH")}
    full_env.update(NVML_SHIM_SCRIPT=str(script_path), NVML_SHIM_LOG=str(tmp_path / "calls.txt"), LD_LIBRARY_PATH=str(lib_dir) if lib_dir else "")
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, "-c", RUNNER, str(tmp_path / "run"), str(seconds), json.dumps(kwargs)], env=full_env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    run = Run.open(result["run_dir"])
    calls = {}
    log = tmp_path / "calls.txt"
    if log.exists():
        for line in log.read_text().splitlines():
            fn, dev, n = line.split()
            calls[(fn, int(dev))] = int(n)
    return run, result, calls


def series(run: Run, name: str, device: str) -> list:
    c = run.counters
    c = c.filter((c["name"] == name) & (c["device"] == device)).sort("time_ns")
    return c["value"].to_list()


def polled_util(run: Run, device: str, hires_value: float) -> list:
    return [v for v in series(run, "gpu_util_percent", device) if v != hires_value]


def test_two_gpus_record_scripted_values_and_high_resolution_samples(shim_dir, tmp_path):
    run, result, _ = run_profiled(tmp_path, shim_dir)
    assert result["steps"] > 10
    assert run.meta["collectors"]["nvml"] == {"status": "ok"}
    assert [d["id"] for d in run.meta["nvml_devices"]] == ["cuda:0", "cuda:1"]
    assert run.meta["nvml_devices"][1]["name"] == "Shim GPU 1"
    assert run.meta["nvml_devices"][0]["memory_total_bytes"] == 16 * GIB
    for device, base, hires in (("cuda:0", 10, 90.0), ("cuda:1", 30, 95.0)):
        polled = polled_util(run, device, hires)
        assert len(polled) >= 5, "about 20 samples in 0.4 s at 50 Hz"
        assert polled == [float(base + i) for i in range(len(polled))], "the scripted rising utilisation, in order"
        c = run.counters
        high = c.filter((c["name"] == "gpu_util_percent") & (c["device"] == device) & (c["value"] == hires))
        assert high.height >= 2, "NVML's own samples are recorded as extra rows"
        assert high["time_ns"].n_unique() == high.height, "no sample recorded twice"
        assert high["time_ns"].min() >= run.meta["start_ns"] - 10**9
    expected0 = {
        "memory_util_percent": 7.0, "memory_used_bytes": 2.0 * GIB, "memory_total_bytes": 16.0 * GIB,
        "power_watts": 150.0, "temperature_celsius": 41.0, "sm_clock_mhz": 1410.0, "memory_clock_mhz": 5001.0,
        "throttle_reasons": 4.0, "process_memory_used_bytes": 1000000.0,
    }
    for name, value in expected0.items():
        values = series(run, name, "cuda:0")
        assert values and set(values) == {value}, name
    assert set(series(run, "power_watts", "cuda:1")) == {70.0}
    names = set(run.counters["name"].unique())
    assert "pcie_rx_bytes_per_s" not in names and "gpu_lost" not in names


def test_pcie_throughput_when_asked(shim_dir, tmp_path):
    run, _, _ = run_profiled(tmp_path, shim_dir, seconds=0.15, pcie=True)
    assert set(series(run, "pcie_rx_bytes_per_s", "cuda:0")) == {100 * 1024.0}
    assert set(series(run, "pcie_tx_bytes_per_s", "cuda:0")) == {200 * 1024.0}


def test_not_supported_metric_is_null_once_and_not_asked_again(shim_dir, tmp_path):
    run, _, calls = run_profiled(tmp_path, shim_dir, BASE_SCRIPT + "err nvmlDeviceGetPowerUsage 0 3\n")
    assert series(run, "power_watts", "cuda:0") == [None]
    assert calls[("nvmlDeviceGetPowerUsage", 0)] == 1
    assert set(series(run, "power_watts", "cuda:1")) == {70.0}
    assert len(polled_util(run, "cuda:0", 90.0)) >= 5
    assert set(series(run, "temperature_celsius", "cuda:0")) == {41.0}
    assert run.meta["collectors"]["nvml"]["status"] == "ok"


def test_a_failing_metric_is_null_and_the_others_continue(shim_dir, tmp_path):
    run, _, _ = run_profiled(tmp_path, shim_dir, BASE_SCRIPT + "err nvmlDeviceGetTemperature 1 10\n", seconds=0.2)  # TIMEOUT
    temps = series(run, "temperature_celsius", "cuda:1")
    assert len(temps) >= 3 and set(temps) == {None}, "a transient error is null every time, and asked again"
    assert set(series(run, "sm_clock_mhz", "cuda:1")) == {1200.0}


def test_gpu_lost_mid_run_is_recorded_once_and_the_other_gpu_continues(shim_dir, tmp_path):
    run, result, calls = run_profiled(tmp_path, shim_dir, BASE_SCRIPT + "lost 1 5\n")
    assert result["steps"] > 10, "the training loop is unaffected"
    assert series(run, "gpu_lost", "cuda:1") == [1.0]
    assert series(run, "gpu_lost", "cuda:0") == []
    assert polled_util(run, "cuda:1", 95.0) == [30.0, 31.0, 32.0, 33.0, 34.0]
    assert len(polled_util(run, "cuda:0", 90.0)) > 8, "cuda:0 keeps being sampled"
    # The 5th sample's memory read finds the GPU lost (the shim loses it after 5 utilisation reads).
    assert calls[("nvmlDeviceGetUtilizationRates", 1)] == 5, "the lost GPU is not asked again"
    assert calls[("nvmlDeviceGetMemoryInfo", 1)] == 5 + 1  # + 1: its meta at start
    assert calls[("nvmlDeviceGetPowerUsage", 1)] == 4
    assert run.meta["nvml_lost_devices"] == ["cuda:1"]
    assert run.meta["collectors"]["nvml"] == {"status": "ok"}
    assert run.meta["complete"] is True


def test_a_wedged_driver_is_dropped_as_hung_and_training_keeps_its_pace(shim_dir, tmp_path):
    run, result, _ = run_profiled(tmp_path, shim_dir, BASE_SCRIPT + "hang 0 3\n", seconds=2.5, hang_timeout_s=0.5)
    status = run.meta["collectors"]["nvml"]
    assert status["status"] == "dropped" and "hung" in status["reason"]
    # ~5.5 ms per step for 2.5 s: the blocked sampler never stalls the loop.
    assert result["steps"] > 250
    assert len(series(run, "gpu_util_percent", "cuda:1")) >= 2  # sampled before the hang


def test_no_nvml_library_marks_the_collector_unavailable(shim_dir, tmp_path):
    if any(Path(d, "libnvidia-ml.so.1").exists() for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib")):
        pytest.skip("a real NVIDIA driver library is installed system-wide: 'no library' cannot be arranged")
    empty = tmp_path / "empty"
    empty.mkdir()
    run, result, _ = run_profiled(tmp_path, empty)
    status = run.meta["collectors"]["nvml"]
    assert status["status"] == "unavailable"
    assert "not found" in status["reason"] and "\n" not in status["reason"]
    assert result["steps"] > 10
    assert run.meta["complete"] is True
    assert "gpu_util_percent" not in set(run.counters["name"].unique())


def test_nvml_init_error_marks_the_collector_unavailable(shim_dir, tmp_path):
    run, _, _ = run_profiled(tmp_path, shim_dir, BASE_SCRIPT + "init_error 9\n", seconds=0.1)  # DRIVER_NOT_LOADED
    assert run.meta["collectors"]["nvml"] == {"status": "unavailable", "reason": "NVIDIA driver not loaded"}


@pytest.mark.parametrize("visible", ["1", "GPU-00000001"])
def test_cuda_visible_devices_selects_and_renames_gpus(shim_dir, tmp_path, visible):
    run, _, _ = run_profiled(tmp_path, shim_dir, seconds=0.2, env={"CUDA_VISIBLE_DEVICES": visible})
    assert set(run.counters["device"].unique()) - {"cpu"} == {"cuda:0"}
    assert [(d["id"], d["nvml_index"]) for d in run.meta["nvml_devices"]] == [("cuda:0", 1)]
    polled = polled_util(run, "cuda:0", 95.0)
    assert polled[:3] == [30.0, 31.0, 32.0], "physical GPU 1's scripted values"
    assert set(series(run, "power_watts", "cuda:0")) == {70.0}


def test_no_visible_gpu_is_unavailable(shim_dir, tmp_path):
    run, _, _ = run_profiled(tmp_path, shim_dir, seconds=0.1, env={"CUDA_VISIBLE_DEVICES": ""})
    assert run.meta["collectors"]["nvml"]["status"] == "unavailable"


def test_importing_the_collector_does_not_import_pynvml():
    code = "import sys, accelscope, accelscope.collectors.nvml, accelscope.collectors.libnvml; print('pynvml' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_visible_device_parsing():
    uuids = ["GPU-aaa1", "GPU-bbb2", "GPU-aab3"]
    assert visible_nvml_indices(None, 3, []) == [0, 1, 2]
    assert visible_nvml_indices("2,0", 3, []) == [2, 0]
    assert visible_nvml_indices("0,7,1", 3, []) == [0], "CUDA stops at the first invalid entry"
    assert visible_nvml_indices("", 3, []) == []
    assert visible_nvml_indices("-1", 3, []) == []
    assert visible_nvml_indices("GPU-bbb,GPU-aab", 3, uuids) == [1, 2]
    assert visible_nvml_indices("GPU-aa", 3, uuids) == [], "an ambiguous prefix names no GPU"
    assert visible_nvml_indices("MIG-xyz", 3, uuids) == []
