"""Kineto (torch.profiler) Chrome-trace JSON to the columnar event model, streaming.

Handles every schema generation in use: the 2020-2021 categories (``Kernel``,
``Runtime``, ``Operator``, ``Memcpy``, ``Memset``, tids like ``"stream 7"``), the current
ones (``kernel``, ``cuda_runtime``, ``cuda_driver``, ``cpu_op``, ``gpu_memcpy``,
``gpu_memset``, ``cuda_sync``, ``user_annotation``, ``gpu_user_annotation``,
``python_function``), AMD (HIP, same categories) and MTIA (``mtia_runtime``,
``mtia_ccp_events``). Timestamps are microseconds, int or float, absolute or relative to
``baseTimeNanoseconds``; they become exact integer nanoseconds.

Both Chrome JSON forms are read: the object ``{"traceEvents": [...]}`` (the key anywhere)
and the bare array, whose closing ``]`` may be missing (``chrome_json``); the legacy
autograd profiler's array (``"pid": "CPU functions"``) gives host ops, and begin/end pairs
of generic Chrome traces give annotation slices (``chrome_events``).

How it stays fast and bounded in memory: the document is read in chunks (gunzipped on
the fly); a vectorised scanner (numpy, ``chrome_json.Scanner``) finds where each element
of the event array starts and ends; complete elements are decoded in batches by msgspec straight into
typed structs that keep only the fields we use, with ``args`` kept as raw JSON text; each
batch becomes Arrow columns and the structs are freed. Only the Arrow columns, which are
smaller than the JSON, accumulate.
"""

from __future__ import annotations

import functools
import gzip
import itertools
import json
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from accelscope.traces import schema as S
from accelscope.traces.chrome_events import SPAN_CATEGORY, SPAN_PHASES, CounterSamples, SpanPairer
from accelscope.traces.chrome_json import BatchDecodeError, NotATraceError, Scanner, TraceFormatError, adopt_legacy, gzip_size, is_array_document, neither_form, read_chunks
from accelscope.traces.exact_time import exact_us_to_ns as _exact_us_to_ns
from accelscope.traces.exact_time import exact_us_to_ns_many
from accelscope.traces.kineto_memory import MEMORY_EVENT, MemorySamples

__all__ = ["KinetoTrace", "NotATraceError", "TraceFormatError", "read_kineto", "rank_from_file_name"]

# 4 MiB: larger chunks cost memory (several temporary copies per chunk) and gain no speed.
CHUNK_BYTES = 4 << 20

# Lower-cased Kineto category -> our kind. Categories not listed fall back to the
# suffix rules in _classify (``*_runtime``/``*_driver`` are runtime calls).
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

_INT_RE = re.compile(r"(-?\d+)")
_RANK_FILE_RE = re.compile(r"rank[-_]?(\d+)", re.IGNORECASE)
# Absolute float timestamps beyond this many µs lose sub-µs digits in a float64.
_FLOAT_EXACT_US = 2.0**53 / 1000

Scalar = int | str | None
# Rank is only known once the header (which may follow the events) has been read.
_BATCH_SCHEMA = S.EVENT_SCHEMA.set(S.EVENT_SCHEMA.get_field_index("rank"), pa.field("rank", pa.int32()))


class _Args(msgspec.Struct):
    device: Scalar = None
    stream: Scalar = None
    correlation: Scalar = None
    # Written by accelscope's Chrome export so that re-importing it is lossless.
    accelscope_kind: str | None = None
    accelscope_device: str | None = None
    accelscope_rank: int | None = None


class _Event(msgspec.Struct):
    ph: str | None = None
    cat: str | None = None
    name: str | int | float | None = None
    pid: Scalar = None
    tid: Scalar = None
    ts: int | float | None = None
    dur: int | float | None = None
    args: msgspec.Raw = msgspec.Raw(b"")  # decoded separately, only for the slices kept
    id: msgspec.Raw = msgspec.Raw(b"")  # async begin/end pairs (generic Chrome traces)
    id2: msgspec.Raw = msgspec.Raw(b"")
    scope: msgspec.Raw = msgspec.Raw(b"")


class _RawTs(msgspec.Struct):
    ph: str | None = None
    cat: str | None = None
    ts: msgspec.Raw = msgspec.Raw(b"")


class _Doc(msgspec.Struct):
    traceEvents: list[_Event] | None = None


class _DocRawTs(msgspec.Struct):
    traceEvents: list[_RawTs] = []


_decode_events = msgspec.json.Decoder(list[_Event]).decode
_decode_doc = msgspec.json.Decoder(_Doc).decode
_decode_doc_raw_ts = msgspec.json.Decoder(_DocRawTs).decode
_decode_header = msgspec.json.Decoder(dict[str, msgspec.Raw]).decode
_decode_args = msgspec.json.Decoder(list[_Args | None]).decode
_decode_raw_ts = msgspec.json.Decoder(list[_RawTs]).decode


# accelscope's export writes the analysis' idle gaps as slices of this category: analysis
# output, not trace data, so a re-import drops them (its own analysis finds them again).
GAP_CATEGORY = "accelscope_idle_gap"


# Instant events: Kineto writes them for allocator events (``[memory]``: the memory table,
# kineto_memory.py) and its own markers (dropped); in a trace another tool wrote, Perfetto
# shows them as zero-length slices, and so do we.
INSTANT_PHASES = frozenset({"i", "I", "n"})


def _is_memory(e: _Event) -> bool:
    """An allocator event with a time (one without is dropped, and counted)."""
    return e.ph in INSTANT_PHASES and e.name == MEMORY_EVENT and e.ts is not None


def _kept(e: _Event | _RawTs) -> bool:
    """Complete slices become rows; "Trace" slices only mark the profiler's own recording
    window (not work, no thread) and accelscope's idle-gap slices are analysis output: both
    are dropped."""
    return e.ph == "X" and e.cat != "Trace" and e.cat != GAP_CATEGORY


# -- conversion ----------------------------------------------------------------------------
def _joined(first: Callable[[], list[msgspec.Raw]], more: list[msgspec.Raw]) -> list[msgspec.Raw]:
    return [*first(), *more]


def _as_int(value: Any) -> int | None:
    if type(value) is int:
        return value
    if isinstance(value, str):
        try:
            return int(value)  # "25738": 2020-2021 traces write tids as strings
        except ValueError:
            pass
        m = _INT_RE.search(value)
        return int(m.group(1)) if m else None
    if isinstance(value, float):
        return int(value)
    return None


def _us_to_ns(values: list) -> np.ndarray:
    """µs (int, or float below 2**53/1000) to int64 ns without losing whole µs to float64."""
    t = np.asarray(values, dtype=np.float64)
    whole = np.floor(t)
    return whole.astype(np.int64) * 1000 + np.rint((t - whole) * 1000).astype(np.int64)


# Timestamps and durations in ns must fit an int64, with room for start + duration and for
# float rounding: anything beyond 2**62 ns (146 years) is garbage, not a clock.
_MAX_TS_US = 2**62 // 1000


@dataclass
class _Batches:
    """Accumulates converted batches; tracks names and problems seen."""

    path: Path
    tables: list[pa.Table] = field(default_factory=list)
    threads: dict[tuple[int, int], str] = field(default_factory=dict)
    processes: dict[int, str] = field(default_factory=dict)
    n_events: int = 0
    array_form: bool = False  # bare-array documents may be the legacy autograd profiler's
    legacy_events: int = 0
    kineto_categories: bool = False  # a slice had a category Kineto writes (else another tool wrote it)
    instants: list[_Event] = field(default_factory=list)  # "i"/"I"/"n" events: slices of a trace Kineto did not write

    def __post_init__(self) -> None:
        # Old traces write every tid as a string ("25738", "stream 7"): parse each once.
        self._int_memo = functools.lru_cache(maxsize=65536)(_as_int)
        self.counters = CounterSamples()
        self.memory = MemorySamples(self.path)
        self.pairs = SpanPairer(lambda ph, cat, name, pid, tid, ts, dur, args: _Event(ph, cat, name, pid, tid, ts, dur, args), _exact_us_to_ns)

    def add(self, text: bytes) -> None:
        """Decode and add one batch of events (a JSON array text)."""
        try:
            events = _decode_events(text)
        except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise BatchDecodeError(f"{self.path}: invalid trace event ({' '.join(str(exc).split())})") from None
        self.add_events(events, lambda: [r.ts for r in _decode_raw_ts(text)])

    def add_events(self, events: list[_Event], raw_ts: Callable[[], list[msgspec.Raw]]) -> None:
        """Add decoded events; ``raw_ts`` gives every event's timestamp text (in order), read
        only when a float64 cannot hold the timestamps."""
        if self.array_form:
            self.legacy_events += adopt_legacy(events, self._int_memo)
        every_ts = functools.cache(raw_ts)
        ends, counter_events, memory = [], [], []
        for e in events:
            if e.ph == "X":
                continue
            if e.ph == "M" and e.name in ("thread_name", "process_name") and e.args:
                self._name_lane(e)
            elif e.ph in SPAN_PHASES:
                ends.append(e)
            elif e.ph == "C":
                counter_events.append(e)
            elif _is_memory(e):
                memory.append(e)
            elif e.ph in INSTANT_PHASES and e.name == MEMORY_EVENT:  # no time
                self.memory.dropped += 1
            elif e.ph in INSTANT_PHASES and not self.kineto_categories:
                e.args = msgspec.Raw(bytes(e.args))  # kept past this batch: its own bytes only
                self.instants.append(e)
        if counter_events:
            self.counters.feed(counter_events)
        if memory:  # to the memory table, times converted as the slices' are
            memo = self._int_memo
            self.memory.add(self._start_ns([e.ts for e in memory], lambda: [r for r, e in zip(every_ts(), events) if _is_memory(e)]),
                            [e.pid if type(e.pid) is int else memo(e.pid) for e in memory],
                            [e.tid if type(e.tid) is int else memo(e.tid) for e in memory], [bytes(e.args) for e in memory])
        spans: list[_Event] = []
        span_ts: list[msgspec.Raw] = []
        if ends:  # begin/end pairs of generic Chrome traces become slices
            large = any(type(e.ts) is float and abs(e.ts) >= _FLOAT_EXACT_US for e in ends)
            try:
                spans, span_ts = self.pairs.feed(ends, [r for r, e in zip(every_ts(), events) if e.ph in SPAN_PHASES] if large else None)
            except ValueError as exc:
                raise TraceFormatError(f"{self.path}: {exc}") from None
        keep = list(map(_kept, events))
        xs = list(itertools.compress(events, keep))
        raw_ts = functools.partial(_joined, lambda: list(itertools.compress(every_ts(), keep)), span_ts)
        xs += spans
        if not xs:
            return
        n = len(xs)
        ts = [e.ts for e in xs]
        if None in ts:
            bad = xs[ts.index(None)]
            raise TraceFormatError(f"{self.path}: event {bad.name!r} has no timestamp")
        start_ns = self._start_ns(ts, raw_ts)
        durs = [e.dur if e.dur is not None else 0 for e in xs]
        if np.abs(np.asarray(durs, dtype=np.float64)).max() > _MAX_TS_US:
            bad = xs[int(np.argmax(np.abs(np.asarray(durs, dtype=np.float64))))]
            raise TraceFormatError(f"{self.path}: event {bad.name!r} has a duration out of range ({bad.dur} µs is over 146 years)")
        dur_ns = _us_to_ns(durs)
        if (dur_ns < 0).any():
            bad = xs[int(np.flatnonzero(dur_ns < 0)[0])]
            raise TraceFormatError(f"{self.path}: event {bad.name!r} has a negative duration ({bad.dur} µs)")
        raws = [e.args for e in xs]
        lengths = np.fromiter((len(r) for r in raws), dtype=np.int64, count=n)
        data = b"".join(raws)
        try:
            args = _decode_args(b"[" + b",".join(r if len(r) else b"null" for r in raws) + b"]")
        except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise TraceFormatError(f"{self.path}: invalid event args ({' '.join(str(exc).split())})") from None
        none = _Args()
        args = [a if a is not None else none for a in args]
        memo = self._int_memo
        offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int32 if len(data) < 2**31 else np.int64)
        arg_type = pa.string() if offsets.dtype == np.int32 else pa.large_string()
        arg_text = pa.Array.from_buffers(arg_type, n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])
        try:
            arg_text.validate(full=True)
        except pa.ArrowInvalid:
            arg_text = pa.array([bytes(r).decode("utf-8", "replace") for r in raws], pa.string())
        arg_text = pc.if_else(pa.array(lengths > 0), arg_text.cast(pa.string()), pa.scalar(None, pa.string()))
        frame = pl.DataFrame(
            {
                "start_ns": start_ns,
                "dur_ns": dur_ns,
                "cat": pl.Series([e.cat or "" for e in xs], dtype=pl.String),
                "name": pl.Series([e.name if type(e.name) is str else ("" if e.name is None else str(e.name)) for e in xs], dtype=pl.String),
                "pid": pl.Series([e.pid if type(e.pid) is int else memo(e.pid) for e in xs], dtype=pl.Int64),
                "tid": pl.Series([e.tid if type(e.tid) is int else memo(e.tid) for e in xs], dtype=pl.Int64),
                "a_device": pl.Series([a.device if type(a.device) is int or a.device is None else _as_int(a.device) for a in args], dtype=pl.Int64),
                "a_stream": pl.Series([a.stream if type(a.stream) is int or a.stream is None else _as_int(a.stream) for a in args], dtype=pl.Int64),
                "correlation_id": pl.Series([a.correlation if type(a.correlation) is int or a.correlation is None else _as_int(a.correlation) for a in args], dtype=pl.Int64),
                "a_kind": pl.Series([a.accelscope_kind for a in args], dtype=pl.String),
                "a_dev": pl.Series([a.accelscope_device for a in args], dtype=pl.String),
                "rank": pl.Series([a.accelscope_rank for a in args], dtype=pl.Int32),
                "args": pl.from_arrow(arg_text),
            }
        )
        if not self.kineto_categories:  # the slices read from X events, not the pairs (last)
            self.kineto_categories = bool(frame.head(n - len(spans)).select(_KINETO_CAT.any()).item())
        self.tables.append(_classify(frame).to_arrow().cast(_BATCH_SCHEMA))
        self.n_events += n

    def _name_lane(self, e: _Event) -> None:
        try:
            name = json.loads(bytes(e.args)).get("name")
        except (ValueError, AttributeError):
            return
        pid, tid = _as_int(e.pid), _as_int(e.tid)
        if pid is None or not isinstance(name, str):
            return
        if e.name == "thread_name" and tid is not None:
            self.threads[(pid, tid)] = name
        elif e.name == "process_name":
            self.processes[pid] = name

    def _start_ns(self, ts: list, raw_ts: Callable[[], list[msgspec.Raw]]) -> np.ndarray:
        arr = np.asarray(ts)
        if arr.dtype.kind in "iu":
            if arr.size and (int(arr.max()) > _MAX_TS_US or int(arr.min()) < -_MAX_TS_US):
                bad = int(arr.max()) if int(arr.max()) > _MAX_TS_US else int(arr.min())
                raise TraceFormatError(f"{self.path}: timestamp out of range ({bad} µs is over 146 years)")
            return arr.astype(np.int64) * 1000
        if (np.abs(arr.astype(np.float64)) >= _FLOAT_EXACT_US).any():
            # Absolute float µs with ns digits: a float64 cannot hold them; parse the text.
            try:
                exact = exact_us_to_ns_many(raw_ts())
            except ValueError as exc:
                raise TraceFormatError(f"{self.path}: {exc}") from None
            out_of_range = np.flatnonzero(np.abs(exact) > _MAX_TS_US * 1000)
            if out_of_range.size:
                raise TraceFormatError(f"{self.path}: timestamp out of range ({int(exact[out_of_range[0]]) // 1000} µs is over 146 years)")
            return exact
        return _us_to_ns(ts)


_LOW_CAT = pl.col("cat").str.to_lowercase()
_KINETO_CAT = _LOW_CAT.is_in(list(CATEGORY_KIND)) | _LOW_CAT.str.ends_with("_runtime") | _LOW_CAT.str.ends_with("_driver")
# Header keys only torch's profiler (and accelscope's export, which mimics it) writes.
KINETO_HEADER_KEYS = frozenset({"schemaVersion", "deviceProperties", "distributedInfo", "baseTimeNanoseconds", "traceName"})


def _classify(frame: pl.DataFrame) -> pl.DataFrame:
    """Kinds, devices and streams from categories, vectorised (the rules are in the tables above)."""
    on_device = _LOW_CAT.is_in(list(DEVICE_CATEGORIES))
    mtia = _LOW_CAT.str.starts_with("mtia")
    kind = (
        pl.when(_LOW_CAT.is_in(list(CATEGORY_KIND)))
        .then(_LOW_CAT.replace_strict(CATEGORY_KIND, default=S.OTHER))
        .when(_LOW_CAT.str.ends_with("_runtime") | _LOW_CAT.str.ends_with("_driver"))
        .then(pl.lit(S.RUNTIME))
        .otherwise(pl.lit(S.OTHER))
    )
    kind = pl.when(on_device & mtia & pl.col("name").is_in(list(MTIA_EVENT_KIND))).then(pl.col("name").replace_strict(MTIA_EVENT_KIND, default=S.OTHER)).otherwise(kind)
    # ProfilerStep#N is a user annotation today, an "Operator" in 2020-2021 traces.
    kind = pl.when(~on_device & kind.is_in([S.ANNOTATION, S.CPU_OP]) & pl.col("name").str.starts_with("ProfilerStep#")).then(pl.lit(S.STEP)).otherwise(kind)
    device = pl.when(on_device).then(pl.when(mtia).then(pl.lit("mtia:")).otherwise(pl.lit("cuda:")) + pl.coalesce("a_device", "pid", pl.lit(0)).cast(pl.String)).otherwise(pl.lit("cpu"))
    stream = pl.when(on_device).then(pl.coalesce("a_stream", "tid")).otherwise(pl.lit(None, dtype=pl.Int64))
    # Our own export says what each slice was: trust it over the category.
    device = pl.coalesce("a_dev", device)
    return frame.with_columns(
        kind=pl.coalesce("a_kind", kind),
        device=device,
        stream=pl.when(device == "cpu").then(pl.lit(None, dtype=pl.Int64)).otherwise(stream),
    ).select(S.EVENT_COLUMNS)


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
    json_form: str = "object"  # "object", "array" or "array (no closing ']')"
    legacy_autograd: bool = False  # written by the legacy autograd profiler's export_chrome_trace()
    spans: dict[str, int] = field(default_factory=dict)  # B/E and b/e pairs: "paired", "dropped"
    counters: pa.Table | None = None  # samples of "C" events (COUNTER_SCHEMA), None without any
    kineto: bool = True  # written by torch's profiler; False: another tool's Chrome trace
    memory: pa.Table | None = None  # allocator events (MEMORY_SCHEMA, kineto_memory.py), None without any
    memory_dropped: int = 0  # [memory] events left out: no time, or args that are not an allocator event's


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
    stream: bool | None = None,
    workers: int = 1,
) -> KinetoTrace:
    """Import one Kineto JSON file (``.json`` or ``.json.gz``, detected by content).

    ``rank`` overrides the rank; otherwise it comes from ``distributedInfo.rank``, else
    from a ``rank-N`` file name, else 0. ``keep_steps=False`` drops ``ProfilerStep#N``
    slices, for callers that record steps themselves. ``on_bytes`` is called with the
    number of (compressed) bytes read so far, for progress bars. ``stream`` forces
    (True) or forbids (False) chunked reading; by default only documents larger than
    WHOLE_DOCUMENT_BYTES stream. ``workers`` > 1 lets a large uncompressed document be
    decoded by that many processes, a byte range each (traces/kineto_chunks.py), where
    that pays. Raises TraceFormatError.
    """
    p = Path(path)
    if not p.exists():
        raise TraceFormatError(f"{p}: no such file")
    if workers > 1 and stream is not False:
        from accelscope.traces.kineto_chunks import read_in_ranges

        got = read_in_ranges(p, workers, on_bytes)
        if got is not None:
            return finish(p, got[0], got[1], "object", rank=rank, keep_steps=keep_steps)
    batches = _Batches(p)
    whole = None if stream else _whole_document(p, on_bytes, limit=None if stream is False else WHOLE_DOCUMENT_BYTES)
    form = "object"
    if whole is not None and not is_array_document(whole):
        header = _add_document(p, whole, batches)
    else:  # large documents, and the array form at any size (its "]" may be missing)
        scanner = Scanner(p)
        chunks = (whole[i : i + chunk_bytes] for i in range(0, len(whole), chunk_bytes)) if whole is not None else read_chunks(p, chunk_bytes, on_bytes)
        for data in chunks:  # batches of a chunk's size decode faster than one of everything
            text = scanner.feed(data)
            batches.array_form = scanner.array_form
            _add_batch(scanner, batches, text)
        _add_batch(scanner, batches, scanner.flush())
        header = scanner.header()
        if scanner.array_form:
            form = "array (no closing ']')" if scanner.truncated else "array"
    return finish(p, batches, header, form, rank=rank, keep_steps=keep_steps)


def finish(p: Path, batches: _Batches, header: dict[str, Any], form: str, *, rank: int | None, keep_steps: bool) -> KinetoTrace:
    """The trace from every batch of a document and its header: clock, rank, counters, memory."""
    kineto = batches.legacy_events > 0 or batches.kineto_categories or not KINETO_HEADER_KEYS.isdisjoint(header)
    instants = 0
    if not kineto and batches.instants:  # another tool's instants: zero-length host annotations, as Perfetto shows them
        for e in batches.instants:
            e.ph, e.cat, e.dur = "X", SPAN_CATEGORY, 0
        instants = len(batches.instants)
        batches.add_events(batches.instants, lambda: [msgspec.Raw(repr(e.ts).encode()) for e in batches.instants])
    batches.instants = []
    if batches.n_events == 0:
        raise TraceFormatError(f"{p}: the trace has no complete (ph 'X'), begin/end or instant events")
    base_ns = header.get("baseTimeNanoseconds")
    base_ns = (int(base_ns) if base_ns == base_ns and abs(base_ns) != float("inf") else 2**63) if isinstance(base_ns, (int, float)) and not isinstance(base_ns, bool) else 0
    if abs(base_ns) > 2**62:  # 146 years: not a clock (and no int64 holds it)
        raise TraceFormatError(f"{p}: baseTimeNanoseconds out of range ({str(base_ns)[:30]})")
    dist = header.get("distributedInfo") if isinstance(header.get("distributedInfo"), dict) else {}
    if rank is not None:
        the_rank, source = rank, "given"
    elif type(dist.get("rank")) is int and 0 <= dist["rank"] < 2**31:
        the_rank, source = dist["rank"], "distributedInfo"
    elif rank_from_file_name(p) is not None:
        the_rank, source = rank_from_file_name(p), "file name"
    else:
        the_rank, source = 0, "default"
    table = pa.concat_tables(batches.tables)
    start = table.column("start_ns")
    if base_ns:
        start = pc.add(start, pa.scalar(base_ns, pa.int64()))  # both within 2**62: no overflow
    table = table.set_column(0, "start_ns", start)
    rank_index = table.schema.get_field_index("rank")
    table = table.set_column(rank_index, "rank", pc.fill_null(table.column(rank_index), pa.scalar(the_rank, pa.int32())))
    table = table.cast(S.EVENT_SCHEMA)
    if not keep_steps:
        table = table.filter(pc.not_equal(table.column("kind"), S.STEP))
    threads = [{"pid": pid, "tid": tid, "name": name} for (pid, tid), name in sorted(batches.threads.items())]
    pairs = batches.pairs
    spans = {"paired": pairs.paired, "dropped": pairs.dropped + pairs.unclosed()} if pairs.paired or pairs.dropped or pairs.unclosed() else {}
    if instants:
        spans["instants"] = instants
    counters = _counter_table(p, batches.counters, base_ns, the_rank)
    memory = batches.memory.table(base_ns, the_rank)
    return KinetoTrace(p, table, the_rank, source, header, threads, batches.processes, form, batches.legacy_events > 0, spans, counters, kineto,
                       memory, batches.memory.dropped)


def _add_batch(scanner: Scanner, batches: _Batches, text: bytes | None) -> None:
    """Decode one batch from the scanner; one cut at a wrong guess is scanned again."""
    if text is None:
        return
    try:
        batches.add(text)
    except BatchDecodeError:
        if not scanner.last_fast:
            raise
        _add_batch(scanner, batches, scanner.rescan())


def _counter_table(path: Path, samples: CounterSamples, base_ns: int, rank: int) -> pa.Table | None:
    """The ``C`` samples on the events' clock, or None when there were none."""
    if not samples.ts:
        return None
    if np.abs(np.asarray(samples.ts, dtype=np.float64)).max() > _MAX_TS_US:
        raise TraceFormatError(f"{path}: counter timestamp out of range (over 146 years)")
    n = len(samples.ts)
    return pa.table(
        {
            "name": pa.array(samples.series_names(), pa.string()),
            "device": pa.array(["cpu"] * n, pa.string()),
            "time_ns": pc.add(pa.array(_us_to_ns(samples.ts)), pa.scalar(base_ns, pa.int64())),
            "value": pa.array(samples.values, pa.float64()),
            "rank": pa.array(np.full(n, rank, dtype=np.int32)),
        },
        schema=S.COUNTER_SCHEMA,
    )


# Documents up to this size (uncompressed) are decoded in one go; larger ones stream, which
# with guessed cuts is as fast from here and holds far less (docs/benchmarks.md, 2026-12-06).
WHOLE_DOCUMENT_BYTES = 16 << 20
_BATCH_EVENTS = 100_000


def _whole_document(path: Path, on_bytes: Callable[[int], None] | None, limit: int | None) -> bytes | None:
    """The decompressed document if it is at most ``limit`` bytes (None: any), else None."""
    limit = limit if limit is not None else 1 << 62
    try:
        size = path.stat().st_size
        unzipped = gzip_size(path)
        if unzipped is None:
            if size > limit:
                return None
            data = path.read_bytes()
        else:
            if size > limit // 4 or unzipped > limit:  # (its size modulo 2**32: a large file is judged by its own size too)
                return None
            data = gzip.decompress(path.read_bytes())
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise TraceFormatError(f"{path}: truncated or corrupt gzip ({exc})") from None
    except OSError as exc:
        raise TraceFormatError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if on_bytes is not None:
        on_bytes(size)
    return data


def _add_document(path: Path, data: bytes, batches: _Batches) -> dict[str, Any]:
    """Decode a whole document into ``batches``; return its header (everything but the events)."""
    try:
        doc = _decode_doc(data)
    except msgspec.ValidationError as exc:
        message = " ".join(str(exc).split())
        if " - at `$" not in message:  # the top level itself is not an object
            got = re.search(r"got `(\w+)`", message)
            raise neither_form(path, got.group(1) if got else "not an object") from None
        raise TraceFormatError(f"{path}: invalid trace event ({message})") from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        message = " ".join(str(exc).split())
        if "truncated" in message:
            raise TraceFormatError(f"{path}: truncated JSON ({message})") from None
        raise TraceFormatError(f"{path}: not valid JSON ({message})") from None
    if doc.traceEvents is None:
        raise NotATraceError(f"{path}: no traceEvents array: not a Kineto trace")
    try:
        header = {k: json.loads(bytes(v)) for k, v in _decode_header(data).items() if k != "traceEvents"}
    except (msgspec.DecodeError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise TraceFormatError(f"{path}: invalid JSON outside traceEvents ({' '.join(str(exc).split())})") from None
    events = doc.traceEvents
    del doc
    raw: list[msgspec.Raw] = []

    def raw_ts(lo: int, hi: int) -> list[msgspec.Raw]:
        if not raw:
            raw.extend(r.ts for r in _decode_doc_raw_ts(data).traceEvents)
        return raw[lo:hi]

    for i in range(0, len(events), _BATCH_EVENTS):
        batches.add_events(events[i : i + _BATCH_EVENTS], lambda lo=i, hi=i + _BATCH_EVENTS: raw_ts(lo, hi))
    return header

