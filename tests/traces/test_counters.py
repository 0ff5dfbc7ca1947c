"""The table of known counters (traces/counters.py) holds every counter the collectors write:
the host sampler for real, NVML through the scripted libnvidia-ml (tests/collectors), the TPU
collector against its test server."""

from __future__ import annotations

import pytest

from accelscope.traces import counters
from accelscope.traces.run import Run
from tests.collectors.test_nvml import run_profiled, shim_dir  # noqa: F401  (shim_dir: a fixture)


def _written(run: Run) -> set[str]:
    return set(run.counters["name"].unique().to_list())


def test_the_table_has_one_row_per_name_each_with_a_known_unit_and_panel():
    assert len(counters.BY_NAME) == len(counters.TABLE)
    from accelscope.dashboard.metrics_view import PANEL

    for c in counters.TABLE:
        assert c.unit in {"%", "bytes", "W", "°C", "MHz", "bytes/s", "count", "flag", "bitmask"}, c
        assert c.panel in PANEL or counters.HIDDEN in c.roles, c
        assert c.name.endswith({"%": "_percent", "bytes": "_bytes", "W": "_watts", "°C": "_celsius", "MHz": "_mhz", "bytes/s": "_bytes_per_s"}.get(c.unit, "")), "unit in the name"


def test_roles_name_the_utilisation_and_memory_counters():
    assert counters.with_role(counters.UTILISATION) == ("gpu_util_percent", "tpu_duty_cycle_percent")
    assert counters.with_role(counters.MEMORY_USED) == ("memory_used_bytes", "hbm_used_bytes")
    assert counters.with_role(counters.MEMORY_TOTAL) == ("memory_total_bytes", "hbm_total_bytes")


def test_the_host_sampler_writes_only_known_counters(tmp_path):
    import time

    import accelscope

    with accelscope.profile(tmp_path / "r", mode="light", framework="none", live=False, host_interval_s=0.02) as prof:
        time.sleep(0.2)
        prof.step()
    written = _written(Run.open(prof.run_dir))
    assert written and written <= set(counters.BY_NAME)
    assert written >= {c.name for c in counters.TABLE if c.source == "host"} - {"children_count", "children_cpu_percent", "children_rss_bytes"}


def test_nvml_writes_only_known_counters(shim_dir, tmp_path):  # noqa: F811
    run, _, _ = run_profiled(tmp_path, shim_dir, seconds=0.3, pcie=True)
    written = _written(run)
    nvml = {c.name for c in counters.TABLE if c.source == "nvml"}
    assert written <= set(counters.BY_NAME)
    assert written & nvml >= nvml - {"gpu_lost", "throttle_reasons"}


def test_the_tpu_collector_writes_only_known_counters(tmp_path):
    pytest.importorskip("grpc", reason="grpcio is not installed (accelscope[tpu])")
    from accelscope.collectors.tpu import TpuCollector
    from tests.collectors.test_tpu import BASE, FakeLibtpu, train

    server = FakeLibtpu(BASE)
    try:
        run, _, _ = train(tmp_path, TpuCollector(0.02, address=server.address), 0.3)
    finally:
        server.close()
    written = _written(run)
    assert written <= set(counters.BY_NAME)
    assert {"tpu_duty_cycle_percent", "hbm_used_bytes", "hbm_total_bytes"} <= written
