"""The one door to ``torch.cuda``'s allocator (as ``libnvml`` is to NVML).

Every call accelscope makes into ``torch.cuda`` (and torch's CUDA OOM observer hook) goes
through :func:`call`, or through a function :func:`bound` resolved once for a per-step path;
neither raises: each returns the value, or a typed "not available" value
(:class:`~accelscope.collectors.base.NotAvailable`, falsy):

* :data:`NO_TORCH` - the program has not imported torch (accelscope never imports it here);
* :data:`NO_CUDA` - CUDA is not available, or not initialised yet in this process (asking
  would initialise it: a context on the GPU the program may not want yet);
* :data:`NOT_SUPPORTED` - this torch has no such function (an older release, a CPU build);
* :data:`NA` - the call failed (its reason in the debug log).

Tests fake this module's :func:`call`, or the ``torch.cuda`` functions themselves before
anything is bound (tests/cuda_fake.py).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from accelscope.collectors.base import NotAvailable, is_na  # noqa: F401 - re-exported

log = logging.getLogger("accelscope")

NO_TORCH = NotAvailable("torch is not imported")
NO_CUDA = NotAvailable("CUDA is not initialised in this process")
NOT_SUPPORTED = NotAvailable("not supported by this torch")
NA = NotAvailable("not available")

# torch.cuda.memory_stats keys kept in a summary, as the summary names them.
STATS = {
    "allocated_bytes.all.current": "allocated_bytes",
    "allocated_bytes.all.peak": "allocated_peak_bytes",
    "reserved_bytes.all.current": "reserved_bytes",
    "reserved_bytes.all.peak": "reserved_peak_bytes",
    "num_alloc_retries": "num_alloc_retries",
    "num_ooms": "num_ooms",
}


def call(path: str, *args: Any) -> Any:
    """``torch.<path>(*args)`` (``"cuda.memory_stats"``, ``"_C._cuda_attach_out_of_memory_observer"``),
    or a NotAvailable value; never raises, never imports torch."""
    fn = _resolve(path)
    if is_na(fn):
        return fn
    try:
        return fn(*args)
    except Exception as exc:
        return _failed(path, exc)


def bound(path: str) -> Callable[..., Any] | NotAvailable:
    """``torch.<path>`` looked up now, for a caller that calls it at every step: a function
    that answers as :func:`call` does (the value, or a NotAvailable when it raises) without
    walking the dotted path again; or why it cannot be bound (NO_TORCH, NOT_SUPPORTED)."""
    fn = _resolve(path)
    if is_na(fn):
        return fn

    def bound_call(*args: Any) -> Any:
        try:
            return fn(*args)
        except Exception as exc:
            return _failed(path, exc)

    return bound_call


def _resolve(path: str) -> Any:
    """The function ``torch.<path>`` names in the program's torch, or NO_TORCH / NOT_SUPPORTED."""
    torch = sys.modules.get("torch")
    if torch is None:
        return NO_TORCH
    fn: Any = torch
    for part in path.split("."):
        fn = getattr(fn, part, None)
        if fn is None:
            return NOT_SUPPORTED
    return fn


def _failed(path: str, exc: Exception) -> NotAvailable:
    log.debug("accelscope: torch.%s raised %s: %s", path, type(exc).__name__, exc)
    return NotAvailable(f"torch.{path} failed: {type(exc).__name__}: {exc}")


def initialised() -> bool:
    """CUDA is initialised in this process (so asking the allocator costs nothing new)."""
    return call("cuda.is_initialized") is True


def current_device() -> int | NotAvailable:
    if not initialised():
        return NO_CUDA
    device = call("cuda.current_device")
    if is_na(device):
        return device
    return device if isinstance(device, int) else NA


def summary(device: int) -> dict[str, int | None] | NotAvailable:
    """The caching allocator's figures for ``cuda:<device>``: allocated and reserved bytes
    (now and peak), allocation retries and OOMs so far, and the device's total and free memory
    (``mem_get_info``: the driver's view, other processes included). A figure torch does not
    give is None; NotAvailable when CUDA is not initialised or the allocator cannot say."""
    if not initialised():
        return NO_CUDA
    stats = call("cuda.memory_stats", device)
    if is_na(stats):
        return stats
    if not isinstance(stats, dict):
        return NA
    out: dict[str, int | None] = {name: _int(stats.get(key)) for key, name in STATS.items()}
    info = call("cuda.mem_get_info", device)
    free, total = info if isinstance(info, tuple) and len(info) == 2 else (None, None)
    out["device_total_bytes"], out["device_free_bytes"] = _int(total), _int(free)
    return out


def _int(v: Any) -> int | None:
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


# -- the OOM observer: torch calls it on the allocating thread just before it raises ------------
_lock = threading.Lock()
_attached = False
_last: tuple[int, int, int, int, int] | None = None  # (perf_counter_ns, device, alloc, device_limit, device_free)


def _observer(device: int, alloc: int, device_limit: int, device_free: int) -> None:
    """Keeps the last OOM the CUDA allocator saw. torch names the third argument
    ``device_allocated``, but passes the device's total memory (or the limit
    ``set_per_process_memory_fraction`` set): see DeviceCachingAllocator::malloc. Must never
    raise: an exception here would replace the allocator's own OutOfMemoryError."""
    global _last
    try:
        _last = (time.perf_counter_ns(), int(device), int(alloc), int(device_limit), int(device_free))
    except BaseException:  # noqa: BLE001 - nothing may escape into the allocator
        pass


def observe_ooms() -> bool | NotAvailable:
    """Attach the observer (once per process: torch cannot detach one) where CUDA is
    initialised; True once attached, else why not (NO_CUDA: try again later)."""
    global _attached
    with _lock:
        if _attached:
            return True
        if not initialised():
            return NO_CUDA
        got = call("_C._cuda_attach_out_of_memory_observer", _observer)
        if is_na(got):  # no such hook, or an allocator backend without it (cudaMallocAsync)
            return got
        _attached = True
        return True


def last_oom(since_perf_ns: int) -> dict[str, int] | None:
    """What the observer saw at the last CUDA OOM at or after ``since_perf_ns``
    (``time.perf_counter_ns``), or None: ``perf_ns``, ``device``, ``requested_bytes`` (the
    allocation that failed, as the allocator rounded it: the size its message gives),
    ``device_limit_bytes`` (the device's memory, or the per-process fraction's limit) and
    ``device_free_bytes`` (the device's free memory, as the driver said then)."""
    got = _last
    if got is None or got[0] < since_perf_ns:
        return None
    perf_ns, device, alloc, limit, free = got
    return {"perf_ns": perf_ns, "device": device, "requested_bytes": alloc, "device_limit_bytes": limit, "device_free_bytes": free}
