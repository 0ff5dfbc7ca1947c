"""The built-in collectors, in one table: which start in a run, and how each is made.

``accelscope.profile`` walks ``REGISTRY`` in order. Each entry's probe looks at the run's
settings and the machine cheaply (no heavy import, no driver call) and says whether the
collector should start; its factory builds it. A collector that is probed in but cannot run
here raises ``CollectorUnavailable`` in ``start`` and is recorded ``unavailable`` with the
reason (NVML without a driver); one that is probed out is not mentioned (no TensorFlow
collector line in every PyTorch run). A user-given collector with the same name replaces
the built-in one. Adding a collector: its module, and one entry here.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from accelscope.collectors.base import Collector
from accelscope.schedule import Schedule

log = logging.getLogger("accelscope")


@dataclass(frozen=True)
class Settings:
    """What a probe and a factory may look at."""

    mode: str  # "full" or "light"
    framework: str  # "torch", "tensorflow" or "none"
    schedule: Schedule
    interval_s: float  # sampling interval of the samplers
    run_dir: Path
    profile_memory: bool = True  # the framework profiler records allocator events (torch)


@dataclass(frozen=True)
class Entry:
    """One built-in collector: its name (``Collector.name``, the key in ``meta["collectors"]``),
    whether it should start in this run, how to make it, and what its probe looks for."""

    name: str
    probe: Callable[[Settings], bool]  # should it start in this run? cheap: imports nothing heavy
    make: Callable[[Settings], Collector]
    needs: str = ""  # what the probe looks for, for people: the debug log when it says no, the docs


def _host(s: Settings) -> Collector:
    from accelscope.collectors.host import HostSampler

    return HostSampler(s.interval_s)


def _nvml(s: Settings) -> Collector:
    from accelscope.collectors.nvml import NvmlCollector

    return NvmlCollector(s.interval_s)


def _tpu_present(_s: Settings) -> bool:
    from accelscope.collectors.tpu import tpu_present

    return tpu_present()


def _tpu(s: Settings) -> Collector:
    from accelscope.collectors.tpu import TpuCollector

    return TpuCollector(s.interval_s)


def _cuda_present(s: Settings) -> bool:
    from accelscope.collectors.cuda_memory import cuda_present

    return s.framework == "torch" and cuda_present()


def _cuda_memory(_s: Settings) -> Collector:
    from accelscope.collectors.cuda_memory import CudaMemoryCollector

    return CudaMemoryCollector()


def _torch(s: Settings) -> Collector:
    from accelscope.collectors.torch_profiler import TorchProfilerCollector

    return TorchProfilerCollector(s.schedule, s.run_dir / ".tmp-torch", profile_memory=s.profile_memory)


def _tensorflow(s: Settings) -> Collector:
    from accelscope.collectors.tf_profiler import TensorFlowProfilerCollector

    return TensorFlowProfilerCollector(s.schedule, s.run_dir / ".tmp-tensorflow")


REGISTRY: list[Entry] = [
    # psutil: CPU and memory of the process, its children (DataLoader workers) and the machine.
    Entry("host", lambda s: True, _host, "nothing (always)"),
    # NVML whenever nvidia-ml-py is installed (the nvml extra); without a driver it says so.
    Entry("nvml", lambda s: importlib.util.find_spec("pynvml") is not None, _nvml, "nvidia-ml-py installed: pip install 'accelscope[nvml]'"),
    # libtpu's runtime metrics when the machine has a TPU (or the service address is set).
    Entry("tpu", _tpu_present, _tpu, "a TPU on the PCI bus or /dev/accelN, or $ACCELSCOPE_TPU_METRICS_ADDR"),
    # PyTorch's CUDA caching allocator at each step's end (both modes): before the framework
    # profiler, whose own on_step work would come between the step's end and the read.
    Entry("cuda_memory", _cuda_present, _cuda_memory, "framework torch and torch.cuda.is_available()"),
    # The framework's own profiler, in the schedule's windows (full mode).
    Entry("torch_profiler", lambda s: s.mode == "full" and s.framework == "torch", _torch, "mode='full' and framework torch"),
    Entry("tensorflow_profiler", lambda s: s.mode == "full" and s.framework == "tensorflow", _tensorflow, "mode='full' and framework tensorflow"),
]


def built_in(settings: Settings, replaced: set[str] = frozenset(), on_failure: Callable[[str, str], None] | None = None) -> list[Collector]:
    """The built-in collectors this run starts, in registry order, leaving out those the
    user gave their own of (``replaced``: their names). A factory that raises is reported
    to ``on_failure(name, reason)`` (the profiler records the collector dropped) and left out."""
    out = []
    for entry in REGISTRY:
        if entry.name in replaced:
            continue
        try:
            wanted = bool(entry.probe(settings))
        except Exception as exc:  # a probe must never stop a run from starting
            log.debug("accelscope: collector %s not started: its probe failed: %s: %s", entry.name, type(exc).__name__, exc)
            continue
        if not wanted:
            log.debug("accelscope: collector %s not started (needs %s)", entry.name, entry.needs or "what its probe looks for")
            continue
        try:
            out.append(entry.make(settings))
        except Exception as exc:  # nor a factory: the run starts without that collector
            reason = f"failed to start: {type(exc).__name__}: {exc}"
            if on_failure is not None:
                on_failure(entry.name, reason)
            else:
                log.warning("accelscope: collector %s %s (training continues)", entry.name, reason)
    return out
