"""The Device and host metrics section on runs recorded by the real collectors: NVML through
the scripted libnvidia-ml (tests/collectors/nvml_shim.c, two GPUs), libtpu's metrics service
on loopback gRPC (two chips), and the host sampler."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

pytest.importorskip("plotly", reason="the dashboard extra is needed")

from accelscope.dashboard.metrics_view import GIB, MIB, build_metrics  # noqa: E402
from accelscope.dashboard.sections import metrics as F  # noqa: E402
from accelscope.traces.run import Run  # noqa: E402
from tests.collectors.test_nvml import BASE_SCRIPT, run_profiled, shim_dir  # noqa: E402,F401  (shim_dir: a fixture)


@pytest.fixture(scope="module")
def gpu_run(shim_dir, tmp_path_factory) -> Run:  # noqa: F811
    run, _, _ = run_profiled(tmp_path_factory.mktemp("gpu"), shim_dir, seconds=0.4, pcie=True)
    return run


@pytest.fixture(scope="module")
def tpu_run(tmp_path_factory) -> Run:
    pytest.importorskip("grpc", reason="grpcio is not installed (accelscope[tpu])")
    from accelscope.collectors.tpu import TpuCollector
    from tests.collectors.test_tpu import BASE, FakeLibtpu, train

    server = FakeLibtpu(BASE)
    try:
        run, _, _ = train(tmp_path_factory.mktemp("tpu"), TpuCollector(0.02, address=server.address), 0.4)
    finally:
        server.close()
    return run


def _metrics(run: Run):
    origin = min(run.meta["start_ns"], int(run.counters["time_ns"].min()))
    return build_metrics(run.counters, origin)


def _raw(run: Run, name: str, device: str) -> np.ndarray:
    c = run.counters.filter((pl.col("name") == name) & (pl.col("device") == device)).sort("time_ns")
    return c["value"].to_numpy()


def test_gpu_counters_get_accelerator_panels_before_the_hosts(gpu_run):
    m = _metrics(gpu_run)
    assert [p.key for p in m.panels] == ["device_util", "device_memory", "power", "temperature", "clock", "pcie", "cpu", "memory"]
    labels = {s.group: [x.label for x in m.series if x.group == s.group] for s in m.series}
    assert labels["device_util"] == ["cuda:0 utilisation", "cuda:0 memory busy", "cuda:1 utilisation", "cuda:1 memory busy"]
    assert labels["power"] == ["cuda:0 power", "cuda:1 power"]
    assert "this process" in labels["cpu"]
    # The bitmask of throttle reasons is no line to plot.
    assert not any(s.name == "throttle_reasons" for s in m.series)


def test_gpu_memory_is_shown_in_gib_with_its_total_as_a_capacity_line(gpu_run):
    m = _metrics(gpu_run)
    assert m.units["device_memory"] == "GiB"  # 16 GiB cards
    used = next(s for s in m.series if s.name == "memory_used_bytes" and s.device == "cuda:0")
    total = next(s for s in m.series if s.name == "memory_total_bytes" and s.device == "cuda:0")
    np.testing.assert_allclose(used.y, _raw(gpu_run, "memory_used_bytes", "cuda:0") / GIB)
    assert set(total.y) == {16.0} and total.capacity and not used.capacity
    fig = F.metrics_figure(m, (0.0, 500.0))
    by_name = {t.name: t for t in fig.data}
    assert by_name["cuda:0 total"].line.dash == "dash" and by_name["cuda:0 used"].line.dash == "solid"
    # A colour per card, a line style per counter.
    assert by_name["cuda:0 total"].line.color == by_name["cuda:0 used"].line.color == by_name["cuda:0 this process"].line.color
    assert by_name["cuda:1 used"].line.color != by_name["cuda:0 used"].line.color
    assert by_name["cuda:0 this process"].line.dash == by_name["cuda:1 this process"].line.dash == "dot"


def test_each_panel_has_its_own_axis_titled_with_its_unit(gpu_run):
    m = _metrics(gpu_run)
    fig = F.metrics_figure(m, (0.0, 500.0))
    titles = [fig.layout[f"yaxis{'' if i == 1 else i}"].title.text for i in range(1, len(m.panels) + 1)]
    assert titles[:6] == ["Accelerator busy (%)", "Accelerator memory (GiB)", "Power (W)", "Temperature (°C)", "Clocks (MHz)", "PCIe (MB/s)"]
    power = next(t for t in fig.data if t.name == "cuda:1 power")
    assert power.yaxis == "y3" and set(power.y) == {70.0}  # the shim's 70,000 mW
    pcie = next(t for t in fig.data if t.name == "cuda:0 PCIe rx")
    # The shim reports 100 KB/s (NVML's unit); the panel shows MB/s.
    np.testing.assert_allclose(pcie.y, _raw(gpu_run, "pcie_rx_bytes_per_s", "cuda:0") / 1e6)


def test_panels_share_the_timelines_time_axis(gpu_run):
    fig = F.metrics_figure(_metrics(gpu_run), (0.0, 432.5))
    axes = [k for k in fig.layout.to_plotly_json() if k.startswith("xaxis")]
    assert len(axes) == 8
    assert list(fig.layout.xaxis.range) == [0.0, 432.5] and fig.layout.meta["x_range"] == [0.0, 432.5]
    assert all(fig.layout[a].matches == "x" for a in axes if a != "xaxis")
    assert fig.layout.margin.l == F.TIME_MARGIN["l"] and fig.layout.margin.r == F.TIME_MARGIN["r"]
    # Only the bottom panel carries tick labels and the axis title.
    assert [bool(fig.layout[a].showticklabels) for a in sorted(axes, key=lambda a: int(a[5:] or 1))] == [False] * 7 + [True]


def test_tpu_duty_cycle_and_hbm_join_the_accelerator_panels(tpu_run):
    m = _metrics(tpu_run)
    assert [p.key for p in m.panels][:2] == ["device_util", "device_memory"]
    labels = [s.label for s in m.series if s.group in ("device_util", "device_memory")]
    assert labels == ["tpu:0 duty cycle", "tpu:0 HBM used", "tpu:0 HBM total", "tpu:1 duty cycle", "tpu:1 HBM used", "tpu:1 HBM total"] or \
        labels == ["tpu:0 duty cycle", "tpu:1 duty cycle", "tpu:0 HBM used", "tpu:0 HBM total", "tpu:1 HBM used", "tpu:1 HBM total"]
    duty = next(s for s in m.series if s.label == "tpu:1 duty cycle")
    np.testing.assert_allclose(duty.y, _raw(tpu_run, "tpu_duty_cycle_percent", "tpu:1"))
    assert m.units["device_memory"] == "GiB"


def test_a_cpu_only_run_has_host_panels_only(recorded_run):
    m = _metrics(Run.open(recorded_run))
    assert {p.key for p in m.panels} <= {"cpu", "memory", "count"} and {"cpu", "memory"} <= {p.key for p in m.panels}
    rss = next(s for s in m.series if s.name == "process_rss_bytes")
    divisor = GIB if m.units["memory"] == "GiB" else MIB
    np.testing.assert_allclose(rss.y, _raw(Run.open(recorded_run), "process_rss_bytes", "cpu") / divisor, rtol=1e-5, atol=1e-3)


def test_unknown_counters_are_drawn_by_unit_not_dropped():
    counters = pl.DataFrame(
        {"name": ["fan_speed_percent", "fan_speed_percent", "widgets"], "device": ["cuda:0", "cuda:0", "cpu"],
         "time_ns": [0, 1_000_000, 0], "value": [10.0, 20.0, 3.0], "rank": [0, 0, 0]}
    )
    m = build_metrics(counters, 0)
    assert [(s.group, s.label, s.y.tolist()) for s in m.series] == [("other_percent", "fan_speed_percent (cuda:0)", [10.0, 20.0]), ("other", "widgets", [3.0])]


def test_a_sample_that_could_not_be_read_is_a_gap_in_its_line():
    counters = pl.DataFrame(
        {"name": ["power_watts"] * 3, "device": ["cuda:0"] * 3, "time_ns": [0, 1_000_000, 2_000_000], "value": [100.0, None, 120.0], "rank": [0, 0, 0]}
    )
    (s,) = build_metrics(counters, 0).series
    assert s.x_ms.tolist() == [0.0, 1.0, 2.0] and s.y[0] == 100.0 and np.isnan(s.y[1]) and s.y[2] == 120.0
    assert F.metrics_figure(build_metrics(counters, 0), (0.0, 2.0)).data[0].connectgaps in (None, False)
