"""Collectors: hook framework execution and sample device/host metrics into a run."""

from accelscope.collectors.base import Collector, CollectorContext, CollectorUnavailable, SamplerCollector
from accelscope.collectors.host import HostSampler
from accelscope.collectors.nvml import NvmlCollector  # importing it never loads pynvml
from accelscope.collectors.tpu import TpuCollector  # importing it never loads grpc

__all__ = ["Collector", "CollectorContext", "CollectorUnavailable", "SamplerCollector", "HostSampler", "NvmlCollector", "TpuCollector"]
