"""The one door to NVML (modelled on nvitop's ``api/libnvml.py``).

This is the only module that imports ``pynvml`` (from the ``nvidia-ml-py`` package), and
it does so lazily, inside functions: importing accelscope never loads a driver library.
Every NVML call goes through :func:`nvml_call`, which never raises: it returns the value,
or a typed "not available" value:

* :data:`NA` - the call failed this time (timeout, no data, unknown error);
* :data:`NOT_SUPPORTED` - the device or driver does not have this metric; remembered per
  (function, device, argument) so it is not asked again;
* :data:`LOST` - the GPU fell off the bus (``NVML_ERROR_GPU_IS_LOST``).

All three are instances of :class:`NotAvailable` and are falsy; test with :func:`is_na`.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from typing import Any

from accelscope.collectors.base import NotAvailable, is_na  # noqa: F401 - re-exported

log = logging.getLogger("accelscope")


NA = NotAvailable("not available")
NOT_SUPPORTED = NotAvailable("not supported")
LOST = NotAvailable("gpu lost")


_lock = threading.Lock()
_init_count = 0
_unsupported: set[tuple] = set()


def _key(arg: Any) -> Any:
    """A hashable stand-in for an argument (device handles are ctypes pointers)."""
    if isinstance(arg, (int, str, bytes, float)) or arg is None:
        return arg
    try:
        return ("ptr", ctypes.cast(arg, ctypes.c_void_p).value)
    except Exception:
        return ("id", id(arg))


def init() -> str | None:
    """Initialise NVML (reference counted). Returns ``None`` on success, else a one-line reason."""
    global _init_count
    try:
        import pynvml
    except ImportError as exc:
        return f"nvidia-ml-py is not installed ({exc}); install accelscope[nvml]"
    with _lock:
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError_LibraryNotFound:
            return "NVML library (libnvidia-ml.so.1) not found: no NVIDIA driver on this machine"
        except pynvml.NVMLError_DriverNotLoaded:
            return "NVIDIA driver not loaded"
        except pynvml.NVMLError as exc:
            return f"NVML init failed: {exc}"
        except Exception as exc:  # a broken library must not break the caller
            return f"NVML init failed: {type(exc).__name__}: {exc}"
        _init_count += 1
    return None


def shutdown() -> None:
    """Balance one successful :func:`init`."""
    global _init_count
    with _lock:
        if _init_count <= 0:
            return
        _init_count -= 1
        if _init_count == 0:
            _unsupported.clear()
        try:
            import pynvml

            pynvml.nvmlShutdown()
        except Exception as exc:
            log.debug("accelscope: nvmlShutdown failed: %s", exc)


def nvml_call(fn_name: str, *args: Any) -> Any:
    """``pynvml.<fn_name>(*args)``, or a :class:`NotAvailable` value; never raises.

    NOT_SUPPORTED (and a function missing from an older driver) is remembered for the
    function, device handle and next argument, and later calls return :data:`NOT_SUPPORTED`
    at once.
    """
    key = (fn_name,) + tuple(_key(a) for a in args[:2])
    if key in _unsupported:
        return NOT_SUPPORTED
    try:
        import pynvml
    except ImportError:
        return NA
    fn = getattr(pynvml, fn_name, None)
    if fn is None:
        _unsupported.add(key)
        return NOT_SUPPORTED
    try:
        return fn(*args)
    except pynvml.NVMLError_GpuIsLost:
        return LOST
    except (pynvml.NVMLError_NotSupported, pynvml.NVMLError_FunctionNotFound):
        _unsupported.add(key)
        return NOT_SUPPORTED
    except pynvml.NVMLLibraryMismatchError:
        _unsupported.add(key)
        return NOT_SUPPORTED
    except pynvml.NVMLError as exc:
        log.debug("accelscope: %s failed: %s", fn_name, exc)
        return NA
    except Exception as exc:
        log.debug("accelscope: %s raised %s: %s", fn_name, type(exc).__name__, exc)
        return NA


def constant(name: str, default: Any = None) -> Any:
    """A constant from pynvml (``NVML_CLOCK_SM``...), or ``default`` if pynvml is missing."""
    try:
        import pynvml
    except ImportError:
        return default
    return getattr(pynvml, name, default)


def sample_value(value_type: int, sample: Any) -> float | None:
    """The number in an ``nvmlSample_t`` given the ``nvmlValueType_t`` NVML returned."""
    v = sample.sampleValue
    field = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal", 6: "usVal"}.get(value_type)
    if field is None:
        return None
    return float(getattr(v, field))


def text(value: Any) -> Any:
    """NVML strings come back as ``bytes`` from older pynvml versions."""
    return value.decode(errors="replace") if isinstance(value, bytes) else value
