"""The TPU collector against a real gRPC server on loopback that speaks libtpu's runtime
metrics protocol (handlers built from the same descriptor as the client) and serves
scripted values, changing with every call."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent import futures

import pytest

grpc = pytest.importorskip("grpc", reason="grpcio is not installed (accelscope[tpu])")

import accelscope  # noqa: E402
from accelscope.collectors import libtpu  # noqa: E402
from accelscope.collectors.tpu import TpuCollector, default_address, tpu_present  # noqa: E402
from accelscope.traces.run import Run  # noqa: E402

GIB = 2**30
DUTY, USED, TOTAL = libtpu.DUTY_CYCLE_PERCENT, libtpu.HBM_USAGE_BYTES, libtpu.HBM_TOTAL_BYTES

# metric -> call number -> [(device id, value)]; floats are sent as gauge.as_double and
# ints as gauge.as_int, as libtpu does (duty cycle double, HBM bytes int).
Script = dict[str, Callable[[int], list[tuple[int, float | int]]]]
BASE: Script = {
    DUTY: lambda n: [(0, 10.0 + n), (1, 50.0 + n)],
    USED: lambda n: [(0, (n + 1) * GIB), (1, 2 * GIB)],
    TOTAL: lambda n: [(0, 16 * GIB), (1, 16 * GIB)],
}


class FakeLibtpu:
    """libtpu's RuntimeMetricService on 127.0.0.1, serving ``script``.

    ``list_supported=False`` answers ListSupportedMetrics with UNIMPLEMENTED (older
    libtpu); a metric outside the script is NOT_FOUND; metrics in ``garbage`` are answered
    with bytes that are no MetricResponse; after ``hang_after`` GetRuntimeMetric calls every
    handler blocks until the server is closed.
    """

    def __init__(self, script: Script, *, list_supported: bool = True, garbage: frozenset[str] = frozenset(),
                 hang_after: int | None = None, port: int = 0):
        self.script = script
        self.list_supported = list_supported
        self.garbage = garbage
        self.hang_after = hang_after
        self.calls: dict[str, int] = {}
        self.total_calls = 0
        self._lock = threading.Lock()
        self._released = threading.Event()
        m = libtpu.messages()
        self.m = m

        def serialize(response):
            return response if isinstance(response, bytes) else response.SerializeToString()

        handlers = {
            "GetRuntimeMetric": grpc.unary_unary_rpc_method_handler(
                self._get, request_deserializer=m.MetricRequest.FromString, response_serializer=serialize),
            "ListSupportedMetrics": grpc.unary_unary_rpc_method_handler(
                self._list, request_deserializer=m.ListSupportedMetricsRequest.FromString, response_serializer=serialize),
        }
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(libtpu.SERVICE, handlers),))
        # libtpu's server and tpu-info's client use gRPC local credentials.
        self.port = self.server.add_secure_port(f"127.0.0.1:{port}", grpc.local_server_credentials())
        self.address = f"127.0.0.1:{self.port}"
        self.server.start()

    def _get(self, request, context):
        with self._lock:
            self.total_calls += 1
            hang = self.hang_after is not None and self.total_calls > self.hang_after
            n = self.calls.get(request.metric_name, 0)
            self.calls[request.metric_name] = n + 1
        if hang:
            self._released.wait(30)
            context.abort(grpc.StatusCode.UNAVAILABLE, "shutting down")
        if request.metric_name in self.garbage:
            return b"\xff\xff\xff\xff\x0f not a protobuf"
        values = self.script.get(request.metric_name)
        if values is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"metric {request.metric_name} not found")
        m = self.m
        points = []
        for device, value in values(n):
            gauge = m.Gauge(as_double=value) if isinstance(value, float) else m.Gauge(as_int=value)
            attr = m.Attribute(key="device-id", value=m.AttrValue(int_attr=device))
            points.append(m.Metric(attribute=attr, gauge=gauge))
        return m.MetricResponse(metric=m.TPUMetric(name=request.metric_name, metrics=points))

    def _list(self, request, context):
        if not self.list_supported:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not found")
        m = self.m
        return m.ListSupportedMetricsResponse(supported_metric=[m.SupportedMetric(metric_name=k) for k in self.script])

    def close(self) -> None:
        self._released.set()
        self.server.stop(None).wait(5)


@pytest.fixture
def serve():
    servers: list[FakeLibtpu] = []

    def start(script: Script = BASE, **kwargs) -> FakeLibtpu:
        server = FakeLibtpu(script, **kwargs)
        servers.append(server)
        return server

    yield start
    for s in servers:
        s.close()


def train(tmp_path, collector: TpuCollector, seconds: float, during: Callable[[float], None] | None = None):
    """A "training loop" of short steps under accelscope.profile; ``during(elapsed)`` is
    called after every step. Returns the run, the number of steps and the longest step."""
    steps, longest = 0, 0.0
    with accelscope.profile(tmp_path / "run", mode="light", live=False, collectors=[collector]) as prof:
        t0 = last = time.monotonic()
        while (now := time.monotonic()) - t0 < seconds:
            sum(range(20000))
            time.sleep(0.005)
            prof.step()
            steps += 1
            now = time.monotonic()
            longest = max(longest, now - last)
            last = now
            if during is not None:
                during(now - t0)
    return Run.open(prof.run_dir), steps, longest


def series(run: Run, name: str, device: str) -> list:
    c = run.counters
    return c.filter((c["name"] == name) & (c["device"] == device)).sort("time_ns")["value"].to_list()


def tpu_names(run: Run) -> set[str]:
    c = run.counters
    return set(c.filter(c["device"].str.starts_with("tpu:"))["name"].unique())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------
def test_records_each_chips_scripted_values_in_order(serve, tmp_path):
    server = serve()
    run, steps, _ = train(tmp_path, TpuCollector(0.02, address=server.address), 0.5)
    assert steps > 20
    assert run.meta["collectors"]["tpu"] == {"status": "ok"}
    assert run.meta["tpu_metrics_address"] == server.address
    assert run.meta["tpu_devices"] == [
        {"id": "tpu:0", "device_id": 0, "hbm_total_bytes": 16 * GIB},
        {"id": "tpu:1", "device_id": 1, "hbm_total_bytes": 16 * GIB},
    ]
    for device, base in (("tpu:0", 10.0), ("tpu:1", 50.0)):
        duty = series(run, "tpu_duty_cycle_percent", device)
        assert len(duty) >= 8, "about 25 samples in 0.5 s at 50 Hz"
        # Call 0 is start's probe; every later answer is recorded once, in order.
        assert duty == [base + n for n in range(1, len(duty) + 1)]
        assert set(series(run, "hbm_total_bytes", device)) == {16.0 * GIB}
    used0 = series(run, "hbm_used_bytes", "tpu:0")
    assert used0 == [float((n + 1) * GIB) for n in range(1, len(used0) + 1)]
    assert set(series(run, "hbm_used_bytes", "tpu:1")) == {2.0 * GIB}
    assert tpu_names(run) == {"tpu_duty_cycle_percent", "hbm_used_bytes", "hbm_total_bytes"}
    assert run.meta["complete"] is True


def test_no_service_is_unavailable_once_and_training_continues(tmp_path, caplog):
    address = f"127.0.0.1:{free_port()}"
    caplog.set_level(logging.DEBUG, logger="accelscope")
    run, steps, _ = train(tmp_path, TpuCollector(0.02, address=address, timeout_s=0.5), 0.3)
    status = run.meta["collectors"]["tpu"]
    assert status["status"] == "unavailable"
    assert address in status["reason"] and "\n" not in status["reason"]
    assert steps > 10
    assert run.meta["complete"] is True
    assert tpu_names(run) == set()
    about_tpu = [r for r in caplog.records if "tpu" in r.getMessage().lower()]
    assert len(about_tpu) == 1, [r.getMessage() for r in about_tpu]


@pytest.mark.parametrize("list_supported", [True, False], ids=["listed", "not-found"])
def test_a_metric_the_service_does_not_export_is_null_once_and_the_others_go_on(serve, tmp_path, list_supported):
    script = {k: v for k, v in BASE.items() if k != USED}
    server = serve(script, list_supported=list_supported)
    run, _, _ = train(tmp_path, TpuCollector(0.02, address=server.address), 0.4)
    assert run.meta["collectors"]["tpu"] == {"status": "ok"}
    assert series(run, "hbm_used_bytes", "tpu:0") == [None]
    assert series(run, "hbm_used_bytes", "tpu:1") == [None]
    assert server.calls.get(USED, 0) == (0 if list_supported else 1), "not asked again"
    assert list(run.meta["tpu_unsupported_metrics"]) == ["hbm_used_bytes"]
    duty = series(run, "tpu_duty_cycle_percent", "tpu:1")
    assert len(duty) >= 8 and None not in duty
    assert set(series(run, "hbm_total_bytes", "tpu:0")) == {16.0 * GIB}


def test_service_stopping_mid_run_is_recorded_once_and_training_continues(serve, tmp_path):
    server = serve()
    stopped_at: list[float] = []

    def stop_server(elapsed: float) -> None:
        if elapsed > 0.3 and not stopped_at:
            server.server.stop(0).wait(5)
            stopped_at.append(elapsed)

    run, steps, longest = train(tmp_path, TpuCollector(0.02, address=server.address), 1.0, stop_server)
    assert stopped_at and steps > 40 and longest < 0.5
    assert run.meta["collectors"]["tpu"] == {"status": "ok"}, "a lost service is not a failed collector"
    assert run.meta["complete"] is True
    for device in ("tpu:0", "tpu:1"):
        assert series(run, "tpu_lost", device) == [1.0]
    lost_ns = run.meta["tpu_lost"]["time_ns"]
    assert "nothing answers" in run.meta["tpu_lost"]["reason"]
    c = run.counters
    duty = c.filter((c["name"] == "tpu_duty_cycle_percent") & (c["device"] == "tpu:0")).sort("time_ns")
    assert duty["time_ns"].max() <= lost_ns, "no sampling after the loss (the next probe is 1 s later)"
    values = [v for v in duty["value"].to_list() if v is not None]
    assert len(values) >= 5 and values == [10.0 + n for n in range(1, len(values) + 1)]


def test_service_coming_back_on_the_same_port_resumes_sampling(serve, tmp_path):
    server = serve()
    events: list[str] = []

    def restart(elapsed: float) -> None:
        if elapsed > 0.3 and not events:
            server.server.stop(0).wait(5)
            events.append("stopped")
        elif elapsed > 0.6 and events == ["stopped"]:
            serve(port=server.port)
            events.append("restarted")

    run, _, _ = train(tmp_path, TpuCollector(0.02, address=server.address), 2.5, restart)
    assert events == ["stopped", "restarted"]
    assert series(run, "tpu_lost", "tpu:0") == [1.0, 0.0]
    c = run.counters
    back_ns = c.filter((c["name"] == "tpu_lost") & (c["device"] == "tpu:0") & (c["value"] == 0.0))["time_ns"].item()
    after = c.filter((c["name"] == "tpu_duty_cycle_percent") & (c["device"] == "tpu:0") & (c["time_ns"] > back_ns))
    values = after.sort("time_ns")["value"].to_list()
    assert len(values) >= 5, "sampling resumed at full rate"
    assert values[:3] == [10.0 + n for n in range(1, 4)], "the new server's script, from its first answer on"
    assert run.meta["collectors"]["tpu"] == {"status": "ok"}


def test_a_hanging_service_does_not_block_training(serve, tmp_path):
    # Answers start's probe (3 calls) and one sample, then every handler blocks; a step
    # that waited on a call would take the whole 1 s deadline.
    server = serve(hang_after=3 + 3)
    collector = TpuCollector(0.02, address=server.address, timeout_s=1.0)
    t0 = time.monotonic()
    run, steps, longest = train(tmp_path, collector, 1.5)
    total = time.monotonic() - t0
    assert longest < 0.5, f"a training step took {longest:.3f} s: it waited on the service"
    assert steps > 60
    assert total < 1.5 + 4.0, "leaving profile() waits at most for the call in flight"
    assert run.meta["collectors"]["tpu"] == {"status": "ok"}, "its thread stopped in time: not dropped"
    assert series(run, "tpu_duty_cycle_percent", "tpu:0")[0] == 11.0


def test_a_service_that_stops_answering_is_lost_after_three_silent_samples(serve, tmp_path):
    # Start's probe (3 calls) and three samples are answered: the first sample asks all
    # three metrics, later ones skip hbm_total_bytes (asked every 20th sample).
    server = serve(hang_after=3 + 3 + 2 + 2)
    run, _, _ = train(tmp_path, TpuCollector(0.02, address=server.address, timeout_s=0.1), 1.5)
    duty = series(run, "tpu_duty_cycle_percent", "tpu:0")
    assert duty == [11.0, 12.0, 13.0, None, None, None], "calls past the deadline are null samples"
    assert series(run, "tpu_lost", "tpu:0") == [1.0]
    assert "no answer" in run.meta["tpu_lost"]["reason"]
    assert run.meta["collectors"]["tpu"] == {"status": "ok"}


def test_a_service_that_never_answers_is_unavailable_after_one_deadline(serve, tmp_path):
    server = serve(hang_after=0)
    t0 = time.monotonic()
    run, steps, _ = train(tmp_path, TpuCollector(0.02, address=server.address, timeout_s=0.2), 0.2)
    assert time.monotonic() - t0 < 0.2 + 0.2 + 1.0, "start waited one deadline, not more"
    assert server.total_calls == 1, "the first silent call settles it"
    status = run.meta["collectors"]["tpu"]
    assert status["status"] == "unavailable" and "within 0.2 s" in status["reason"]
    assert steps > 5
    assert tpu_names(run) == set()


def test_garbage_responses_are_null_samples_and_the_other_metrics_go_on(serve, tmp_path):
    server = serve(garbage=frozenset({USED}))
    run, _, _ = train(tmp_path, TpuCollector(0.02, address=server.address), 0.4)
    assert run.meta["collectors"]["tpu"] == {"status": "ok"}
    used = series(run, "hbm_used_bytes", "tpu:0")
    assert len(used) >= 8 and set(used) == {None}, "asked every time, null every time"
    assert server.calls[USED] == len(used) + 1
    duty = series(run, "tpu_duty_cycle_percent", "tpu:0")
    assert duty == [10.0 + n for n in range(1, len(duty) + 1)]
    assert "tpu_lost" not in tpu_names(run)


def test_importing_and_constructing_the_collector_loads_no_grpc():
    code = (
        "import sys, accelscope, accelscope.collectors.tpu as t, accelscope.collectors.libtpu\n"
        "t.TpuCollector(); t.tpu_present()\n"
        "print('grpc' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_without_grpc_the_collector_is_unavailable_naming_the_extra(tmp_path):
    code = (
        "import sys; sys.modules['grpc'] = None\n"  # as if grpcio were not installed
        "import json, accelscope\n"
        "from accelscope.collectors.tpu import TpuCollector\n"
        "with accelscope.profile(sys.argv[1], mode='light', live=False, collectors=[TpuCollector()]) as prof:\n"
        "    prof.step()\n"
        "print(json.dumps(accelscope.traces.run.Run.open(prof.run_dir).meta['collectors']['tpu']))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run")], capture_output=True, text=True, check=True)
    status = json.loads(out.stdout.strip().splitlines()[-1])
    assert status["status"] == "unavailable"
    assert "accelscope[tpu]" in status["reason"]


def test_address_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("ACCELSCOPE_TPU_METRICS_ADDR", raising=False)
    monkeypatch.delenv("TPU_RUNTIME_METRICS_PORTS", raising=False)
    assert default_address() == "localhost:8431"
    monkeypatch.setenv("TPU_RUNTIME_METRICS_PORTS", "8435,8436")
    assert default_address() == "localhost:8435"
    monkeypatch.setenv("ACCELSCOPE_TPU_METRICS_ADDR", "127.0.0.1:9000")
    assert default_address() == "127.0.0.1:9000"
    assert TpuCollector(address="127.0.0.1:1").address == "127.0.0.1:1"


def test_tpu_presence_from_pci_ids_and_device_nodes(tmp_path, monkeypatch):
    monkeypatch.delenv("ACCELSCOPE_TPU_METRICS_ADDR", raising=False)
    pci, dev = tmp_path / "pci", tmp_path / "dev"
    dev.mkdir()
    for name, vendor, device in (("0000:00:04.0", "0x1ae0", "0x0042"), ("0000:00:05.0", "0x8086", "0x0063")):
        (pci / name).mkdir(parents=True)
        (pci / name / "vendor").write_text(vendor + "\n")
        (pci / name / "device").write_text(device + "\n")
    assert not tpu_present(str(pci), str(dev)), "Google's gVNIC and another vendor's device are no TPU"
    (pci / "0000:00:06.0").mkdir()
    (pci / "0000:00:06.0" / "vendor").write_text("0x1ae0\n")
    (pci / "0000:00:06.0" / "device").write_text("0x0063\n")  # v5e
    assert tpu_present(str(pci), str(dev))
    assert not tpu_present(str(tmp_path / "none"), str(dev))
    (dev / "accel0").write_text("")
    assert tpu_present(str(tmp_path / "none"), str(dev))
    monkeypatch.setenv("ACCELSCOPE_TPU_METRICS_ADDR", "127.0.0.1:1")
    assert tpu_present(str(tmp_path / "none"), str(tmp_path / "none"))


def test_constant_hbm_total_is_asked_far_less_often_than_the_live_metrics(serve, tmp_path):
    server = serve()
    train(tmp_path, TpuCollector(0.02, address=server.address), 0.6)
    assert server.calls[DUTY] >= 10
    assert server.calls[TOTAL] <= 1 + server.calls[DUTY] // 20 + 1


def test_profile_starts_the_collector_by_itself_when_the_service_address_is_set(serve, tmp_path, monkeypatch):
    server = serve()
    monkeypatch.setenv("ACCELSCOPE_TPU_METRICS_ADDR", server.address)
    with accelscope.profile(tmp_path / "auto", mode="light", live=False, host_interval_s=0.02) as prof:
        time.sleep(0.3)
        prof.step()
    run = Run.open(prof.run_dir)
    assert run.meta["collectors"]["tpu"] == {"status": "ok"}
    assert len(series(run, "tpu_duty_cycle_percent", "tpu:0")) >= 3
