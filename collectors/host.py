"""Host metrics through psutil: this process, its child processes (DataLoader workers)
and the whole system, sampled in a background thread."""

from __future__ import annotations

import time

import psutil

from accelscope.collectors.base import SamplerCollector

DEVICE = "cpu"


class HostSampler(SamplerCollector):
    """Samples CPU and memory of the process, its children and the system (10 Hz default).

    Counter names carry their unit: ``process_cpu_percent`` (100 = one core busy),
    ``process_rss_bytes``, ``children_cpu_percent``, ``children_rss_bytes``,
    ``children_count``, ``system_cpu_percent`` (100 = all cores busy),
    ``system_memory_used_bytes``, ``system_memory_available_bytes``.
    """

    name = "host"

    #: Listing child processes scans all of /proc (over 1 ms with a hundred processes,
    #: mostly holding the GIL), so the list is refreshed at this period; known children
    #: are sampled at the full rate.
    children_refresh_s = 2.0

    def __init__(self, interval_s: float = 0.1):
        super().__init__(interval_s)
        self._proc: psutil.Process | None = None
        self._children: dict[int, psutil.Process] = {}
        self._next_refresh_ns = 0

    def setup(self) -> None:
        self._proc = psutil.Process(self.ctx.pid)
        self._proc.cpu_percent(None)  # the first call only primes the counter
        psutil.cpu_percent(None)

    def _children_usage(self) -> tuple[float, float, int]:
        cpu = rss = 0.0
        alive: dict[int, psutil.Process] = {}
        now = time.monotonic_ns()
        if now >= self._next_refresh_ns:
            self._next_refresh_ns = now + int(self.children_refresh_s * 1e9)
            candidates = [self._children.get(c.pid, c) for c in self._proc.children(recursive=True)]
        else:
            candidates = list(self._children.values())
        for proc in candidates:
            try:
                with proc.oneshot():
                    # A child seen for the first time reports 0 %: its counter is primed now.
                    cpu += proc.cpu_percent(None)
                    rss += proc.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            alive[proc.pid] = proc
        self._children = alive
        return cpu, rss, len(alive)

    def sample(self) -> None:
        ctx = self.ctx
        t = ctx.now_ns()
        with self._proc.oneshot():
            values = {
                "process_cpu_percent": self._proc.cpu_percent(None),
                "process_rss_bytes": float(self._proc.memory_info().rss),
            }
        cpu, rss, count = self._children_usage()
        vm = psutil.virtual_memory()
        values.update(
            children_cpu_percent=cpu,
            children_rss_bytes=rss,
            children_count=float(count),
            system_cpu_percent=psutil.cpu_percent(None),
            system_memory_used_bytes=float(vm.total - vm.available),
            system_memory_available_bytes=float(vm.available),
        )
        add = ctx.writer.add_counter
        for name, value in values.items():
            add((name, DEVICE, t, value, ctx.rank))
