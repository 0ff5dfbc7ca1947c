"""One rank per task: each trace file is read and written as its own rank part where it is
read (this process, a pool worker, a cluster node), and only a small summary comes back.

An import of several files makes a multi-rank run (traces/ranks.py)::

    RUN/job.json     the job, and the import's run-wide metadata (``run_meta``)
    RUN/rank-N/      an ordinary run directory per rank, events, counters and memory as its file gave them

No rank's events ever travel to the process that assembles the run, so its memory does not
grow with the number of ranks, and no table is sent back across processes. The clocks are
lined up from the summaries (``alignment``) and the offsets are written into each rank's
metadata (``clock_sync``) and applied when the run is read, as for a recorded job.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from accelscope.traces import ranks
from accelscope.traces import schema as S
from accelscope.traces.formats import Source
from accelscope.traces.run import META_FILE, TABLES, write_json_atomic, write_parquet_atomic

PART_PREFIX = "part-"  # a rank part not yet named by its rank (its rank is settled once all are read)
# A rank of at least twice this many events is written as two Parquet parts in two threads
# (0.17 s against 0.32 s for 625k rows on 2 cores, docs/benchmarks.md).
SPLIT_ROWS = 128_000


@dataclass
class PartSummary:
    """What reading one file gave, without its events: enough to number the ranks, line up
    their clocks and write the run's metadata."""

    source: Source
    part_dir: str  # where the rank's part was written
    rank: int
    rank_source: str
    meta: dict[str, Any]
    events: int
    steps: int
    first_ns: int | None
    last_ns: int | None
    step_starts: dict[str, int] = field(default_factory=dict)


def part_name(source: Source) -> str:
    """The directory a source's part is written to before its rank is known: a digest of
    where it came from, so that parallel tasks never collide."""
    return PART_PREFIX + hashlib.sha256(source.location.encode()).hexdigest()[:16]


def _step_starts(events: pa.Table) -> dict[str, int]:
    steps = events.filter(pc.equal(events.column("kind"), S.STEP))
    out: dict[str, int] = {}
    for name, start in zip(steps.column("name").to_pylist(), steps.column("start_ns").to_pylist()):
        out[name] = min(start, out.get(name, start))
    return out


def write_part(source: Source, on_bytes: Callable[[int], None] | None, *, out_dir: str) -> PartSummary:
    """Read ``source`` and write it as a rank part under ``out_dir``; the task a worker runs.
    A source given by URL is copied to a local file first (traces/remote.py)."""
    from accelscope.traces.importer import read_source
    from accelscope.traces.remote import local_file

    with local_file(source) as local:
        trace = read_source(local, on_bytes)
    trace.source = source
    events = trace.events.cast(S.EVENT_SCHEMA)
    counters = trace.counters.cast(S.COUNTER_SCHEMA) if trace.counters is not None and trace.counters.num_rows else None
    memory = trace.memory.cast(S.MEMORY_SCHEMA) if trace.memory is not None and trace.memory.num_rows else None
    first = pc.min(events.column("start_ns")).as_py() if events.num_rows else None
    last = pc.max(pc.add(events.column("start_ns"), events.column("dur_ns"))).as_py() if events.num_rows else None
    steps = int(pc.sum(pc.equal(events.column("kind"), S.STEP)).as_py() or 0)
    path = Path(out_dir) / part_name(source)
    if path.exists():
        shutil.rmtree(path)
    for name in TABLES:
        (path / name).mkdir(parents=True)
    split = events.num_rows >= 2 * SPLIT_ROWS
    half = events.num_rows // 2 if split else events.num_rows
    writes = [(events.slice(0, half), path / "events" / "part-000001.parquet")]
    if split:  # two parts, in file order
        writes.append((events.slice(half), path / "events" / "part-000002.parquet"))
    if counters is not None:
        writes.append((counters, path / "counters" / "part-000001.parquet"))
    if memory is not None:
        writes.append((memory, path / "memory" / "part-000001.parquet"))
    if split:
        with ThreadPoolExecutor(2) as pool:  # Parquet encoding releases the GIL
            list(pool.map(lambda w: write_parquet_atomic(*w), writes))
    else:
        for table, where in writes:
            write_parquet_atomic(table, where)
    meta = {k: v for k, v in trace.meta.items() if k != "streams" or v}
    meta.update(schema=S.SCHEMA_NAME, schema_version=S.SCHEMA_VERSION, complete=True, mode="imported", imported=True,
                rank=trace.rank, source=source.location, steps=steps, start_ns=first, end_ns=last)
    write_json_atomic(path / META_FILE, meta)
    return PartSummary(source, str(path), trace.rank, trace.rank_source, trace.meta, events.num_rows, steps,
                       first, last, _step_starts(events))


def alignment(parts: list[PartSummary]) -> dict[str, Any]:
    """Put every rank on one clock; returns the method and per-rank offsets for the metadata.

    Ranks recorded on epoch clocks (Kineto, anchored XPlane) are already on one clock up
    to the hosts' clock sync (NTP: usually well under a millisecond). They are kept as
    recorded when their time ranges overlap, and the skew is only estimated: the spread
    of the start of the first step all ranks share (steps start together when the job
    synchronises every step). Ranks whose ranges do not overlap at all (relative clocks,
    or a host with a wrong clock) are shifted so that the first shared step, else the
    first event, starts at the same time as on the lowest rank.
    """
    if len(parts) < 2:
        return {"method": "single rank"}
    ranges = [(p.first_ns or 0, p.last_ns or 0) for p in parts]
    overlap = max(r[0] for r in ranges) < min(r[1] for r in ranges)
    starts = [p.step_starts for p in parts]
    common = set(starts[0]).intersection(*starts[1:])
    first_common = min(common, key=lambda n: starts[0][n]) if common else None
    if overlap:
        skew = None
        if first_common is not None:
            values = [s[first_common] for s in starts]
            skew = max(values) - min(values)
        return {"method": "as recorded (epoch clocks overlap)", "reference_step": first_common, "estimated_skew_ns": skew,
                "offsets_ns": {str(p.rank): 0 for p in parts}}
    offsets = {}
    for p, s, r in zip(parts, starts, ranges):
        offset = (starts[0][first_common] - s[first_common]) if first_common is not None else (ranges[0][0] - r[0])
        offsets[str(p.rank)] = int(offset)
    method = f"shifted to align the start of {first_common}" if first_common is not None else "shifted to align the first event"
    return {"method": method, "reference_step": first_common, "offsets_ns": offsets}


def assemble(tmp: Path, parts: list[PartSummary], run_meta: dict[str, Any]) -> None:
    """Make ``tmp`` (which holds the parts) a run: one rank, its part becomes the run itself;
    several, the parts are named ``rank-N`` with their clock offsets, and ``job.json`` holds
    ``run_meta``. The caller renames ``tmp`` into place."""
    if len(parts) == 1:
        part = Path(parts[0].part_dir)
        meta = _read(part / META_FILE)
        meta.pop("source", None)
        meta.update(run_meta)
        write_json_atomic(part / META_FILE, meta)
        for name in (*TABLES, META_FILE):
            os.replace(part / name, tmp / name)
        part.rmdir()
        return
    offsets = (run_meta.get("clock_alignment") or {}).get("offsets_ns") or {}
    for p in parts:
        part = Path(p.part_dir)
        offset = int(offsets.get(str(p.rank)) or 0)
        if offset:
            meta = _read(part / META_FILE)
            meta["clock_sync"] = {"method": "import alignment", "samples": [{"at_ns": p.first_ns or 0, "offset_ns": offset}]}
            write_json_atomic(part / META_FILE, meta)
        os.replace(part, tmp / ranks.rank_dir_name(p.rank))
    job = {"schema": ranks.JOB_SCHEMA, "key": "import", "world_size": len(parts), "run_meta": run_meta}
    write_json_atomic(tmp / ranks.JOB_FILE, job)


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def update_run_meta(run_dir: Path, **fields: Any) -> None:
    """Set run-wide metadata fields of a run written by an import (either layout)."""
    job = run_dir / ranks.JOB_FILE
    if job.is_file():
        doc = _read(job)
        doc.setdefault("run_meta", {}).update(fields)
        write_json_atomic(job, doc)
    else:
        doc = _read(run_dir / META_FILE)
        doc.update(fields)
        write_json_atomic(run_dir / META_FILE, doc)
