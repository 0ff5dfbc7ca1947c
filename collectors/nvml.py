"""NVIDIA GPU metrics through NVML, sampled in a background thread.

Every NVML call goes through :func:`accelscope.collectors.libnvml.nvml_call`, so a metric
that fails becomes a null sample and the others go on; a metric the GPU does not support
is recorded null once and not asked again; a GPU that falls off the bus is recorded once
(counter ``gpu_lost`` = 1) and no longer sampled, while the other GPUs continue.

Devices are the GPUs this process can see: ``CUDA_VISIBLE_DEVICES`` (indices or
``GPU-<uuid>`` prefixes) is honoured, and GPU ``N`` of that list is recorded as device
``cuda:N``, the name the framework uses. Indices are NVML (PCI bus) order, which matches
CUDA's when ``CUDA_DEVICE_ORDER=PCI_BUS_ID``; UUIDs are exact in any order.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from accelscope.collectors import libnvml
from accelscope.collectors.base import CollectorUnavailable, SamplerCollector
from accelscope.collectors.libnvml import LOST, NOT_SUPPORTED, is_na, nvml_call

COUNTERS = (
    "gpu_util_percent", "memory_util_percent", "memory_used_bytes", "memory_total_bytes",
    "power_watts", "temperature_celsius", "sm_clock_mhz", "memory_clock_mhz", "throttle_reasons",
    "process_memory_used_bytes",
)
PCIE_COUNTERS = ("pcie_rx_bytes_per_s", "pcie_tx_bytes_per_s")


def visible_nvml_indices(env: str | None, count: int, uuids: list[str | None]) -> list[int]:
    """NVML indices of the GPUs ``CUDA_VISIBLE_DEVICES`` exposes, in CUDA order.

    Like CUDA, the list ends at the first entry that names no GPU; ``None`` (unset) means
    all GPUs. MIG entries are not mapped (their parent GPU is not identified by them).
    """
    if env is None:
        return list(range(count))
    out: list[int] = []
    for raw in env.split(","):
        entry = raw.strip()
        if not entry:
            break
        if entry.lstrip("-").isdigit():
            index = int(entry)
            if not 0 <= index < count:
                break
        elif entry.startswith("GPU-"):
            matches = [i for i, u in enumerate(uuids) if u and u.startswith(entry)]
            if len(matches) != 1:
                break
            index = matches[0]
        else:
            break
        if index in out:
            break
        out.append(index)
    return out


@dataclass
class _Gpu:
    device: str  # "cuda:N"
    nvml_index: int
    handle: Any
    last_sample_us: int
    lost: bool = False
    skipped: set[str] = field(default_factory=set)


class NvmlCollector(SamplerCollector):
    """Samples every visible NVIDIA GPU (10 Hz default); see the module doc.

    Counters per GPU (device ``cuda:N``): ``gpu_util_percent`` (plus NVML's own
    high-resolution utilisation samples, at their own timestamps), ``memory_util_percent``,
    ``memory_used_bytes``, ``memory_total_bytes``, ``power_watts``, ``temperature_celsius``,
    ``sm_clock_mhz``, ``memory_clock_mhz``, ``throttle_reasons`` (NVML bitmask),
    ``process_memory_used_bytes`` (this process and its children), and with ``pcie=True``
    ``pcie_rx_bytes_per_s`` / ``pcie_tx_bytes_per_s`` (each read blocks about 20 ms).
    """

    name = "nvml"
    children_refresh_s = 2.0

    def __init__(self, interval_s: float = 0.1, *, pcie: bool = False, high_res: bool = True, process_memory: bool = True):
        super().__init__(interval_s)
        self.pcie = pcie
        self.high_res = high_res
        self.process_memory = process_memory
        self.gpus: list[_Gpu] = []
        self._initialised = False
        self._pids: set[int] = set()
        self._next_children_ns = 0
        self._proc = None

    # -- lifecycle ----------------------------------------------------------------------
    def start(self, ctx) -> None:
        reason = libnvml.init()
        if reason is not None:
            raise CollectorUnavailable(reason)
        self._initialised = True
        try:
            self.gpus = self._open_devices()
            if not self.gpus:
                raise CollectorUnavailable("no GPU visible to this process (CUDA_VISIBLE_DEVICES)")
            ctx.writer.update_meta(nvml_devices=[self._describe(g) for g in self.gpus])
            super().start(ctx)
        except BaseException:
            self._release()
            raise

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            self._release()

    def _release(self) -> None:
        if self._initialised:
            self._initialised = False
            libnvml.shutdown()

    def _open_devices(self) -> list[_Gpu]:
        count = nvml_call("nvmlDeviceGetCount")
        if is_na(count):
            raise CollectorUnavailable(f"NVML cannot count GPUs ({count.reason})")
        handles = [nvml_call("nvmlDeviceGetHandleByIndex", i) for i in range(count)]
        env = os.environ.get("CUDA_VISIBLE_DEVICES")
        uuids: list[str | None] = []
        if env is not None and "GPU-" in env:
            for h in handles:
                u = None if is_na(h) else nvml_call("nvmlDeviceGetUUID", h)
                uuids.append(None if is_na(u) else libnvml.text(u))
        start_us = time.time_ns() // 1000
        gpus = []
        for cuda_index, nvml_index in enumerate(visible_nvml_indices(env, count, uuids)):
            h = handles[nvml_index]
            if is_na(h):
                continue  # a GPU NVML cannot open (lost at start): nothing to sample
            gpus.append(_Gpu(f"cuda:{cuda_index}", nvml_index, h, start_us))
        return gpus

    def _describe(self, g: _Gpu) -> dict[str, Any]:
        info: dict[str, Any] = {"id": g.device, "nvml_index": g.nvml_index}
        for key, fn in (("name", "nvmlDeviceGetName"), ("uuid", "nvmlDeviceGetUUID")):
            v = nvml_call(fn, g.handle)
            info[key] = None if is_na(v) else libnvml.text(v)
        mem = nvml_call("nvmlDeviceGetMemoryInfo", g.handle)
        info["memory_total_bytes"] = None if is_na(mem) else int(mem.total)
        return info

    # -- sampling -------------------------------------------------------------------------
    def setup(self) -> None:
        if self.process_memory:
            import psutil

            self._proc = psutil.Process(self.ctx.pid)
            self._pids = {self.ctx.pid}

    def _our_pids(self) -> set[int]:
        now = time.monotonic_ns()
        if self._proc is not None and now >= self._next_children_ns:
            self._next_children_ns = now + int(self.children_refresh_s * 1e9)
            try:
                self._pids = {self.ctx.pid} | {c.pid for c in self._proc.children(recursive=True)}
            except Exception:
                self._pids = {self.ctx.pid}
        return self._pids

    def sample(self) -> None:
        pids = self._our_pids() if self.process_memory else set()
        for g in self.gpus:
            if not g.lost:
                self._sample_gpu(g, pids)

    def _sample_gpu(self, g: _Gpu, pids: set[int]) -> None:
        ctx = self.ctx
        t = ctx.now_ns()
        rows: list[tuple[str, int, Any]] = []
        h = g.handle

        def put(name: str, value: Any, scale: float = 1.0) -> bool:
            """Queue one value; False when the GPU is lost. NOT_SUPPORTED is written null once."""
            if value is LOST:
                return False
            if value is NOT_SUPPORTED:
                if name in g.skipped:
                    return True
                g.skipped.add(name)
            rows.append((name, t, None if is_na(value) else float(value) * scale))
            return True

        util = nvml_call("nvmlDeviceGetUtilizationRates", h)
        if util is LOST:
            return self._lose(g, t)
        put("gpu_util_percent", util if is_na(util) else util.gpu)
        put("memory_util_percent", util if is_na(util) else util.memory)
        mem = nvml_call("nvmlDeviceGetMemoryInfo", h)
        ok = put("memory_used_bytes", mem if is_na(mem) else mem.used) and put("memory_total_bytes", mem if is_na(mem) else mem.total)
        ok = ok and put("power_watts", self._call(g, "power_watts", "nvmlDeviceGetPowerUsage", h), 1e-3)
        ok = ok and put("temperature_celsius", self._call(g, "temperature_celsius", "nvmlDeviceGetTemperature", h, libnvml.constant("NVML_TEMPERATURE_GPU", 0)))
        ok = ok and put("sm_clock_mhz", self._call(g, "sm_clock_mhz", "nvmlDeviceGetClockInfo", h, libnvml.constant("NVML_CLOCK_SM", 1)))
        ok = ok and put("memory_clock_mhz", self._call(g, "memory_clock_mhz", "nvmlDeviceGetClockInfo", h, libnvml.constant("NVML_CLOCK_MEM", 2)))
        if ok:
            reasons = self._call(g, "throttle_reasons", "nvmlDeviceGetCurrentClocksEventReasons", h)
            if reasons is NOT_SUPPORTED:  # drivers before 535 only have the older name
                reasons = self._call(g, "throttle_reasons", "nvmlDeviceGetCurrentClocksThrottleReasons", h)
            ok = put("throttle_reasons", reasons)
        if ok and self.pcie:
            for name, const, default in (("pcie_rx_bytes_per_s", "NVML_PCIE_UTIL_RX_BYTES", 1), ("pcie_tx_bytes_per_s", "NVML_PCIE_UTIL_TX_BYTES", 0)):
                ok = ok and put(name, self._call(g, name, "nvmlDeviceGetPcieThroughput", h, libnvml.constant(const, default)), 1024.0)  # KB/s
        if ok and self.process_memory:
            procs = self._call(g, "process_memory_used_bytes", "nvmlDeviceGetComputeRunningProcesses", h)
            if is_na(procs):
                ok = put("process_memory_used_bytes", procs)
            else:
                used = [p.usedGpuMemory for p in procs if p.pid in pids]
                put("process_memory_used_bytes", sum(u for u in used if u is not None) if all(u is not None for u in used) else None)
        high = []
        if ok and self.high_res:
            high = self._high_res(g)
            if high is LOST:
                ok, high = False, []
        add = ctx.writer.add_counter
        for name, ts, value in rows:
            add((name, g.device, ts, value, ctx.rank))
        for ts, value in high:
            add(("gpu_util_percent", g.device, ts, value, ctx.rank))
        if not ok:
            self._lose(g, t)

    def _call(self, g: _Gpu, metric: str, fn_name: str, *args: Any) -> Any:
        return NOT_SUPPORTED if metric in g.skipped else nvml_call(fn_name, *args)

    def _high_res(self, g: _Gpu) -> Any:
        """NVML's own utilisation samples since the last read, as (time_ns, value)."""
        got = nvml_call("nvmlDeviceGetSamples", g.handle, libnvml.constant("NVML_GPU_UTILIZATION_SAMPLES", 1), g.last_sample_us)
        if got is LOST:
            return LOST
        if is_na(got):  # NOT_FOUND: no new sample yet; NOT_SUPPORTED: remembered, skipped
            return []
        value_type, samples = got
        out = []
        last = g.last_sample_us
        for s in samples:
            ts = int(s.timeStamp)
            if ts <= g.last_sample_us:
                continue
            value = libnvml.sample_value(value_type, s)
            out.append((ts * 1000, value))
            last = max(last, ts)
        g.last_sample_us = last
        return out

    def _lose(self, g: _Gpu, t: int) -> None:
        g.lost = True
        ctx = self.ctx
        ctx.writer.add_counter(("gpu_lost", g.device, t, 1.0, ctx.rank))
        ctx.writer.update_meta(nvml_lost_devices=sorted(x.device for x in self.gpus if x.lost))
