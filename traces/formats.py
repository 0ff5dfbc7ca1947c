"""The trace formats accelscope imports, in one table: how to recognise a file of each, and
how to read it into a rank's tables.

``FORMATS`` is read by discovery (``importer.discover``: which files in a directory are
traces), by the import itself, and by every command that opens traces. Each entry names the
file endings it claims, a cheap ``sniff`` of a file's first bytes (for a file named
explicitly whose ending is not one of them), and a ``read`` that returns a ``RankTrace``.
Adding a format: a reader module, and one entry here.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    from accelscope.traces.kineto import KinetoTrace

OnBytes = Callable[[int], None] | None
SNIFF_BYTES = 256  # of the (decompressed) start of a file


@dataclass
class Source:
    """One trace file to import, with the name of the format it was recognised as."""

    path: Path  # a local file; for a URL, the path part of it (its name and endings)
    format: str  # a TraceFormat's name
    from_directory: bool = False  # found by walking a directory, not named by the user
    url: str = ""  # an fsspec URL (``s3://``, ``memory://``, ...) it is read from, if not local
    size: int | None = None  # the size in bytes where listing gave it (a URL's)
    workers: int = 1  # processes that may decode this one file (a large JSON is split: traces/kineto_chunks.py)

    @property
    def size_bytes(self) -> int:
        return self.size if self.size is not None else self.path.stat().st_size

    @property
    def location(self) -> str:
        """Where it is read from, as the user would name it: the URL or the path."""
        return self.url or str(self.path)


@dataclass
class RankTrace:
    """One file read: its events (and counters, and allocator events), its rank and where the
    rank came from, and what it says about the run (``meta``: framework, devices, threads, clock, ...)."""

    source: Source
    events: pa.Table
    counters: pa.Table | None
    rank: int
    rank_source: str  # "distributedInfo", "file name", "given" or "default"
    meta: dict[str, Any] = field(default_factory=dict)
    memory: pa.Table | None = None  # MEMORY_SCHEMA rows; None when the file holds no allocator events


@dataclass(frozen=True)
class TraceFormat:
    """One importable format: its name, the file endings it claims, a test of a file's first
    bytes (``head``) for files named without one of them, and the reader."""

    name: str
    suffixes: tuple[str, ...]  # lower-case file name endings it claims
    sniff: Callable[[bytes], bool]  # the first SNIFF_BYTES of the file, decompressed: is it this format?
    read: Callable[[Source, OnBytes], RankTrace]


def head(path: Path) -> bytes:
    """The first ``SNIFF_BYTES`` of a file, gunzipped when it is gzip (b"" when unreadable)."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(SNIFF_BYTES)
            if raw[:2] != b"\x1f\x8b":
                return raw
            fh.seek(0)
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            out = b""
            while len(out) < SNIFF_BYTES:
                chunk = fh.read(4096)
                if not chunk:
                    break
                out += d.decompress(chunk, SNIFF_BYTES - len(out))
            return out
    except (OSError, zlib.error):
        return b""


# -- Kineto / Chrome trace JSON ---------------------------------------------------------------
def _json_sniff(start: bytes) -> bool:
    text = start.lstrip()
    return text[:1] in (b"{", b"[")


def _devices_from_kineto(props: Any) -> list[dict[str, Any]]:
    devices = [{"id": "cpu", "kind": "cpu"}]
    if isinstance(props, list):
        for d in props:
            if isinstance(d, dict) and isinstance(d.get("id"), int):
                entry = {"id": f"cuda:{d['id']}", "kind": "gpu", "name": d.get("name")}
                if isinstance(d.get("totalGlobalMem"), int):
                    entry["memory_total_bytes"] = d["totalGlobalMem"]
                devices.append(entry)
    return devices


def _read_kineto(source: Source, on_bytes: OnBytes) -> RankTrace:
    from accelscope.traces.kineto import read_kineto

    t = read_kineto(source.path, on_bytes=on_bytes, workers=source.workers)
    header = {k: v for k, v in t.header.items() if k != "traceEvents"}
    meta = {
        "framework": _chrome_framework(t.kineto, header),
        "devices": _devices_from_kineto(header.get("deviceProperties")),
        "device_properties": header.get("deviceProperties") or [],
        "threads": [dict(th, rank=t.rank) for th in t.threads],
        "streams": _kineto_streams(t.events, t.threads),
        "distributed_info": header.get("distributedInfo"),
        "clock": _kineto_clock(t),
        "json_form": t.json_form,
    }
    if t.spans:
        meta["chrome_spans"] = t.spans  # begin/end pairs and instants read as host annotations, and pairs dropped
    if t.memory_dropped:
        meta["memory_events_dropped"] = t.memory_dropped  # [memory] events without a time or a readable Bytes
    if t.legacy_autograd:
        meta["framework"]["profiler"] = "torch.autograd.profiler (legacy export_chrome_trace)"
    return RankTrace(source, t.events, t.counters, t.rank, t.rank_source, meta, t.memory)


# Chrome traces of other tools: timestamps from 2001-09-09 on are taken as epoch times.
_EPOCH_FROM_NS = 10**18


def _kineto_clock(t: KinetoTrace) -> dict[str, str]:
    """Kineto's ts are epoch µs (plus ``baseTimeNanoseconds`` when set); the legacy autograd
    profiler's are µs since its own start, with nothing to anchor them to. The Chrome trace
    format leaves the clock to the writer (Chrome's is time since boot, XProf's since the
    capture started): other tools' traces are epoch only if their times are."""
    if t.legacy_autograd:
        return {"name": "relative_ns", "source": "legacy autograd profiler ts (µs since the profiler started)"}
    if t.kineto:
        return {"name": "unix_epoch_ns", "source": "Kineto ts (µs) + baseTimeNanoseconds"}
    epoch = t.events.num_rows > 0 and pc.min(t.events.column("start_ns")).as_py() >= _EPOCH_FROM_NS
    return {"name": "unix_epoch_ns" if epoch else "relative_ns", "source": f"Chrome trace ts (µs) of another tool, {'epoch' if epoch else 'not epoch'} judging by its values"}


def _chrome_framework(kineto: bool, header: dict[str, Any]) -> dict[str, Any]:
    """torch for Kineto and legacy autograd traces; the original run's framework for
    accelscope's own export; none known for other tools' Chrome traces."""
    other = header.get("otherData")
    exported = other.get("accelscope") if isinstance(other, dict) else None
    if isinstance(exported, dict) and isinstance(exported.get("framework"), dict) and exported["framework"].get("name"):
        return dict(exported["framework"])
    return {"name": "torch"} if kineto else {"name": "none", "writer": "a Chrome trace of another tool"}


_DEFAULT_STREAM_NAME = re.compile(r"^\s*stream\s+\d+\s*$", re.IGNORECASE)


def _kineto_streams(events: pa.Table, threads: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Names of device lanes from the trace's ``thread_name`` metadata: ``[{"rank", "device",
    "stream", "name"}]``. Kineto names its stream lanes "stream 7", which says nothing the stream
    number does not, so only names that say more are kept: the device-wide lane (tid -1,
    "Device 0"), a Chrome export of an XPlane run ("XLA Ops"). One filter and a unique over
    the events, only when a thread has such a name."""
    named = {(th["pid"], th["tid"]): th["name"].strip() for th in threads if not _DEFAULT_STREAM_NAME.match(th["name"])}
    if not named or not events.num_rows:
        return []
    lanes = (
        pl.from_arrow(events.select(["rank", "device", "stream", "pid", "tid"]))
        .filter((pl.col("device") != "cpu") & pl.col("stream").is_not_null())
        .unique(maintain_order=True)
    )
    out: dict[tuple[int, str, int], dict[str, Any]] = {}
    for rank, device, stream, pid, tid in lanes.iter_rows():  # one row per device lane
        name = named.get((pid, tid))
        if name:
            out.setdefault((rank, device, stream), {"rank": rank, "device": device, "stream": stream, "name": name})
    return sorted(out.values(), key=lambda st: (st["rank"], st["device"], st["stream"]))


# -- XPlane (TensorFlow / JAX profiler) -------------------------------------------------------
# An XSpace with planes starts with its first plane (field 1, length-delimited: 0x0A), a varint
# length, then the plane's first field: id (1, varint) or name, lines, event_metadata,
# stat_metadata, stats (2-6, length-delimited). Protobuf writers emit fields in number order.
_XPLANE_FIRST_TAGS = frozenset({0x08, 0x12, 0x1A, 0x22, 0x2A, 0x32})


def _xplane_sniff(start: bytes) -> bool:
    """An XSpace whose first plane begins as an XPlane does; text that happens to begin with a
    newline ("\\n" is 0x0A too) fails at the plane's first field."""
    if start[:1] != b"\x0a":
        return False
    for i in range(1, min(len(start), 11)):  # the plane's length, a varint of up to 10 bytes
        if not start[i] & 0x80:
            return i + 1 < len(start) and (start[i + 1] in _XPLANE_FIRST_TAGS or start[1:i + 1] == b"\x00")
    return False


def _read_xplane(source: Source, on_bytes: OnBytes) -> RankTrace:
    from accelscope.traces.kineto import rank_from_file_name
    from accelscope.traces.xplane import read_xplane

    rank = rank_from_file_name(source.path)
    imp = read_xplane(source.path, rank=rank or 0)
    if on_bytes is not None:
        on_bytes(source.size_bytes)
    meta = dict(imp.meta)
    meta["threads"] = [dict(th, rank=rank or 0) for th in meta.get("threads", [])]
    meta["streams"] = [dict(st, rank=rank or 0) for st in meta.get("streams", [])]
    return RankTrace(source, imp.events, imp.counters, rank or 0, "file name" if rank is not None else "default", meta, imp.memory)


# -- PyTorch memory snapshot (torch.cuda.memory._dump_snapshot) --------------------------------
def _snapshot_sniff(start: bytes) -> bool:
    from accelscope.traces.torch_snapshot import sniff

    return sniff(start)


def _read_snapshot(source: Source, on_bytes: OnBytes) -> RankTrace:
    from accelscope.traces.kineto import rank_from_file_name
    from accelscope.traces.torch_snapshot import read_snapshot, snapshot_spans

    rank = rank_from_file_name(source.path)
    memory, meta = read_snapshot(source.path, rank or 0)
    if on_bytes is not None:
        on_bytes(source.size_bytes)
    meta.update(framework={"name": "torch", "profiler": "torch.cuda.memory snapshot"}, threads=[], streams=[])
    return RankTrace(source, snapshot_spans(memory), None, rank or 0, "file name" if rank is not None else "default", meta, memory)


# Sniffed in this order: JSON that begins with a newline also passes the XPlane test.
FORMATS: list[TraceFormat] = [
    TraceFormat("kineto", (".json", ".json.gz"), _json_sniff, _read_kineto),
    TraceFormat("xplane", (".xplane.pb", ".xplane.pb.gz"), _xplane_sniff, _read_xplane),
    TraceFormat("torch_snapshot", (".pickle", ".pkl"), _snapshot_sniff, _read_snapshot),
]


def by_name(name: str) -> TraceFormat:
    """The registered format called ``name`` (a ``Source.format``)."""
    return next(f for f in FORMATS if f.name == name)


def format_of(path: Path, sniff: bool = False) -> str | None:
    """The format a file's name claims (the longest ending that matches); with ``sniff``, for
    a name no format claims, the first format its first bytes look like. None: not a trace.
    A name that claims a format decides, so walking a directory opens no file."""
    name = path.name.lower()
    claimed = [(len(s), f.name) for f in FORMATS for s in f.suffixes if name.endswith(s)]
    if claimed:
        return max(claimed)[1]
    return sniffed(path) if sniff else None


def sniffed(path: Path) -> str | None:
    """The first format whose ``sniff`` takes the file's first bytes (None: none does)."""
    start = head(path)
    return next((f.name for f in FORMATS if start and f.sniff(start)), None)


def suffixes_text(last: str = " or ") -> str:
    """The file endings the formats claim, for messages: ".json, .json.gz, .xplane.pb or .xplane.pb.gz"."""
    endings = [s for f in FORMATS for s in f.suffixes]
    return ", ".join(endings[:-1]) + last + endings[-1] if len(endings) > 1 else endings[0]
