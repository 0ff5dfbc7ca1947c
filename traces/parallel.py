"""Reading many trace files at once: one file (one rank) per task in a local process pool.

A job's ranks are independent files, so they decode in parallel on every core; each worker
holds one rank at a time, so its memory is bounded by the largest rank, not the sum. The
workers are spawned (not forked: the parent may run threads, and Polars' thread pool does
not survive a fork) and read with the same ``read_source`` as a serial import, so both give
the same tables.

Failures are contained per file. A file found by walking a directory that cannot be read
(corrupt, truncated, or its worker killed) is left out with one line naming it, the others
finish, and the import records it in ``meta.failed_sources``; a file the user named
itself still fails the import, as a single file does. A worker that dies (killed, out of
memory) breaks the pool: the files it had not finished are read again one per fresh
worker, so the one that killed it is found and named, and the rest still come in.

This process is one of the readers (a thread of it, handed files like a worker), which
saves starting one interpreter, unless a file is large enough to press its memory
(``_fits_here``): then only workers read, so that the OOM killer can only take a worker.
"""

from __future__ import annotations

import dataclasses
import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing import get_context
from typing import Any

from accelscope.errors import AccelscopeError
from accelscope.traces.chrome_json import gzip_size
from accelscope.traces.formats import Source

# ``workers=None`` uses a pool only where it pays: starting a worker (a fresh interpreter
# importing Polars and Arrow, ~0.4 s) and sending each rank's table back cost about as
# much as reading a 1 MiB gzipped rank, and one large rank bounds the pool's time. Measured
# on 2 cores (docs/benchmarks.md): 3 uneven ranks (5.4 MiB) 1.19x slower in a pool of 2,
# 16 ranks (29 MiB) 1.30x faster. So: at least FILES_PER_WORKER files per worker and
# PARALLEL_MIN_BYTES in all; an explicit ``workers`` is always obeyed.
PARALLEL_MIN_BYTES = 8 * 2**20
FILES_PER_WORKER = 4
# Files handed to each worker ahead: its next file waits in the pool's queue. Handed one at
# a time, a worker waited 0.18-0.34 s in all between the 64-rank job's files (up to 44 ms
# each, while this process's reading thread held the GIL); two ahead, 0.01-0.02 s.
QUEUED_PER_WORKER = 2
# This process reads files too (one worker fewer to start), but only where no file could
# press its memory: a file's import peaks at up to PEAK_PER_BYTE times its JSON (5.3x
# measured for nw0, 2x for the 3-rank job), its JSON read from a gzip file's trailer (a
# remote gzip file's taken as GZ_RATIO times its size: nw0 is 34x), and every file must fit
# HERE_MEMORY_SHARE of the memory available. Else the workers read them all, and a file
# that runs the machine out of memory costs the OOM killer a worker, not the import.
PEAK_PER_BYTE = 6
GZ_RATIO = 40
HERE_MEMORY_SHARE = 0.25
# A worker that died while reading a file: what the line says.
WORKER_DIED = "the process reading it died (killed, or out of memory)"


def default_workers() -> int:
    """Every core this process may use."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@dataclass
class ReadResult:
    """What reading a list of sources gave: what each read returned (``traces``), notes
    (files skipped as not traces), and the files that failed (``{"path", "error"}``), in
    the sources' order."""

    traces: list[Any] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)


def read_sources(
    sources: list[Source],
    read: Callable[..., Any],
    workers: int | None = None,
    on_bytes: Callable[[int], None] | None = None,
    on_file: Callable[[int], None] | None = None,
    cluster: str | None = None,
) -> ReadResult:
    """Read every source with ``read(source, on_bytes)``; ``workers`` processes (None: up to
    every core, where a pool pays, see PARALLEL_MIN_BYTES; 1, or a single source: in this
    process, with byte-level progress through ``on_bytes``), or the tasks of the Dask
    cluster at ``cluster`` (traces/cluster.py). ``on_file(size_bytes)`` is called as each
    file is done."""
    outcomes: dict[int, Any] = {}
    if cluster is not None:
        from accelscope.traces.cluster import read_on_cluster

        read_on_cluster(cluster, sources, read, outcomes, on_file)
        return _sorted_out(sources, outcomes)
    if workers is None:
        pays = sum(s.size_bytes for s in sources) >= PARALLEL_MIN_BYTES
        n = max(1, min(default_workers(), len(sources) // FILES_PER_WORKER)) if pays else 1
    else:
        n = workers
    if n < 1:
        raise AccelscopeError(f"--workers {n}: give a number of processes of at least 1 (1 reads the files one by one)")
    if len(sources) == 1:  # one file: its reader may split it over the processes (traces/kineto_chunks.py)
        sources = [dataclasses.replace(sources[0], workers=default_workers() if workers is None else n)]
    if n == 1 or len(sources) == 1:
        for i, s in enumerate(sources):
            try:
                outcomes[i] = read(s, on_bytes)
            except AccelscopeError as exc:
                if not s.from_directory:
                    raise  # a file the user named fails the import now, not after the rest is read
                outcomes[i] = exc
            if on_file is not None:
                on_file(s.size_bytes)
    else:
        _read_in_pool(sources, read, min(n, len(sources)), outcomes, on_file)
    return _sorted_out(sources, outcomes)


def _read_in_pool(sources: list[Source], read: Callable[..., Any], n: int, outcomes: dict[int, Any], on_file: Callable[[int], None] | None) -> None:
    """Fill ``outcomes`` (index -> trace or exception) with ``n`` readers: this process and
    ``n - 1`` spawned workers, the largest files first so that one big rank does not finish
    last alone."""
    order = sorted(range(len(sources)), key=lambda i: -sources[i].size_bytes)
    pending = _run_pool(sources, read, n, order, outcomes, on_file, here=_fits_here(sources[order[0]]))
    for i in pending:  # a worker died: each unfinished file again, alone, to find the one that kills it
        if _run_pool(sources, read, 1, [i], outcomes, on_file, here=False):
            outcomes[i] = AccelscopeError(f"{sources[i].location}: {WORKER_DIED}")
            if on_file is not None:
                on_file(sources[i].size_bytes)


def _fits_here(largest: Source) -> bool:
    """Whether this process may read files itself: the largest one's import fits
    HERE_MEMORY_SHARE of the memory available now."""
    import psutil

    size = largest.size_bytes
    if largest.url:  # remote: not opened here
        json_bytes = size * (GZ_RATIO if largest.path.name.endswith(".gz") else 1)
    else:
        try:
            unzipped = gzip_size(largest.path)
        except OSError:  # unreadable: its reader says so
            unzipped = None
        past_trailer = size >= (1 << 32) // GZ_RATIO  # may be over 4 GiB unzipped, which the trailer cannot tell
        json_bytes = size if unzipped is None else size * GZ_RATIO if past_trailer else unzipped
    return PEAK_PER_BYTE * json_bytes <= HERE_MEMORY_SHARE * psutil.virtual_memory().available


def _run_pool(sources: list[Source], read: Callable[..., Any], n: int, order: list[int], outcomes: dict[int, Any],
              on_file: Callable[[int], None] | None, here: bool) -> list[int]:
    """Read ``order`` with ``n`` readers, each handed the next file as it finishes one: ``n``
    spawned workers, or (``here``) a thread of this process and ``n - 1`` workers, which
    saves a worker's start (an interpreter importing Polars and Arrow: its first file began
    0.5-0.8 s after this process's on the 64-rank job) and sending that reader's results
    back. Return the indices left unread when a worker died
    (the files this process was reading are read on)."""
    todo = deque(order)
    running: dict[Future, tuple[int, bool]] = {}
    broken = False
    pool = ProcessPoolExecutor(max_workers=max(n - here, 1), mp_context=get_context("spawn"))
    local = ThreadPoolExecutor(1, thread_name_prefix="accelscope-read")  # (its thread starts with its first file)

    def hand(mine: bool) -> None:  # the next file to a reader that is free
        if todo and (mine or not broken):
            i = todo.popleft()
            running[(local if mine else pool).submit(read, sources[i], None)] = (i, mine)

    try:
        if here:  # this process starts at once, so it takes the largest file
            hand(True)
        for _ in range(QUEUED_PER_WORKER * (n - here)):
            hand(False)
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for f in done:
                i, mine = running.pop(f)
                try:
                    outcomes[i] = f.result()
                except BrokenProcessPool:
                    broken = True
                    continue
                except AccelscopeError as exc:
                    outcomes[i] = exc
                if on_file is not None:
                    on_file(sources[i].size_bytes)
                hand(mine)
    finally:  # every file in, the workers exit on their own while the run is assembled; else wait for them
        local.shutdown(wait=True, cancel_futures=True)
        pool.shutdown(wait=bool(running), cancel_futures=True)
    return [i for i in order if i not in outcomes]


def _sorted_out(sources: list[Source], outcomes: dict[int, Any]) -> ReadResult:
    """Outcomes in the sources' order: a file that is not a trace, found in a directory, is
    a note; another failure of a file found in a directory, while other files were read, is
    a failed source; any other failure is raised (the first in order)."""
    from accelscope.traces.kineto import NotATraceError

    out = ReadResult()
    read_any = any(not isinstance(o, BaseException) for o in outcomes.values())
    for i, s in enumerate(sources):
        o = outcomes[i]
        if not isinstance(o, BaseException):
            out.traces.append(o)
        elif isinstance(o, NotATraceError) and s.from_directory:
            out.notes.append(f"skipped {o}")
        elif s.from_directory and read_any:
            out.failed.append({"path": s.location, "error": str(o)})
        else:
            raise o
    return out
