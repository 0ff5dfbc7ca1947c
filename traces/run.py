"""Run directories: written incrementally while training runs, read back as Polars tables.

Layout (version 1, see docs/trace-format.md)::

    RUN/meta.json                      metadata, rewritten atomically as it changes
    RUN/events/part-000001.parquet     slices, one file per flush
    RUN/counters/part-000001.parquet   time series samples, one file per flush
    RUN/memory/part-000001.parquet     allocator events (torch.profiler's profile_memory); absent in older runs

Every file appears by atomic rename, so a run whose process was killed mid-recording
still opens with everything flushed before the kill.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import re
import threading
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from accelscope.errors import RunFormatError
from accelscope.traces import ranks
from accelscope.traces.schema import (
    COUNTER_COLUMNS,
    COUNTER_SCHEMA,
    EVENT_COLUMNS,
    EVENT_SCHEMA,
    MEMORY_COLUMNS,
    MEMORY_SCHEMA,
    SCHEMA_NAME,
    SCHEMA_VERSION,
)

log = logging.getLogger(__name__)

META_FILE = "meta.json"
LIVE_FILE = "live.json"  # the recorder's live analysis status (accelscope.live), rewritten while recording
# A table missing from a run's directory (older runs have no memory/) reads as empty.
TABLES = {"events": EVENT_SCHEMA, "counters": COUNTER_SCHEMA, "memory": MEMORY_SCHEMA}
# The tables' Arrow types as Polars types (pl.from_arrow on an empty table would import pandas).
_POLARS_TYPES = {pa.int64(): pl.Int64, pa.int32(): pl.Int32, pa.float64(): pl.Float64, pa.string(): pl.String}
SLICE_COLUMNS = tuple(c for c in EVENT_COLUMNS if c != "args")  # what analysis and drawing read
_PART_RE = re.compile(r"^(part|compacted)-(\d{6,})\.parquet$")
# Rows kept in memory while the disk refuses writes; beyond this the oldest are dropped
# (and counted) so that a full disk cannot exhaust the training job's memory.
MAX_PENDING_ROWS = 2_000_000


def write_json_atomic(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=1, sort_keys=True, default=str)
        fh.write("\n")
    os.replace(tmp, path)


def write_parquet_atomic(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)


def unique_run_dir(path: str | os.PathLike[str]) -> Path:
    """Return ``path`` if it is free (missing or empty), else the first free ``path.N``."""
    base = Path(path)
    candidate = base
    n = 0
    while candidate.exists() and (not candidate.is_dir() or any(candidate.iterdir())):
        n += 1
        candidate = base.with_name(f"{base.name}.{n}")
    return candidate


class RunWriter:
    """Collects rows from any thread and flushes them to Parquet parts in the background.

    ``add_event``/``add_counter`` are cheap enough for the training thread: they append a
    tuple to a deque. A flusher thread turns pending rows into Arrow tables every
    ``flush_interval_s`` seconds. Write failures (a full disk) are logged once, recorded
    in the metadata when possible, and retried on the next flush.
    """

    def __init__(self, path: str | os.PathLike[str], meta: dict[str, Any], flush_interval_s: float = 1.0):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        for name in TABLES:
            (self.path / name).mkdir(exist_ok=True)
        self.meta: dict[str, Any] = {
            "schema": SCHEMA_NAME,
            "schema_version": SCHEMA_VERSION,
            "complete": False,
            **meta,
        }
        self.flush_interval_s = flush_interval_s
        #: Called with (name, device, time_ns, value) for every sample (live analysis).
        self.counter_listener = None
        self._rows: dict[str, collections.deque] = {name: collections.deque() for name in TABLES}
        self._tables: dict[str, collections.deque] = {name: collections.deque() for name in TABLES}
        self._part = {name: 0 for name in TABLES}
        self._lock = threading.Lock()  # serialises flushes, not appends
        self._meta_dirty = True
        self._write_error: str | None = None
        self.rows_dropped = 0
        self._stop = threading.Event()
        self._closed = False
        self._flush_meta()
        self._thread = threading.Thread(target=self._run, name="accelscope-writer", daemon=True)
        self._thread.start()

    # -- producers (any thread) -------------------------------------------------------
    def add_event(self, row: tuple) -> None:
        """Queue one slice, a tuple in EVENT_COLUMNS order."""
        self._rows["events"].append(row)

    def add_counter(self, row: tuple) -> None:
        """Queue one sample, a tuple in COUNTER_COLUMNS order."""
        self._rows["counters"].append(row)
        if self.counter_listener is not None:
            self.counter_listener(row[0], row[1], row[2], row[3])

    def add_table(self, name: str, table: pa.Table) -> None:
        """Queue a whole Arrow table (for collectors that produce columns in bulk)."""
        schema = TABLES[name]
        for f in schema:  # a nullable column the writer does not fill (added to the schema after it was written) is null
            if f.name not in table.column_names and f.nullable:
                table = table.append_column(f.name, pa.nulls(table.num_rows, f.type))
        self._tables[name].append(table.select(list(schema.names)).cast(schema))

    def update_meta(self, **fields: Any) -> None:
        with self._lock:
            self.meta.update(fields)
            self._meta_dirty = True

    def set_collector_status(self, name: str, status: str, reason: str | None = None) -> None:
        """Record a collector as ``ok``, ``unavailable`` or ``dropped`` (with the reason)."""
        with self._lock:
            entry = {"status": status}
            if reason:
                entry["reason"] = reason
            self.meta.setdefault("collectors", {})[name] = entry
            self._meta_dirty = True

    def set_thread_name(self, pid: int, tid: int, name: str) -> None:
        with self._lock:
            threads = self.meta.setdefault("threads", [])
            if not any(t["pid"] == pid and t["tid"] == tid for t in threads):
                threads.append({"pid": pid, "tid": tid, "name": name})
                self._meta_dirty = True

    # -- flushing ---------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval_s):
            self.flush()

    def _drain(self, name: str) -> list[pa.Table]:
        rows = self._rows[name]
        n = len(rows)
        tables = []
        if n:
            batch = [rows.popleft() for _ in range(n)]
            columns = list(zip(*batch))
            schema = TABLES[name]
            tables.append(
                pa.table({col: pa.array(columns[i], type=schema.field(col).type) for i, col in enumerate(schema.names)}, schema=schema)
            )
        while self._tables[name]:
            tables.append(self._tables[name].popleft())
        return tables

    def flush(self) -> None:
        """Write everything pending now. Never raises: failures are logged and retried."""
        with self._lock:
            for name in TABLES:
                try:
                    tables = self._drain(name)
                except Exception as exc:  # a malformed row from a collector
                    self._note_error(f"bad {name} rows dropped: {exc}")
                    continue
                if not tables:
                    continue
                table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
                part = self.path / name / f"part-{self._part[name] + 1:06d}.parquet"
                try:
                    write_parquet_atomic(table, part)
                    self._part[name] += 1
                except OSError as exc:
                    self._note_error(f"cannot write {part}: {exc}")
                    self._requeue(name, table)
            if self._meta_dirty:
                try:
                    write_json_atomic(self.path / META_FILE, self.meta)
                    self._meta_dirty = False
                except OSError as exc:
                    self._note_error(f"cannot write {self.path / META_FILE}: {exc}")

    def _requeue(self, name: str, table: pa.Table) -> None:
        if table.num_rows > MAX_PENDING_ROWS:
            self.rows_dropped += table.num_rows - MAX_PENDING_ROWS
            table = table.slice(table.num_rows - MAX_PENDING_ROWS)
        self._tables[name].appendleft(table)

    def _note_error(self, message: str) -> None:
        if self._write_error is None:
            log.warning("accelscope: %s (will retry; training continues)", message)
        self._write_error = message
        self.meta["write_error"] = message
        self._meta_dirty = True

    def _flush_meta(self) -> None:
        write_json_atomic(self.path / META_FILE, self.meta)
        self._meta_dirty = False

    def close(self, **final_meta: Any) -> None:
        """Stop the flusher, write what is pending and mark the run complete."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._thread.join(timeout=30)
        self.flush()
        complete = self._pending_rows() == 0
        with self._lock:
            self.meta.update(final_meta)
            self.meta["complete"] = complete
            if self.rows_dropped:
                self.meta["rows_dropped"] = self.rows_dropped
            self._meta_dirty = True
        self.flush()
        if complete:
            for name in TABLES:
                try:
                    compact(self.path / name)
                except OSError as exc:
                    log.warning("accelscope: could not compact %s: %s", self.path / name, exc)

    def _pending_rows(self) -> int:
        return sum(len(q) for q in self._rows.values()) + sum(t.num_rows for q in self._tables.values() for t in q)


def _parts(directory: Path) -> list[Path]:
    """Readable part files of one table, skipping parts already merged into a compacted file."""
    if not directory.is_dir():
        return []
    found: list[tuple[int, str, Path]] = []
    for entry in directory.iterdir():
        m = _PART_RE.match(entry.name)
        if m:
            found.append((int(m.group(2)), m.group(1), entry))
    covered = max((n for n, kind, _ in found if kind == "compacted"), default=0)
    return [p for n, kind, p in sorted(found) if kind == "compacted" and n == covered or kind == "part" and n > covered]


def compact(directory: Path) -> None:
    """Merge the part files of one table into one file, crash-safely.

    The merged file is named after the last part it holds; readers ignore parts it
    covers, so a crash between writing it and deleting the parts loses nothing.
    """
    parts = _parts(directory)
    if len(parts) <= 1:
        return
    last = max(int(_PART_RE.match(p.name).group(2)) for p in parts)
    table = pa.concat_tables([pq.read_table(p) for p in parts])
    write_parquet_atomic(table, directory / f"compacted-{last:06d}.parquet")
    for p in parts:
        p.unlink(missing_ok=True)


class Run:
    """A run directory opened for reading. Tables load lazily and are cached."""

    def __init__(self, path: Path, meta: dict[str, Any]):
        self.path = path
        self.meta = meta
        #: (rank, directory, clock samples) of each rank's part; empty for a single-part run.
        self.parts: list[tuple[int, Path, list[tuple[int, int]]]] = []
        self._cache: dict[str, pl.DataFrame] = {}
        self.read_warnings: list[str] = []

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Run:
        """Open a run directory, raising RunFormatError with a one-line reason if it is not one.
        A multi-rank run (``job.json`` and ``rank-N/`` parts, traces/ranks.py) opens as one run
        with every rank on the reference rank's clock."""
        p = Path(path)
        if not p.exists():
            raise RunFormatError(f"{p}: no such file or directory")
        if not p.is_dir():
            raise RunFormatError(f"{p}: not an accelscope run directory (it is a file)")
        if not (p / META_FILE).is_file() and ranks.is_multi_rank(p):
            parts = [(rank, d, _read_meta(d)) for rank, d in ranks.rank_parts(p)]
            if not parts:
                raise RunFormatError(f"{p}: a multi-rank run with no rank recorded yet (no rank-N/{META_FILE})")
            run = cls(p, ranks.merge_meta(p, [(r, m) for r, _, m in parts]))
            run.parts = [(r, d, ranks.clock_samples(m)) for r, d, m in parts]
            return run
        return cls(p, _read_meta(p))

    @property
    def name(self) -> str:
        """The run's display name: the imported source's name for a run imported on the fly
        (its cache directory's name means nothing to the user), else the directory's name."""
        name = self.meta.get("source_name")
        return name if isinstance(name, str) and name else self.path.name

    @property
    def live(self) -> bool:
        """True while the run is still being recorded (its writer has not closed it)."""
        return not self.meta.get("complete", False)

    def fingerprint(self) -> tuple:
        """What is on disk now: changes whenever a part is flushed, parts are compacted or
        the metadata is rewritten. Cheap (a few stat calls), for readers that poll a
        run being recorded; compare it with the value taken when this Run was opened."""
        if self.parts:
            return (tuple(d.name for _, d in ranks.rank_parts(self.path)), *(run_fingerprint(d) for _, d, _ in self.parts))
        return run_fingerprint(self.path)

    def _table(self, name: str, columns: tuple[str, ...] | None = None) -> pl.DataFrame:
        key = (name, columns)
        if key not in self._cache:
            full = self._cache.get((name, None))
            if full is not None and columns is not None:  # already loaded in full: just select
                self._cache[key] = full.select(columns)
                return self._cache[key]
            self._cache[key] = self._read(name, columns)
        return self._cache[key]

    def _read(self, name: str, columns: tuple[str, ...] | None, where: pl.Expr | None = None,
              parts: list[tuple[int, Path, list[tuple[int, int]]]] | None = None) -> pl.DataFrame:
        """One table (``columns`` of it, the rows ``where`` holds) from every part of every
        rank (or of ``parts``), each rank's times moved onto the run's clock."""
        schema = TABLES[name] if columns is None else pa.schema([TABLES[name].field(c) for c in columns])
        empty = pl.DataFrame(schema={f.name: _POLARS_TYPES[f.type] for f in schema})
        frames = []
        for rank, directory, samples in parts or self.parts or [(None, self.path, [])]:
            fixes = ranks.shift_exprs(list(schema.names), samples)
            if rank is not None and "rank" in schema.names:
                fixes.append(pl.lit(rank, dtype=pl.Int32).alias("rank"))
            for part in _parts(directory / name):
                try:
                    df = _read_part(part, schema, where)
                    df = df if df.schema == empty.schema else df.cast(dict(empty.schema))
                except Exception as exc:  # a damaged part must not hide the others
                    if where is None:  # (reported once, when the whole table is read)
                        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                        self.read_warnings.append(f"{part}: skipped unreadable part ({first})")
                    continue
                frames.append(df.with_columns(fixes) if fixes else df)
        return pl.concat(frames) if frames else empty

    @property
    def events(self) -> pl.DataFrame:
        """Every column of the events table."""
        return self._table("events")

    @property
    def slices(self) -> pl.DataFrame:
        """The events table without ``args``: what analysis and drawing need. The args
        JSON is most of a run's bytes, so this loads several times faster."""
        return self._table("events", SLICE_COLUMNS)

    def events_named(self, pattern: str) -> pl.DataFrame:
        """Every column (``args`` too) of the events whose name matches the regular expression
        ``pattern``: what an analysis needs the args of, without loading every event's."""
        full = self._cache.get(("events", None))
        if full is not None:
            return full.filter(pl.col("name").str.contains(pattern))
        return self._read("events", None, pl.col("name").str.contains(pattern))

    @property
    def counters(self) -> pl.DataFrame:
        return self._table("counters")

    @property
    def memory(self) -> pl.DataFrame:
        """The allocator events (MEMORY_SCHEMA); empty for a run that recorded none, and for
        runs written before the table existed."""
        return self._table("memory")

    def holds(self, name: str) -> bool:
        """Whether any rank has a part of table ``name``, without reading one (a run without
        allocator events has no memory parts): what a page decides before any analysis."""
        return any(_parts(directory / name) for _, directory, _ in self.parts or [(None, self.path, [])])

    def slices_where(self, where: pl.Expr) -> pl.DataFrame:
        """The slices (``slices``' columns) for which ``where`` holds, from the loaded table when
        there is one, else with the predicate pushed into each part's scan. ``where`` is applied
        to each rank's times as recorded, before they move onto the run's clock: filter on
        kinds, names and threads here, on times afterwards."""
        full = self._cache.get(("events", SLICE_COLUMNS))
        if full is None and ("events", None) in self._cache:
            full = self._cache[("events", None)].select(SLICE_COLUMNS)
        if full is not None:
            return full.filter(where)
        return self._read("events", SLICE_COLUMNS, where)

    @property
    def slices_loaded(self) -> bool:
        """Whether the whole slices table is in memory already (nothing to gain by reading ranks one by one)."""
        return ("events", SLICE_COLUMNS) in self._cache or ("events", None) in self._cache

    def slices_range(self) -> tuple[int, int] | None:
        """The slices' first start and last end on the run's clock (None without slices):
        from the loaded table, else by streaming two columns of each part (never every event)."""
        full = self._cache.get(("events", SLICE_COLUMNS))
        if full is None:
            full = self._cache.get(("events", None))
        if full is not None:
            return (int(full["start_ns"].min()), int((full["start_ns"] + full["dur_ns"]).max())) if full.height else None
        lo, hi = [], []
        for _, directory, samples in self.parts or [(None, self.path, [])]:
            fixes = ranks.shift_exprs(["start_ns", "dur_ns"], samples)
            for part in _parts(directory / "events"):
                try:
                    lf = pl.scan_parquet(part, glob=False).select("start_ns", "dur_ns")
                    got = (lf.with_columns(fixes) if fixes else lf).select(
                        a=pl.col("start_ns").min(), b=(pl.col("start_ns") + pl.col("dur_ns")).max()).collect()
                except Exception:  # a damaged part: reading the table says so
                    continue
                if got["a"][0] is not None:
                    lo.append(int(got["a"][0]))
                    hi.append(int(got["b"][0]))
        return (min(lo), max(hi)) if lo else None

    def event_rows(self) -> int:
        """How many events the run holds, from the Parquet footers (no event is read)."""
        total = 0
        for _, directory, _ in self.parts or [(None, self.path, [])]:
            for part in _parts(directory / "events"):
                try:
                    total += pq.read_metadata(part).num_rows
                except Exception:  # a damaged part: reading it will say so
                    continue
        return total

    def rank_ids(self) -> list[int]:
        """The ranks that have events, in order (a multi-rank run's parts, or the rank column)."""
        if self.parts:
            return [r for r, _, _ in self.parts]
        return sorted(self._table("events", ("rank",))["rank"].unique().to_list())

    def rank_slices(self, rank: int) -> pl.DataFrame:
        """One rank's slices (``slices`` of that rank), read alone: a multi-rank run reads only
        that rank's part, a single-part run only that rank's rows (pushed into the scan)."""
        full = self._cache.get(("events", SLICE_COLUMNS))
        if full is None and ("events", None) in self._cache:
            full = self._cache[("events", None)].select(SLICE_COLUMNS)
        if full is not None:
            return full.filter(pl.col("rank") == rank)
        if self.parts:
            return self._read("events", SLICE_COLUMNS, parts=[p for p in self.parts if p[0] == rank])
        return self._read("events", SLICE_COLUMNS, pl.col("rank") == rank)

    def thread_names(self) -> dict[tuple[int, int], str]:
        return {(t["pid"], t["tid"]): t["name"] for t in self.meta.get("threads", [])}

    def stream_names(self) -> dict[tuple[int, str, int], str]:
        """(rank, device, stream) -> the stream's own name where the trace gives one (an XPlane
        device line: "XLA Ops", "Stream #7(Compute)"); ``meta["streams"]``."""
        out = {}
        for st in self.meta.get("streams", []):
            if isinstance(st, dict) and isinstance(st.get("stream"), int) and st.get("name"):
                out[(int(st.get("rank", 0)), str(st.get("device")), st["stream"])] = str(st["name"])
        return out

    def span_ns(self, slices_range: tuple[int, int] | None = None) -> tuple[int, int]:
        """(first, last) time of the run on its clock: the recorder's start and end, widened
        to cover every slice and sample (imported runs have only those); (0, 0) when empty.
        ``slices_range``: the slices' first start and last end where the caller knows them
        (then the slices are not read)."""
        lo, hi = [], []
        start, end = self.meta.get("start_ns"), self.meta.get("end_ns")
        if isinstance(start, int):
            lo.append(start)
        if isinstance(end, int):
            hi.append(end)
        ct = self.counters
        if slices_range is None:
            slices_range = self.slices_range()
        if slices_range is not None:
            lo.append(slices_range[0])
            hi.append(slices_range[1])
        if ct.height:
            lo.append(int(ct["time_ns"].min()))
            hi.append(int(ct["time_ns"].max()))
        first = min(lo) if lo else 0
        return first, max(hi + [first])


def _read_meta(p: Path) -> dict[str, Any]:
    meta_path = p / META_FILE
    if not meta_path.is_file():
        empty = not any(p.iterdir())
        raise RunFormatError(f"{p}: {'empty directory' if empty else 'not an accelscope run'} (no {META_FILE})")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunFormatError(f"{meta_path}: unreadable run metadata ({exc})") from None
    if not isinstance(meta, dict) or meta.get("schema") != SCHEMA_NAME:
        raise RunFormatError(f"{meta_path}: not accelscope run metadata")
    version = meta.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise RunFormatError(f"{p}: run format version {version!r} is newer than this accelscope reads ({SCHEMA_VERSION})")
    return meta


def run_fingerprint(path: str | os.PathLike[str]) -> tuple:
    """See :meth:`Run.fingerprint`."""
    p = Path(path)
    try:
        st = (p / META_FILE).stat()
        meta = (st.st_mtime_ns, st.st_size)
    except OSError:
        meta = None
    return (meta, *(tuple(x.name for x in _parts(p / name)) for name in sorted(TABLES)))


def _read_part(part: Path, schema: pa.Schema, where: pl.Expr | None) -> pl.DataFrame:
    """``schema``'s columns of one Parquet part (the rows ``where`` holds). A nullable column
    the part does not have (written before the column was added to its table) reads as
    nulls; a missing required column fails the part."""
    names = list(schema.names)
    try:
        if where is None:
            # Polars' own reader: ~4x faster than pyarrow's plus the conversion.
            return pl.read_parquet(part, columns=names, glob=False)  # "[" in a run's path is no pattern
        return pl.scan_parquet(part, glob=False).filter(where).select(names).collect()
    except pl.exceptions.ColumnNotFoundError:
        present = set(pl.read_parquet_schema(part))
        missing = [schema.field(c) for c in names if c not in present]
        if not missing or any(not f.nullable for f in missing):
            raise
        lf = pl.scan_parquet(part, glob=False)
        lf = lf.filter(where) if where is not None else lf
        lf = lf.select([c for c in names if c in present]).with_columns(pl.lit(None, dtype=_POLARS_TYPES[f.type]).alias(f.name) for f in missing)
        return lf.select(names).collect()


def open_run(path: str | os.PathLike[str]) -> Run:
    return Run.open(path)


def write_run(path: str | os.PathLike[str], events: pa.Table | pl.DataFrame, counters: pa.Table | pl.DataFrame | None, meta: dict[str, Any],
              memory: pa.Table | pl.DataFrame | None = None) -> Path:
    """Write a complete run in one go (importers, tests)."""
    writer = RunWriter(path, meta, flush_interval_s=3600)
    for name, table in (("events", events), ("counters", counters), ("memory", memory)):
        if table is None:
            continue
        if isinstance(table, pl.DataFrame):
            table = table.to_arrow()
        writer.add_table(name, table)
    writer.close()
    return writer.path


__all__ = ["Run", "RunWriter", "open_run", "write_run", "unique_run_dir", "EVENT_COLUMNS", "COUNTER_COLUMNS", "MEMORY_COLUMNS"]
