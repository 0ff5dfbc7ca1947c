"""Out-of-memory forensics while recording: what a run keeps when its training loop dies of
running out of memory (``meta["oom"]``, docs/trace-format.md), read by ``analysis/oom.py``.

Which errors are out-of-memory errors, told by class name and module along the exception's
MRO and by the allocators' own words, so that no framework is imported to find out:

* ``torch.OutOfMemoryError`` (``torch.cuda.OutOfMemoryError`` is the same class; CUDA's and
  ROCm's allocators raise it, MPS's and XPU's too);
* torch's CPU allocator, which raises a plain ``RuntimeError`` ("DefaultCPUAllocator: can't
  allocate memory" / "not enough memory"; torch 2.13 still does);
* TensorFlow's ``ResourceExhaustedError`` ("OOM when allocating tensor with shape[...]");
* JAX's ``XlaRuntimeError`` starting "RESOURCE_EXHAUSTED";
* Python's ``MemoryError`` (NumPy's ``_ArrayMemoryError`` too).

On CUDA the figures come from the allocator (``collectors/torch_cuda.py``, the only door to
``torch.cuda``): its summary when the error reaches ``accelscope.profile``, and what torch's
OOM observer saw at the failing allocation itself.
"""

from __future__ import annotations

import math
import re
from typing import Any

from accelscope.collectors import torch_cuda

MESSAGE_LINES = 3  # of the error's message kept
MESSAGE_CHARS = 2000

_CPU_ALLOCATOR = ("DefaultCPUAllocator: can't allocate memory", "DefaultCPUAllocator: not enough memory")
_UNITS = {"": 1, "b": 1, "bytes": 1, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "pib": 2**50, "eib": 2**60}
_REQUESTED = re.compile(r"(?:[Tt]ried|trying) to allocate ([0-9]+(?:\.[0-9]+)?) ?(bytes|B|KiB|MiB|GiB|TiB|PiB|EiB)?\b")
_TF_TENSOR = re.compile(r"OOM when allocating tensor with shape\[([0-9,\s]*)\] and type (\w+)")
_TF_DEVICE = re.compile(r"/device:(CPU|GPU|TPU):(\d+)")
_GPU = re.compile(r"\bGPU (\d+)\b")
# TensorFlow dtype names (DataTypeString) -> bytes per element.
_TF_DTYPES = {"float": 4, "double": 8, "half": 2, "bfloat16": 2, "int8": 1, "uint8": 1, "int16": 2, "uint16": 2, "int32": 4, "uint32": 4,
              "int64": 8, "uint64": 8, "bool": 1, "complex64": 8, "complex128": 16}


def _classes(exc: BaseException) -> list[tuple[str, str]]:
    return [(c.__module__ or "", c.__name__) for c in type(exc).__mro__]


def kind(exc: BaseException) -> str | None:
    """What ran out: "torch", "torch_cpu", "tensorflow", "jax" or "python"; None when ``exc``
    is not an out-of-memory error."""
    classes = _classes(exc)
    if any(name == "OutOfMemoryError" and module.split(".")[0] == "torch" for module, name in classes):
        return "torch"
    if any(name == "ResourceExhaustedError" and module.startswith("tensorflow") for module, name in classes):
        return "tensorflow"
    text = str(exc)
    if any(name == "XlaRuntimeError" for _, name in classes) and text.lstrip().startswith("RESOURCE_EXHAUSTED"):
        return "jax"
    if isinstance(exc, RuntimeError) and any(m in text for m in _CPU_ALLOCATOR):
        return "torch_cpu"
    if isinstance(exc, MemoryError):
        return "python"
    return None


def requested_bytes(message: str) -> int | None:
    """The bytes the failing allocation asked for, as the message says: torch's "Tried to
    allocate 2.00 GiB" (rounded by torch to 2 decimals) or "you tried to allocate N bytes",
    XLA's "trying to allocate N bytes", TensorFlow's tensor shape times its dtype's size."""
    m = _REQUESTED.search(message)
    if m:
        return int(float(m.group(1)) * _UNITS[(m.group(2) or "").lower()])
    m = _TF_TENSOR.search(message)
    if m and m.group(2) in _TF_DTYPES:
        dims = [int(d) for d in m.group(1).replace(" ", "").split(",") if d]
        return math.prod(dims) * _TF_DTYPES[m.group(2)]
    return None


def device_of(what: str, message: str) -> str | None:
    """The device that ran out, named as the memory table names devices, where the message
    (or, for a CUDA error that names none, the current CUDA device) says."""
    if what in ("torch_cpu", "python"):
        return "cpu"
    if what == "tensorflow":
        found = _TF_DEVICE.findall(message)
        if found:
            kind_, index = found[-1]  # "... on /job:.../device:GPU:0 by allocator ..." comes last
            return "cpu" if kind_ == "CPU" else f"{'cuda' if kind_ == 'GPU' else 'tpu'}:{index}"
        return None
    if what == "torch":
        m = _GPU.search(message)
        if m:
            return f"cuda:{m.group(1)}"
        if "CUDA out of memory" in message or "HIP out of memory" in message:
            device = torch_cuda.current_device()
            return None if torch_cuda.is_na(device) else f"cuda:{device}"
    return None


def first_lines(message: str) -> str:
    lines = [line for line in message.strip().splitlines() if line.strip()][:MESSAGE_LINES]
    text = "\n".join(lines)
    return text if len(text) <= MESSAGE_CHARS else text[: MESSAGE_CHARS - 1] + "…"


def record(exc: BaseException, what: str, *, step: int, rank: int, now_ns: int, step_start_ns: int, offset_ns: int) -> dict[str, Any]:
    """``meta["oom"]`` for ``exc`` (of ``kind`` ``what``), raised in step ``step``, reaching
    ``accelscope.profile`` at ``now_ns`` (the run's clock = perf_counter_ns + ``offset_ns``).
    The time is the failing allocation's where torch's CUDA OOM observer saw one in this step."""
    message = str(exc)
    device = device_of(what, message)
    observed = torch_cuda.last_oom(step_start_ns - offset_ns) if what == "torch" else None
    rec: dict[str, Any] = {
        "step": step,
        "time_ns": now_ns,
        "rank": rank,
        "device": device,
        "error_type": f"{type(exc).__module__}.{type(exc).__qualname__}".removeprefix("builtins."),
        "kind": what,
        "message": first_lines(message),
        "requested_bytes": requested_bytes(message),
        "allocator": None,
        "observer": None,
    }
    if observed is not None:
        rec["time_ns"] = observed.pop("perf_ns") + offset_ns
        rec["observer"] = observed
        rec["device"] = device = f"cuda:{observed['device']}"
        rec["requested_bytes"] = observed["requested_bytes"]  # exact, where the message rounds
    if device is not None and device.startswith("cuda:"):
        summary = torch_cuda.summary(int(device.split(":")[1]))
        if not torch_cuda.is_na(summary):
            rec["allocator"] = summary
    return rec
