"""Kineto (torch.profiler) Chrome-trace JSON to the columnar event model, streaming.

Handles every schema generation in use: the 2020-2021 categories (``Kernel``,
``Runtime``, ``Operator``, ``Memcpy``, ``Memset``, tids like ``"stream 7"``), the current
ones (``kernel``, ``cuda_runtime``, ``cuda_driver``, ``cpu_op``, ``gpu_memcpy``,
``gpu_memset``, ``cuda_sync``, ``user_annotation``, ``gpu_user_annotation``,
``python_function``), AMD (HIP, same categories) and MTIA (``mtia_runtime``,
``mtia_ccp_events``). Timestamps are microseconds, int or float, absolute or relative to
``baseTimeNanoseconds``; they become exact integer nanoseconds.

How it stays fast and bounded in memory: the document is read in chunks (gunzipped on
the fly); a vectorised scanner (numpy) finds where each element of the ``traceEvents``
array starts and ends; complete elements are decoded in batches by msgspec straight into
typed structs that keep only the fields we use, with ``args`` kept as raw JSON text; each
batch becomes Arrow columns and the structs are freed. Only the Arrow columns, which are
smaller than the JSON, accumulate.
"""

from __future__ import annotations

import gzip
import json
import re
import zlib
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Callable, Iterator, Union

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from accelscope.errors import AccelscopeError
from accelscope.traces import schema as S

CHUNK_BYTES = 16 << 20

# Lower-cased Kineto category -> our kind. Categories not listed fall back to the
# suffix rules in _kind_for_category (``*_runtime``/``*_driver`` are runtime calls).
CATEGORY_KIND = {
    "kernel": S.KERNEL,
    "cuda_profiler_range": S.KERNEL,  # kernels under CUPTI's range profiler
    "gpu_memcpy": S.MEMCPY,
    "memcpy": S.MEMCPY,
    "gpu_memset": S.MEMSET,
    "memset": S.MEMSET,
    "cuda_sync": S.SYNC,
    "runtime": S.RUNTIME,
    "cpu_op": S.CPU_OP,
    "operator": S.CPU_OP,
    "python_function": S.PYTHON,
    "user_annotation": S.ANNOTATION,
    "gpu_user_annotation": S.ANNOTATION,
    "mtia_ccp_events": S.KERNEL,
}
# Categories whose slices run on a device (their pid is the device index, tid a stream).
DEVICE_CATEGORIES = frozenset({"kernel", "cuda_profiler_range", "gpu_memcpy", "memcpy", "gpu_memset", "memset", "cuda_sync", "gpu_user_annotation", "mtia_ccp_events"})
# MTIA command-processor events are named by what they do.
MTIA_EVENT_KIND = {"dma_request": S.MEMCPY, "event_record": S.SYNC, "event_wait": S.SYNC}

_STEP_RE = re.compile(r"^ProfilerStep#(\d+)$")
_INT_RE = re.compile(r"(-?\d+)")
_RANK_FILE_RE = re.compile(r"rank[-_]?(\d+)", re.IGNORECASE)
_TRACE_EVENTS_KEY = re.compile(rb'"traceEvents"\s*:\s*$')
# Absolute float timestamps beyond this many µs lose sub-µs digits in a float64.
_FLOAT_EXACT_US = 2.0**53 / 1000

Scalar = Union[int, str, None]
# Rank is only known once the header (which may follow the events) has been read.
_BATCH_SCHEMA = S.EVENT_SCHEMA.set(S.EVENT_SCHEMA.get_field_index("rank"), pa.field("rank", pa.int32()))


class _Args(msgspec.Struct):
    device: Scalar = None
    stream: Scalar = None
    correlation: Scalar = None
    name: Union[str, None] = None  # M events: thread_name / process_name
    labels: Union[str, None] = None
    # Written by accelscope's Chrome export so that re-importing it is lossless.
    accelscope_kind: Union[str, None] = None
    accelscope_device: Union[str, None] = None
    accelscope_rank: Union[int, None] = None


class _Event(msgspec.Struct):
    ph: Union[str, None] = None
    cat: Union[str, None] = None
    name: Union[str, int, float, None] = None
    pid: Scalar = None
    tid: Scalar = None
    ts: Union[int, float, None] = None
    dur: Union[int, float, None] = None
    args: Union[_Args, None] = None


class _RawEvent(msgspec.Struct):
    args: msgspec.Raw = msgspec.Raw(b"")
    ts: msgspec.Raw = msgspec.Raw(b"")


_decode_events = msgspec.json.Decoder(list[_Event]).decode
_decode_raw = msgspec.json.Decoder(list[_RawEvent]).decode


class TraceFormatError(AccelscopeError, ValueError):
    """A file is not a readable Kineto trace; the message names the file and the problem."""


class NotATraceError(TraceFormatError):
    """Valid JSON, but not a Kineto trace (no ``traceEvents``): skipped in directories."""


# -- scanning ------------------------------------------------------------------------------
_STRUCTURAL = np.zeros(256, dtype=bool)
_STRUCTURAL[[ord("{"), ord("}"), ord("["), ord("]")]] = True


def _structure(buf: bytes, depth0: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions, characters and depth-after of the brackets in ``buf`` outside strings.

    ``buf`` must start outside a string at nesting depth ``depth0``.
    """
    arr = np.frombuffer(buf, dtype=np.uint8)
    quotes = np.flatnonzero(arr == 34)
    if quotes.size:
        maybe_escaped = quotes[(quotes > 0)]
        maybe_escaped = maybe_escaped[arr[maybe_escaped - 1] == 92]
        if maybe_escaped.size:  # rare: a quote after backslashes; odd run = escaped
            escaped = []
            for p in maybe_escaped.tolist():
                k = p - 1
                while k >= 0 and buf[k] == 92:
                    k -= 1
                if (p - 1 - k) % 2:
                    escaped.append(p)
            if escaped:
                quotes = np.setdiff1d(quotes, np.asarray(escaped, dtype=quotes.dtype), assume_unique=True)
    pos = np.flatnonzero(_STRUCTURAL[arr])
    if quotes.size and pos.size:
        pos = pos[(np.searchsorted(quotes, pos) & 1) == 0]
    chars = arr[pos]
    delta = np.where((chars == 123) | (chars == 91), 1, -1)
    return pos, chars, depth0 + np.cumsum(delta)


@dataclass
class _Scanner:
    """Splits a streamed Kineto document into batches of complete ``traceEvents`` elements."""

    path: Path
    state: str = "before"  # before -> in -> after the traceEvents array
    carry: bytes = b""
    head: bytes = b""
    tail: list[bytes] = field(default_factory=list)

    def feed(self, data: bytes) -> bytes | None:
        """Add bytes; return a JSON array text of the elements completed so far, if any."""
        if self.state == "after":
            self.tail.append(data)
            return None
        text = self.carry + data if self.carry else data
        start = 0
        if self.state == "before":
            pos, chars, depth = _structure(text, 0)
            opens = pos[(chars == 91) & (depth == 2)]
            found = None
            for p in opens.tolist():
                if _TRACE_EVENTS_KEY.search(text[max(0, p - 64) : p]):
                    found = p
                    break
            if found is None:
                if len(text) > 256 << 20:
                    raise NotATraceError(f"{self.path}: no traceEvents array in the first 256 MB: not a Kineto trace")
                self.carry = text
                return None
            self.head = text[: found + 1]
            self.state = "in"
            start = found + 1
        body = text[start:]
        pos, chars, depth = _structure(body, 2)
        closes = pos[(chars == 93) & (depth == 1)]
        if (depth < 2).any() and not closes.size:
            raise TraceFormatError(f"{self.path}: malformed JSON inside traceEvents")
        limit = int(closes[0]) if closes.size else len(body)
        ends = pos[(chars == 125) & (depth == 2) & (pos < limit)]
        batch = None
        if ends.size:
            first = int(pos[(chars == 123) & (depth == 3)][0])
            last = int(ends[-1])
            batch = b"[" + body[first : last + 1] + b"]"
            rest = body[last + 1 :]
        else:
            rest = body
        if closes.size:
            self.state = "after"
            self.tail.append(body[limit:])
            self.carry = b""
        else:
            self.carry = rest
        return batch

    def header(self) -> dict[str, Any]:
        """The document without its events, once everything was fed."""
        if self.state == "before":
            try:
                json.loads(self.carry)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise TraceFormatError(f"{self.path}: not JSON ({getattr(exc, 'msg', exc)})") from None
            raise NotATraceError(f"{self.path}: no traceEvents array: not a Kineto trace")
        if self.state == "in":
            raise TraceFormatError(f"{self.path}: truncated JSON (the traceEvents array never closes)")
        try:
            doc = json.loads(self.head + b"".join(self.tail))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise TraceFormatError(f"{self.path}: truncated or invalid JSON after traceEvents ({exc.msg if hasattr(exc, 'msg') else exc})") from None
        if not isinstance(doc, dict):
            raise TraceFormatError(f"{self.path}: not a Kineto trace (top level is not an object)")
        return doc


def _read_chunks(path: Path, chunk_bytes: int, on_bytes: Callable[[int], None] | None) -> Iterator[bytes]:
    try:
        with open(path, "rb") as raw:
            gz = raw.read(2) == b"\x1f\x8b"
            raw.seek(0)
            stream = gzip.GzipFile(fileobj=raw) if gz else raw
            while True:
                data = stream.read(chunk_bytes)
                if not data:
                    return
                if on_bytes is not None:
                    on_bytes(raw.tell())
                yield data
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise TraceFormatError(f"{path}: truncated or corrupt gzip ({exc})") from None
    except OSError as exc:
        raise TraceFormatError(f"{path}: cannot read ({exc.strerror or exc})") from None


# -- conversion ----------------------------------------------------------------------------
def _as_int(value: Any) -> int | None:
    if type(value) is int:
        return value
    if isinstance(value, str):
        m = _INT_RE.search(value)
        return int(m.group(1)) if m else None
    if isinstance(value, float):
        return int(value)
    return None


def _kind_for_category(cat: str) -> str:
    kind = CATEGORY_KIND.get(cat)
    if kind is not None:
        return kind
    if cat.endswith("_runtime") or cat.endswith("_driver"):
        return S.RUNTIME
    return S.OTHER


def _device_prefix(cat: str) -> str:
    return "mtia" if cat.startswith("mtia") else "cuda"


def _us_to_ns(values: list) -> np.ndarray:
    """µs (int, or float below 2**53/1000) to int64 ns without losing whole µs to float64."""
    t = np.asarray(values, dtype=np.float64)
    whole = np.floor(t)
    return whole.astype(np.int64) * 1000 + np.rint((t - whole) * 1000).astype(np.int64)


def _exact_us_to_ns(raw: msgspec.Raw) -> int:
    try:
        return int((Decimal(bytes(raw).decode()) * 1000).to_integral_value())
    except (InvalidOperation, UnicodeDecodeError):
        raise ValueError(f"not a number: {raw[:40]!r}") from None


@dataclass
class _Batches:
    """Accumulates converted batches; tracks names and problems seen."""

    path: Path
    tables: list[pa.Table] = field(default_factory=list)
    threads: dict[tuple[int, int], str] = field(default_factory=dict)
    processes: dict[int, str] = field(default_factory=dict)
    n_events: int = 0
    kind_memo: dict[str, tuple[str, bool, str]] = field(default_factory=dict)

    def _category(self, cat: str | None) -> tuple[str, bool, str]:
        key = cat or ""
        hit = self.kind_memo.get(key)
        if hit is None:
            low = key.lower()
            hit = self.kind_memo[key] = (_kind_for_category(low), low in DEVICE_CATEGORIES, _device_prefix(low))
        return hit

    def add(self, text: bytes) -> None:
        try:
            events = _decode_events(text)
        except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise TraceFormatError(f"{self.path}: invalid trace event ({' '.join(str(exc).split())})") from None
        # "Trace" slices only mark the profiler's own recording window: not work, no thread.
        keep = [i for i, e in enumerate(events) if e.ph == "X" and e.cat != "Trace"]
        for e in events:
            if e.ph == "M" and e.args is not None and e.args.name is not None:
                pid, tid = _as_int(e.pid), _as_int(e.tid)
                if pid is None:
                    continue
                if e.name == "thread_name" and tid is not None:
                    self.threads[(pid, tid)] = e.args.name
                elif e.name == "process_name":
                    self.processes[pid] = e.args.name
        if not keep:
            return
        raws = _decode_raw(text)
        xs = [events[i] for i in keep]
        n = len(xs)
        missing_ts = [i for i, e in zip(keep, xs) if e.ts is None]
        if missing_ts:
            raise TraceFormatError(f"{self.path}: event {self.n_events + missing_ts[0]} ({events[missing_ts[0]].name!r}) has no timestamp")
        ts = [e.ts for e in xs]
        if any(type(t) is float and abs(t) >= _FLOAT_EXACT_US for t in ts):
            start_ns = np.fromiter((_exact_us_to_ns(raws[i].ts) for i in keep), dtype=np.int64, count=n)
        else:
            start_ns = _us_to_ns(ts)
        dur_ns = _us_to_ns([e.dur if e.dur is not None else 0 for e in xs])
        if (dur_ns < 0).any():
            bad = int(np.flatnonzero(dur_ns < 0)[0])
            raise TraceFormatError(f"{self.path}: event {xs[bad].name!r} has a negative duration ({xs[bad].dur} µs)")
        kinds, devices, streams, pids, tids, corr, ranks = [], [], [], [], [], [], []
        for e in xs:
            kind, on_device, prefix = self._category(e.cat)
            args = e.args
            pid = _as_int(e.pid)
            tid = _as_int(e.tid)
            if on_device:
                if prefix == "mtia":
                    kind = MTIA_EVENT_KIND.get(e.name, kind)
                dev = _as_int(args.device) if args is not None and args.device is not None else pid
                devices.append(f"{prefix}:{dev if dev is not None else 0}")
                st = _as_int(args.stream) if args is not None and args.stream is not None else None
                streams.append(st if st is not None else tid)
            else:
                devices.append("cpu")
                streams.append(None)
            if args is not None and args.accelscope_kind is not None:
                kind = args.accelscope_kind
                if args.accelscope_device is not None:
                    devices[-1] = args.accelscope_device
                    if args.accelscope_device == "cpu":
                        streams[-1] = None
            kinds.append(kind)
            ranks.append(args.accelscope_rank if args is not None else None)
            pids.append(pid)
            tids.append(tid)
            corr.append(_as_int(args.correlation) if args is not None else None)
        names = [e.name if type(e.name) is str else ("" if e.name is None else str(e.name)) for e in xs]
        for i, (kind, name) in enumerate(zip(kinds, names)):
            # ProfilerStep#N is a user annotation today, an "Operator" in 2020-2021 traces.
            if (kind == S.ANNOTATION or kind == S.CPU_OP) and devices[i] == "cpu" and name.startswith("ProfilerStep#"):
                kinds[i] = S.STEP
        arg_text = [bytes(raws[i].args).decode("utf-8", "replace") or None for i in keep]
        table = pa.table(
            {
                "start_ns": start_ns,
                "dur_ns": dur_ns,
                "kind": pa.array(kinds, pa.string()),
                "name": pa.array(names, pa.string()),
                "device": pa.array(devices, pa.string()),
                "stream": pa.array(streams, pa.int64()),
                "pid": pa.array(pids, pa.int64()),
                "tid": pa.array(tids, pa.int64()),
                "rank": pa.array(ranks, pa.int32()),
                "correlation_id": pa.array(corr, pa.int64()),
                "args": pa.array(arg_text, pa.string()),
            },
            schema=_BATCH_SCHEMA,
        )
        self.tables.append(table)
        self.n_events += n


@dataclass
class KinetoTrace:
    """One imported Kineto file: events on the Unix-epoch-ns clock, plus what the header said."""

    path: Path
    events: pa.Table
    rank: int
    rank_source: str  # "distributedInfo", "file name" or "default"
    header: dict[str, Any]
    threads: list[dict[str, Any]]
    processes: dict[int, str]


def rank_from_file_name(path: Path) -> int | None:
    m = _RANK_FILE_RE.search(path.name)
    return int(m.group(1)) if m else None


def read_kineto(
    path: str | Path,
    *,
    rank: int | None = None,
    keep_steps: bool = True,
    on_bytes: Callable[[int], None] | None = None,
    chunk_bytes: int = CHUNK_BYTES,
) -> KinetoTrace:
    """Import one Kineto JSON file (``.json`` or ``.json.gz``, detected by content).

    ``rank`` overrides the rank; otherwise it comes from ``distributedInfo.rank``, else
    from a ``rank-N`` file name, else 0. ``keep_steps=False`` drops ``ProfilerStep#N``
    slices, for callers that record steps themselves. ``on_bytes`` is called with the
    number of (compressed) bytes read so far, for progress bars. Raises TraceFormatError.
    """
    p = Path(path)
    if not p.exists():
        raise TraceFormatError(f"{p}: no such file")
    scanner = _Scanner(p)
    batches = _Batches(p)
    for data in _read_chunks(p, chunk_bytes, on_bytes):
        text = scanner.feed(data)
        if text is not None:
            batches.add(text)
    header = scanner.header()
    if batches.n_events == 0:
        raise TraceFormatError(f"{p}: the trace has no complete (ph 'X') events")
    base_ns = header.get("baseTimeNanoseconds")
    base_ns = int(base_ns) if isinstance(base_ns, (int, float)) and not isinstance(base_ns, bool) else 0
    dist = header.get("distributedInfo") if isinstance(header.get("distributedInfo"), dict) else {}
    if rank is not None:
        the_rank, source = rank, "given"
    elif isinstance(dist.get("rank"), int):
        the_rank, source = dist["rank"], "distributedInfo"
    elif rank_from_file_name(p) is not None:
        the_rank, source = rank_from_file_name(p), "file name"
    else:
        the_rank, source = 0, "default"
    table = pa.concat_tables(batches.tables)
    start = table.column("start_ns")
    if base_ns:
        start = pc.add(start, pa.scalar(base_ns, pa.int64()))
    table = table.set_column(0, "start_ns", start)
    rank_index = table.schema.get_field_index("rank")
    table = table.set_column(rank_index, "rank", pc.fill_null(table.column(rank_index), pa.scalar(the_rank, pa.int32())))
    table = table.cast(S.EVENT_SCHEMA)
    if not keep_steps:
        table = table.filter(pc.not_equal(table.column("kind"), S.STEP))
    threads = [{"pid": pid, "tid": tid, "name": name} for (pid, tid), name in sorted(batches.threads.items())]
    return KinetoTrace(p, table, the_rank, source, header, threads, batches.processes)


# -- small documents -------------------------------------------------------------------------
def load_json(path: str | Path) -> dict[str, Any]:
    """Read a whole Kineto JSON document into Python objects (small files, tests)."""
    p = Path(path)
    try:
        with (gzip.open(p, "rb") if p.suffix == ".gz" else open(p, "rb")) as fh:
            doc = json.loads(fh.read())
    except (OSError, EOFError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TraceFormatError(f"{p}: not a readable trace ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("traceEvents"), list):
        raise TraceFormatError(f"{p}: JSON without a traceEvents list is not a Kineto trace")
    return doc
