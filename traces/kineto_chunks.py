"""One large Kineto JSON file decoded by several processes at once, a byte range of its
event array each.

A job's ranks already decode in parallel (traces/parallel.py); this is for the single rank
of hundreds of MB that would otherwise keep one core busy while the others wait. The file
is cut where one element of ``traceEvents`` ends and the next begins: a guess ("}, {"),
checked by the decoding itself (chrome_json: a cut inside a string or between nested
objects leaves a range that does not decode). This process decodes the first range while
spawned workers decode the others, each into the same columns a serial read makes; the
batches are then put together in file order. A gzipped file is first decompressed into a
temporary file (a gzip stream cannot be cut). Anything unusual (the array form, begin/end
pairs that may span two ranges, a range that did not decode, a worker that died, a full
disk) falls back to the serial read, which is also what names a broken file.
"""

from __future__ import annotations

import gzip
import logging
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import pyarrow as pa

from accelscope.traces.chrome_events import CounterSamples
from accelscope.traces.chrome_json import _BOUNDARY, FAST_WINDOW, Scanner, TraceFormatError, gzip_size
from accelscope.traces.kineto import CHUNK_BYTES
from accelscope.traces.kineto_memory import MemorySamples

log = logging.getLogger(__name__)

# This process starts decoding at once; a worker first starts (a fresh interpreter importing
# Polars and Arrow, ~0.4 s) and at the end hands its columns over (~0.3 s for 170 MiB):
# together what a serial read does with ~90 MB, so this process takes that much more than an
# even share, and a pool pays only for files of twice that (docs/benchmarks.md).
HEAD_START_BYTES = 96 << 20
MIN_BYTES = 2 * HEAD_START_BYTES


@dataclass
class RangeResult:
    """What one byte range of the event array gave, in a form that crosses processes."""

    table: pa.Table | str | None  # a worker's: the Arrow IPC file it wrote (mapped, not copied, here)
    n_events: int
    threads: dict[tuple[int, int], str]
    processes: dict[int, str]
    kineto_categories: bool
    counters: CounterSamples
    memory: MemorySamples
    instants: list[Any]
    spans: bool  # begin/end events were seen: they may pair across ranges
    head: bytes = b""  # the document up to its event array (first range)
    tail: list[bytes] = field(default_factory=list)  # what follows the event array (last range)


def read_in_ranges(path: Path, workers: int, on_bytes: Any = None) -> tuple[Any, dict[str, Any]] | None:
    """The merged batches and header of ``path`` decoded by ``workers`` processes, or None
    where that does not apply or pay (the caller then reads it serially)."""
    try:
        with tempfile.TemporaryDirectory(prefix="accelscope-ranges-") as spill:
            document = _plain(path, Path(spill))
            cuts = split(document, workers) if document is not None else None
            if cuts is None:
                return None
            ranges = list(zip(cuts, cuts[1:]))
            last = len(ranges) - 1
            with ProcessPoolExecutor(max_workers=len(ranges) - 1, mp_context=get_context("spawn")) as pool:
                futures = [pool.submit(decode_range, str(document), lo, hi, False, i == last, spill) for i, (lo, hi) in enumerate(ranges) if i > 0]
                # Progress from this process's own range, as a share of the file (the workers' run alongside).
                scale = path.stat().st_size / max(ranges[0][1], 1)
                shown = (lambda n: on_bytes(int(n * scale))) if on_bytes is not None else None
                first = decode_range(str(document), *ranges[0], True, last == 0, on_bytes=shown)
                results = [first] + [f.result() for f in futures]
            for r in results:  # mapped: the pages stay readable once the directory is gone
                if isinstance(r.table, str):
                    r.table = pa.ipc.open_file(pa.memory_map(r.table)).read_all()
    except Exception as exc:  # a wrong cut, a dead worker, a full disk: the serial read decides
        log.info("accelscope: %s: read serially (%s)", path, exc)
        return None
    if any(r.spans for r in results):
        return None
    if on_bytes is not None:
        on_bytes(path.stat().st_size)
    return merge(path, results)


def _plain(path: Path, spill: Path) -> Path | None:
    """``path`` itself, or for a gzipped file large enough to split, its decompressed copy in
    ``spill`` (a gzip stream cannot be cut; decompressing is serial either way), or None."""
    unzipped = gzip_size(path)
    if unzipped is None:
        return path
    if unzipped < MIN_BYTES and path.stat().st_size < (1 << 32) // 16:  # (a larger file may be over 4 GiB uncompressed)
        return None
    plain = spill / "document.json"
    with gzip.open(path, "rb") as src, open(plain, "wb") as out:
        shutil.copyfileobj(src, out, CHUNK_BYTES)
    return plain


def split(path: Path, workers: int) -> list[int] | None:
    """Byte offsets cutting the event array of an uncompressed document into ``workers``
    ranges (first 0, last the file's size), or None: the array form, too small, or no cut found."""
    try:
        size = path.stat().st_size
        if size < MIN_BYTES:
            return None
        with open(path, "rb") as fh:
            scanner = Scanner(path)
            while scanner.state == "before":
                data = fh.read(CHUNK_BYTES)
                if not data:
                    return None
                scanner.feed(data)
            if scanner.array_form or scanner.state != "in":
                return None
            start = len(scanner.head)
            # No more ranges than pay: each worker's start costs what reading HEAD_START_BYTES does.
            workers = min(workers, (size - start) // HEAD_START_BYTES)
            if workers < 2:
                return None
            cuts = [0]
            share = (size - start - HEAD_START_BYTES) // workers  # this process: HEAD_START_BYTES + share
            at = start + HEAD_START_BYTES + share
            for _ in range(workers - 1):
                fh.seek(at)
                m = _BOUNDARY.search(fh.read(FAST_WINDOW))
                if m is None:
                    return None
                cut = at + m.end() - 1  # the "{" of the next element
                if cut <= cuts[-1]:
                    return None
                cuts.append(cut)
                at += share
    except OSError:
        return None
    return cuts + [size]


def decode_range(path: str, lo: int, hi: int, first: bool, last: bool, spill: str | None = None, on_bytes: Any = None) -> RangeResult:
    """Decode the elements in bytes [lo, hi) of the file; the task each worker runs. The
    first range starts with the document, the last ends with it; every other edge is a cut
    just before an element. With ``spill`` (a directory) the columns are written there as
    an Arrow IPC file, which the parent maps instead of receiving a copy through a pipe.
    ``on_bytes(n)``: the range's bytes read so far (this process's range: the progress bar)."""
    from accelscope.traces.kineto import _add_batch, _Batches

    p = Path(path)
    batches, scanner = _Batches(p), Scanner(p)
    if not first:
        scanner.state = "in"
    with open(p, "rb") as fh:
        fh.seek(lo)
        left = hi - lo
        while left > 0:
            data = fh.read(min(CHUNK_BYTES, left))
            if not data:
                break
            left -= len(data)
            if on_bytes is not None:
                on_bytes(hi - lo - left)
            _add_batch(scanner, batches, scanner.feed(data))
    if not last:  # close the array here: a cut that was not between two elements fails now
        _add_batch(scanner, batches, scanner.feed(b"]"))
    _add_batch(scanner, batches, scanner.flush())
    if scanner.state != "after" or (not last and b"".join(scanner.tail) != b"]"):
        raise TraceFormatError(f"{p}: bytes {lo}-{hi} are not whole elements of the event array")
    pairs = batches.pairs
    table: pa.Table | str | None = pa.concat_tables(batches.tables) if batches.tables else None
    if spill is not None and table is not None:
        out = str(Path(spill) / f"range-{lo}.arrow")
        with pa.OSFile(out, "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        table = out
    return RangeResult(
        table, batches.n_events, batches.threads, batches.processes,
        batches.kineto_categories, batches.counters, batches.memory, batches.instants,
        bool(pairs.paired or pairs.dropped or pairs.stacks), scanner.head if first else b"", scanner.tail if last else [],
    )


def merge(path: Path, results: list[RangeResult]) -> tuple[Any, dict[str, Any]]:
    """The ranges' results as one serial read would have accumulated them, and the header."""
    from accelscope.traces.kineto import _Batches

    batches = _Batches(path)
    for r in results:
        if r.table is not None:
            batches.tables.append(r.table)
        batches.n_events += r.n_events
        batches.threads.update(r.threads)
        batches.processes.update(r.processes)
        batches.kineto_categories |= r.kineto_categories
        batches.counters.extend(r.counters)
        batches.memory.extend(r.memory)
        batches.instants += r.instants
    scanner = Scanner(path, state="after", head=results[0].head, tail=results[-1].tail)
    return batches, scanner.header()
