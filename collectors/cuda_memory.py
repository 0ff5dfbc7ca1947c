"""PyTorch's CUDA caching allocator, read at every ``prof.step()``: what the step ended
holding and the most it held.

Every ``torch.cuda`` call goes through ``torch_cuda`` (the one door, shared with the
out-of-memory capture): the four per-step functions are bound once when the collector starts
(``torch_cuda.bound``), so a step walks no dotted path. None raises: a failing call returns a
:class:`~accelscope.collectors.base.NotAvailable`.
It never imports torch (it reads the module the program already imported) and never
initialises CUDA: until the program has, a step records nothing.

Why the nested dict: ``torch.cuda.memory_allocated``, ``memory_reserved`` and
``max_memory_allocated`` each build and sort the flat ``memory_stats()`` (over a hundred
entries); the nested dict they flatten is one C++ call that holds all four figures. No call
here synchronises the device or allocates device memory: the allocator keeps these counts on
the host.
"""

from __future__ import annotations

from collections.abc import Sequence

from accelscope.collectors import torch_cuda as T
from accelscope.collectors.base import Collector, CollectorContext, CollectorUnavailable, NotAvailable, is_na
from accelscope.traces import counters as K

# Counter names (device ``cuda:N``), stamped at the end of the step they describe.
ALLOCATED, RESERVED, MAX_ALLOCATED, MAX_RESERVED = COUNTERS = K.CUDA_MEMORY


def cuda_present() -> bool:
    """Whether the program's torch sees a CUDA device (False without torch, or on any error):
    the registry's probe, so a CPU-only run never starts the collector."""
    return T.call("cuda.is_available") is True


class CudaMemory:
    """The few ``torch.cuda`` functions the collector calls, bound once through ``torch_cuda``
    (the one door to ``torch.cuda``), each returning its value or a ``NotAvailable``."""

    CALLS = ("cuda.is_initialized", "cuda.current_device", "cuda.memory_stats_as_nested_dict", "cuda.reset_peak_memory_stats")

    def __init__(self) -> None:
        fns = []
        for path in self.CALLS:
            fn = T.bound(path)
            if fn is T.NO_TORCH:
                raise CollectorUnavailable("torch is not imported")
            if is_na(fn):
                raise CollectorUnavailable(f"this torch has no torch.{path}")
            fns.append(fn)
        self._is_initialized, self._current_device, self._stats, self._reset_peak = fns

    def initialized(self) -> bool:
        """Whether the program has initialised CUDA (before that nothing is allocated)."""
        return self._is_initialized() is True

    def current_device(self) -> int | NotAvailable:
        """The index of the program's current CUDA device."""
        index = self._current_device()
        return index if is_na(index) else int(index)

    def read(self, index: int) -> tuple[int, int, int, int] | None | NotAvailable:
        """(allocated, reserved, max allocated, max reserved) bytes of device ``index``; None
        when the allocator has no statistics yet (CUDA not initialised)."""
        stats = self._stats(index)
        if is_na(stats):
            return stats
        if not stats:
            return None
        try:
            allocated, reserved = stats["allocated_bytes"]["all"], stats["reserved_bytes"]["all"]
            return allocated["current"], reserved["current"], allocated["peak"], reserved["peak"]
        except (KeyError, TypeError) as exc:
            return NotAvailable(f"torch.cuda.memory_stats_as_nested_dict({index}) lacks {exc}")

    def reset_peak(self, index: int) -> NotAvailable | None:
        """Start device ``index``'s peaks again from what it holds now."""
        done = self._reset_peak(index)
        return done if is_na(done) else None


class CudaMemoryCollector(Collector):
    """At each step's end, per CUDA device the loop uses: the caching allocator's allocated
    and reserved bytes, and the most of each during the step (counters ``COUNTERS``).

    ``devices``: CUDA indices to read; None (default) reads the program's current device at
    each step, so a ``torch.cuda.set_device`` after ``profile()`` started is followed. A
    process that spreads its model over several GPUs names them: ``devices=[0, 1]``.
    ``reset_peak`` (default True) resets the allocator's peaks after each read, so the max
    counters are the step's own; it also resets what the program's own
    ``torch.cuda.max_memory_allocated`` returns (the peak since the last ``prof.step()``).
    With ``reset_peak=False`` the program's peaks are left alone and the max counters are
    the peak since the program started (or last reset them); the run's peak and its step
    come out the same.

    Any failing call stops the collector (dropped, one warning); what it recorded is kept.
    """

    name = "cuda_memory"

    def __init__(self, devices: Sequence[int] | None = None, *, reset_peak: bool = True):
        self.devices = tuple(int(d) for d in devices) if devices is not None else None
        self.reset_peak = reset_peak
        self.ctx: CollectorContext | None = None
        self._cuda: CudaMemory | None = None
        self._names: dict[int, str] = {}
        self._ready = False  # the program has initialised CUDA (it stays so): stop asking

    def start(self, ctx: CollectorContext) -> None:
        self.ctx = ctx
        self._cuda = CudaMemory()
        self._ready = self._cuda.initialized()
        if self.reset_peak and self._ready:  # step 0's peak: from here, not the program's start
            for index in self._indices():
                if is_na(index) or self._failed(self._cuda.reset_peak(index)):
                    break

    def _indices(self) -> Sequence[int | NotAvailable]:
        return self.devices if self.devices is not None else (self._cuda.current_device(),)

    def _failed(self, result: object) -> bool:
        """Report a ``NotAvailable`` result as this collector's failure (the profiler drops it:
        no later step calls it); True if it was one."""
        if not is_na(result):
            return False
        self.ctx.report_failure(self.name, result.reason)
        return True

    def on_step(self, step: int) -> None:
        cuda = self._cuda
        if not self._ready:
            if not cuda.initialized():
                return
            self._ready = True
        ctx = self.ctx
        t = ctx.last_step_ns()[1]  # the step that just ended (set before on_step is called)
        add = ctx.writer.add_counter
        for index in self._indices():
            if self._failed(index):
                return
            got = cuda.read(index)
            if got is None:
                continue
            if self._failed(got):
                return
            device = self._names.get(index)
            if device is None:
                device = self._names[index] = f"cuda:{index}"
            allocated, reserved, max_allocated, max_reserved = got
            add((ALLOCATED, device, t, float(allocated), ctx.rank))
            add((RESERVED, device, t, float(reserved), ctx.rank))
            add((MAX_ALLOCATED, device, t, float(max_allocated), ctx.rank))
            add((MAX_RESERVED, device, t, float(max_reserved), ctx.rank))
            if self.reset_peak and self._failed(cuda.reset_peak(index)):
                return
