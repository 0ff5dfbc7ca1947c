"""Out-of-memory forensics while recording (oom_capture.py, api.Profiler.failed): a real CPU
torch loop in full mode that runs out of memory, one that raises torch.OutOfMemoryError, the
CUDA allocator's summary and OOM observer through a fake of their one door (torch_cuda.call),
and recording that fails without ever touching the training's own exception."""

from __future__ import annotations

import json
import logging

import polars as pl
import pytest

import accelscope
from accelscope import oom_capture
from accelscope.cli import main
from accelscope.collectors import torch_cuda
from accelscope.schedule import Schedule
from accelscope.traces.run import Run
from accelscope.traces.schema import STEP

torch = pytest.importorskip("torch", reason="the torch extra is needed to record allocator events")

KEPT = 262144  # floats: each step keeps a 1 MiB tensor made by torch.ones
SCHEDULE = Schedule(skip_first=1, wait=0, warmup=1, active=8, repeat=1)  # steps 2-9 traced, in one window
TOO_MUCH = 2**60  # bytes: beyond any address space (x86-64's 128 TiB, 5-level paging's 128 PiB), so every allocator refuses it
CUDA_MESSAGE = ("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.10 GiB of which 1.23 GiB is free. "
                "Of the allocated memory 75.20 GiB is allocated by PyTorch, and 1.20 GiB is reserved by PyTorch but unallocated.")


def _loop(out, fail_at: int, fail, mode: str = "full", steps: int = 10):
    """A CPU loop keeping 1 MiB per step (``torch.ones`` inside ``record_function("keep")``)
    whose step ``fail_at`` calls ``fail()``; returns (the exception raised inside, the one
    that came out of ``accelscope.profile``, the profiler)."""
    kept, inside = [], []
    x = torch.randn(64, 64)
    with pytest.raises(Exception) as outside:
        with accelscope.profile(out, framework="torch", mode=mode, live=False, schedule=SCHEDULE) as prof:
            for step in prof.iter(range(steps)):
                (x @ x).relu().sum()
                with torch.profiler.record_function("keep"):
                    kept.append(torch.ones(KEPT))
                if step == fail_at:
                    try:
                        fail()
                    except BaseException as exc:
                        inside.append(exc)
                        raise
                prof.step()
    return inside[0], outside.value, prof


def _analyze_text(run_dir, capsys) -> list[str]:
    assert main(["analyze", str(run_dir)]) == 0
    return [line for line in capsys.readouterr().out.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def cpu_oom(tmp_path_factory):
    """A real CPU allocator failure in step 6 of a full-mode run: torch.empty of 1 EiB."""
    return _loop(tmp_path_factory.mktemp("cpu-oom") / "run", 6, lambda: torch.empty(TOO_MUCH, dtype=torch.uint8))


def test_torch_cpu_allocator_failure_is_a_runtime_error_not_out_of_memory_error():
    """What the CPU allocator raises, as torch 2.13 does: the reason a CPU out-of-memory error is
    told by its message (a RuntimeError from DefaultCPUAllocator), not by its class."""
    with pytest.raises(RuntimeError) as got:
        torch.empty(TOO_MUCH, dtype=torch.uint8)
    assert not isinstance(got.value, torch.OutOfMemoryError)
    assert oom_capture.kind(got.value) == "torch_cpu"


def test_a_real_cpu_out_of_memory_error_propagates_unchanged(cpu_oom):
    inside, outside, _ = cpu_oom
    assert outside is inside, "the same exception object, neither swallowed nor replaced"
    assert "DefaultCPUAllocator" in str(outside)


def test_the_run_records_the_failure_at_its_step(cpu_oom):
    _, _, prof = cpu_oom
    meta = json.loads((prof.run_dir / "meta.json").read_text())
    oom = meta["oom"]
    assert (oom["step"], oom["device"], oom["kind"], oom["rank"]) == (6, "cpu", "torch_cpu", 0)
    assert oom["requested_bytes"] == TOO_MUCH, "parsed from 'you tried to allocate N bytes'"
    assert oom["allocator"] is None and oom["observer"] is None, "no CUDA here"
    assert "DefaultCPUAllocator" in oom["message"] and meta["training_error"].startswith("RuntimeError")
    assert meta["start_ns"] < oom["time_ns"] <= meta["end_ns"] and meta["complete"] is True


def test_the_open_window_keeps_the_failing_step_and_its_allocations(cpu_oom):
    _, _, prof = cpu_oom
    run = Run.open(prof.run_dir)
    assert run.meta["traced_steps"]["torch_profiler"] == [[2, 6]], "the window open at the failure, up to the failing step"
    steps = run.events.filter(pl.col("kind") == STEP).sort("start_ns")
    assert steps.height == 6, "steps 0-5 ended; step 6 never did"
    step6_from = int(steps["start_ns"][-1] + steps["dur_ns"][-1])
    mem = run.memory.filter((pl.col("time_ns") >= step6_from) & (pl.col("time_ns") <= run.meta["oom"]["time_ns"]))
    assert (mem["bytes"] == KEPT * 4).sum() == 1, "step 6's 1 MiB, allocated before the failure, is in the memory table"
    ops = run.events.filter((pl.col("kind") == "cpu_op") & (pl.col("start_ns") >= step6_from))
    assert "aten::ones" in ops["name"].to_list(), "and so are the failing step's ops"


def test_analyze_opens_with_the_failure_and_what_held_the_memory(cpu_oom, capsys):
    _, _, prof = cpu_oom
    first = _analyze_text(prof.run_dir, capsys)[0]
    assert first == "out of memory at step 6 on cpu: tried to allocate 1.0 EiB; held at least 5.0 MiB, most under aten::ones (5.0 MiB)", \
        "steps 2-6 of the window kept 1 MiB each under aten::ones: what was live at the failure"


def test_analyze_json_has_the_failure_and_a_gate_on_it_fails(cpu_oom, capsys):
    _, _, prof = cpu_oom
    assert main(["analyze", str(prof.run_dir), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["out_of_memory"] == 1 and (doc["oom"]["step"], doc["oom"]["device"], doc["oom"]["live_bytes"]) == (6, "cpu", 5 * KEPT * 4)
    assert doc["oom"]["held_by"][0] == {"op": "aten::ones", "bytes": 5 * KEPT * 4, "allocations": 5}
    assert main(["analyze", str(prof.run_dir), "--fail-if", "out_of_memory>0"]) == 1


def test_torch_out_of_memory_error_is_recorded_and_propagates(tmp_path, monkeypatch, capsys):
    """The real exception type, raised by the loop at step 7 (no GPU here to exhaust)."""
    monkeypatch.setattr(torch_cuda, "call", lambda path, *a: torch_cuda.NO_CUDA)  # whatever this machine has
    error = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    def fail():
        raise error

    inside, outside, prof = _loop(tmp_path / "run", 7, fail)
    assert outside is inside is error
    assert isinstance(outside, torch.cuda.OutOfMemoryError), "one class"
    oom = Run.open(prof.run_dir).meta["oom"]
    assert (oom["step"], oom["kind"], oom["error_type"], oom["device"]) == (7, "torch", "torch.OutOfMemoryError", None)
    assert oom["requested_bytes"] == 2 * 2**30
    first = _analyze_text(prof.run_dir, capsys)[0]
    assert first.startswith("out of memory at step 7: tried to allocate 2.0 GiB; held at least 6.0 MiB on cpu, most under aten::ones")


class FakeCuda:
    """torch.cuda as the CUDA allocator of one GPU would answer, behind torch_cuda.call."""

    STATS = {"allocated_bytes.all.current": 13 * 2**30, "allocated_bytes.all.peak": 14 * 2**30, "reserved_bytes.all.current": 15 * 2**30,
             "reserved_bytes.all.peak": 15 * 2**30, "num_alloc_retries": 3, "num_ooms": 1, "active_bytes.all.current": 1}

    def __init__(self, initialised_at_call: int = 0):
        self.observers = []
        self.calls = []
        self.initialised_at_call = initialised_at_call

    def __call__(self, path, *args):
        self.calls.append(path)
        if path == "cuda.is_available":
            return True
        if path == "cuda.is_initialized":
            return self.calls.count(path) > self.initialised_at_call
        if path == "cuda.current_device":
            return 0
        if path == "cuda.memory_stats":
            return dict(self.STATS) if args == (0,) else torch_cuda.NA
        if path == "cuda.mem_get_info":
            return (2**29, 80 * 2**30)
        if path == "_C._cuda_attach_out_of_memory_observer":
            self.observers.append(args[0])
            return None
        raise AssertionError(f"unexpected torch.{path}")

    def oom(self, alloc: int):
        """The allocator failing an allocation of ``alloc`` bytes: it calls the observers first."""
        for cb in self.observers:
            cb(0, alloc, 80 * 2**30, 2**29)  # torch passes the device's total (or fraction limit) third


@pytest.fixture
def fake_cuda(monkeypatch):
    fake = FakeCuda(initialised_at_call=2)  # CUDA initialised by the loop's second step, not before
    monkeypatch.setattr(torch_cuda, "call", fake)
    monkeypatch.setattr(torch_cuda, "_attached", False)
    monkeypatch.setattr(torch_cuda, "_last", None)
    return fake


def test_the_cuda_allocator_summary_and_the_observer_are_recorded(tmp_path, fake_cuda, capsys):
    requested = 2 * 2**30 + 12345  # the message rounds it to 2.00 GiB; the observer has it exact

    def fail():
        fake_cuda.oom(requested)
        raise torch.OutOfMemoryError(CUDA_MESSAGE)

    _, _, prof = _loop(tmp_path / "run", 3, fail, mode="light")
    assert len(fake_cuda.observers) == 1, "attached once, after CUDA was initialised (attaching would initialise it)"
    meta = Run.open(prof.run_dir).meta
    oom = meta["oom"]
    assert (oom["step"], oom["device"], oom["requested_bytes"]) == (3, "cuda:0", requested)
    assert oom["observer"] == {"device": 0, "requested_bytes": requested, "device_limit_bytes": 80 * 2**30, "device_free_bytes": 2**29}
    assert oom["allocator"] == {"allocated_bytes": 13 * 2**30, "allocated_peak_bytes": 14 * 2**30, "reserved_bytes": 15 * 2**30,
                                "reserved_peak_bytes": 15 * 2**30, "num_alloc_retries": 3, "num_ooms": 1,
                                "device_total_bytes": 80 * 2**30, "device_free_bytes": 2**29}
    assert meta["start_ns"] < oom["time_ns"] < meta["end_ns"], "the observer's moment, on the run's clock"
    lines = _analyze_text(prof.run_dir, capsys)
    assert lines[0].startswith("out of memory at step 3 on cuda:0: tried to allocate 2.0 GiB; held 13.0 GiB")
    assert lines[1] == "allocator at the failure: 13.0 GiB allocated, 15.0 GiB reserved of 80.0 GiB (512.0 MiB free); 3 allocation retries (cache flushes) so far"


def test_an_observer_firing_in_an_earlier_step_is_not_this_failure(tmp_path, fake_cuda):
    """cuDNN retries an algorithm after an OOM it catches: the observer fires, training goes on."""

    def fail():
        raise torch.OutOfMemoryError(CUDA_MESSAGE)

    kept = []
    with pytest.raises(torch.OutOfMemoryError):
        with accelscope.profile(tmp_path / "run", framework="torch", mode="light", live=False) as prof:
            for step in range(5):
                kept.append(step)
                if step == 2:
                    fake_cuda.oom(4096)  # caught inside the op; no error
                if step == 4:
                    fail()
                prof.step()
    oom = Run.open(prof.run_dir).meta["oom"]
    assert oom["observer"] is None and oom["requested_bytes"] == 2 * 2**30, "from the message, not step 2's observation"
    assert oom["device"] == "cuda:0" and oom["allocator"]["allocated_bytes"] == 13 * 2**30


def test_recording_that_fails_warns_and_the_error_goes_on(tmp_path, monkeypatch, caplog):
    def broken(*a, **k):
        raise ValueError("recording broke")

    monkeypatch.setattr(oom_capture, "record", broken)
    error = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    with caplog.at_level(logging.WARNING, logger="accelscope"), pytest.raises(torch.OutOfMemoryError) as got:
        with accelscope.profile(tmp_path / "run", framework="torch", mode="light", live=False) as prof:
            prof.step()
            raise error
    assert got.value is error
    assert any("could not record the out-of-memory state" in r.message for r in caplog.records)
    meta = Run.open(prof.run_dir).meta
    assert "oom" not in meta and meta["complete"] is True and meta["training_error"].startswith("OutOfMemoryError")


def test_other_errors_record_no_oom(tmp_path):
    with pytest.raises(KeyError):
        with accelscope.profile(tmp_path / "run", framework="torch", mode="light", live=False) as prof:
            prof.step()
            raise KeyError("not memory")
    assert "oom" not in Run.open(prof.run_dir).meta


class ResourceExhaustedError(Exception):
    """Stands in for tf.errors.ResourceExhaustedError: told by class name and module, never by import."""


ResourceExhaustedError.__module__ = "tensorflow.python.framework.errors_impl"


class XlaRuntimeError(RuntimeError):
    pass


XlaRuntimeError.__module__ = "jaxlib.xla_extension"


@pytest.mark.parametrize("exc, kind, device, requested", [
    (torch.OutOfMemoryError(CUDA_MESSAGE), "torch", "cuda:0", 2 * 2**30),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you tried to allocate 1048576 bytes. "
                  "Error code 12 (Cannot allocate memory)"), "torch_cpu", "cpu", 2**20),
    (RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 5000 bytes."), "torch_cpu", "cpu", 5000),
    (ResourceExhaustedError("{{function_node __wrapped__MatMul_device_/job:localhost/replica:0/task:0/device:GPU:1}} OOM when allocating "
                            "tensor with shape[1024,2048] and type float on /job:localhost/replica:0/task:0/device:GPU:1 by allocator GPU_1_bfc "
                            "[Op:MatMul] name: "), "tensorflow", "cuda:1", 1024 * 2048 * 4),
    (XlaRuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 17179869184 bytes."), "jax", None, 2**34),
    (MemoryError(), "python", "cpu", None),
])
def test_out_of_memory_errors_are_told_without_importing_their_framework(exc, kind, device, requested, monkeypatch):
    monkeypatch.setattr(torch_cuda, "call", lambda path, *a: torch_cuda.NO_CUDA)
    assert oom_capture.kind(exc) == kind
    assert oom_capture.device_of(kind, str(exc)) == device
    assert oom_capture.requested_bytes(str(exc)) == requested


@pytest.mark.parametrize("exc", [RuntimeError("shape mismatch"), ValueError("out of memory"), XlaRuntimeError("INTERNAL: oops"), KeyboardInterrupt()])
def test_other_errors_are_not_out_of_memory(exc):
    assert oom_capture.kind(exc) is None


def test_the_door_to_torch_cuda_never_raises(monkeypatch):
    """Against the real torch of this machine (a CPU build, or CUDA not initialised here)."""
    assert torch_cuda.call("cuda.no_such_function") is torch_cuda.NOT_SUPPORTED
    got = torch_cuda.call("zeros", "not a shape")
    assert torch_cuda.is_na(got) and "TypeError" in got.reason
    if not torch.cuda.is_initialized():
        assert torch_cuda.summary(0) is torch_cuda.NO_CUDA and torch_cuda.observe_ooms() is torch_cuda.NO_CUDA
    import sys

    monkeypatch.delitem(sys.modules, "torch")
    assert torch_cuda.call("cuda.is_available") is torch_cuda.NO_TORCH
