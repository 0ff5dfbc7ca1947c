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


def test_labels_and_sources():
    assert counters.label("hbm_used_bytes") == "HBM used" and counters.label("process_rss_bytes") == "process RSS"
    assert counters.label("my_own_counter") == "my_own_counter", "an unknown counter keeps its name"
    assert counters.UTILISATION_SOURCE == {"gpu_util_percent": "NVML utilisation", "tpu_duty_cycle_percent": "TPU duty cycle"}
    assert all(c.source in counters.SOURCE_LABEL for c in counters.TABLE)


def _rows_of(source: str) -> set[str]:
    return {c.name for c in counters.TABLE if c.source == source}


def test_the_host_sampler_writes_exactly_its_rows(tmp_path):
    import time

    import accelscope

    with accelscope.profile(tmp_path / "r", mode="light", framework="none", live=False, host_interval_s=0.02) as prof:
        time.sleep(0.2)
        prof.step()
    assert _written(Run.open(prof.run_dir)) == _rows_of("host")


def test_nvml_writes_exactly_its_rows_lost_gpu_included(shim_dir, tmp_path):  # noqa: F811
    from tests.collectors.test_nvml import BASE_SCRIPT

    run, _, _ = run_profiled(tmp_path, shim_dir, BASE_SCRIPT + "lost 1 5\n", seconds=0.3, pcie=True)
    assert _written(run) - _rows_of("host") == _rows_of("nvml")


def test_the_tpu_collector_writes_exactly_its_rows_lost_service_included(tmp_path):
    pytest.importorskip("grpc", reason="grpcio is not installed (accelscope[tpu])")
    from accelscope.collectors.tpu import TpuCollector
    from tests.collectors.test_tpu import BASE, FakeLibtpu, train

    server = FakeLibtpu(BASE)
    stopped: list[float] = []

    def stop_server(elapsed: float) -> None:
        if elapsed > 0.3 and not stopped:
            server.server.stop(0).wait(5)
            stopped.append(elapsed)

    try:
        run, _, _ = train(tmp_path, TpuCollector(0.02, address=server.address), 0.6, stop_server)
    finally:
        server.close()
    assert stopped
    assert _written(run) - _rows_of("host") == _rows_of("tpu")
