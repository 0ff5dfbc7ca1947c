"""Exact µs-with-decimals timestamp texts to int64 ns, without float64 rounding.

Kineto traces of newer jobs write absolute timestamps as µs with three decimals
(``1690000000123456.789``): 19 significant digits, more than a float64 holds, so the
nanoseconds are read from the text. One Python call per event cost 0.5 s per million
timestamps; here the texts become one Arrow string array (joined bytes and offsets, no
Python object per token) cast to ``decimal128(22, 3)`` in C++, whose unscaled integer is
the time in ns. A batch Arrow refuses (an event with more than three decimals, or not a
number) goes through the scalar parser, which handles every JSON number.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_NS = pa.decimal128(22, 3)  # µs with three decimals: the unscaled value is ns
_INT64_MAX = 2**63 - 1


def exact_us_to_ns(raw: Any) -> int:
    """One JSON number's text (µs) to ns, exactly; ``ValueError`` when it is not a number."""
    text = bytes(raw)
    whole, dot, frac = text.partition(b".")
    if frac.isdigit() and (whole.isdigit() or (whole[:1] == b"-" and whole[1:].isdigit())) and len(frac) <= 3:
        sign = -1 if whole[:1] == b"-" else 1
        return int(whole) * 1000 + sign * int(frac.ljust(3, b"0"))
    if not dot and whole.lstrip(b"-").isdigit():
        return int(whole) * 1000
    try:
        return int((Decimal(text.decode()) * 1000).to_integral_value())
    except (InvalidOperation, UnicodeDecodeError):
        raise ValueError(f"not a number: {text[:40]!r}") from None


def exact_us_to_ns_many(raws: Sequence[Any], scalar: Callable[[Any], int] = exact_us_to_ns) -> np.ndarray:
    """Every text of ``raws`` (bytes-like JSON numbers, µs) to int64 ns, as ``scalar`` would
    give one by one; a value beyond int64 is clamped to its limit (for the caller's range check)."""
    n = len(raws)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    lengths = np.fromiter(map(len, raws), dtype=np.int64, count=n)
    data = b"".join(raws)
    offsets = np.concatenate(([0], np.cumsum(lengths)))
    kind = pa.string() if len(data) < 2**31 else pa.large_string()
    text = pa.Array.from_buffers(kind, n, [None, pa.py_buffer(offsets.astype(np.int32 if kind == pa.string() else np.int64)), pa.py_buffer(data)])
    try:
        dec = pc.cast(text, _NS)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return np.fromiter((min(max(scalar(r), -_INT64_MAX), _INT64_MAX) for r in raws), dtype=np.int64, count=n)
    words = np.frombuffer(dec.buffers()[1], dtype=np.int64)[2 * dec.offset : 2 * (dec.offset + n)]
    low, high = words[0::2].copy(), words[1::2]
    beyond = high != np.where(low < 0, -1, 0)  # the 128-bit value does not fit an int64
    if beyond.any():
        low[beyond] = np.where(high[beyond] < 0, -_INT64_MAX, _INT64_MAX)
    return low
