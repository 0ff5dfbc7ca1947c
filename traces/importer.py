"""Import traces other tools wrote into a run directory.

Accepts every format in ``formats.FORMATS`` (Kineto JSON ``.json``/``.json.gz``, XPlane
``.xplane.pb``), directories of them (one file per rank), and TensorBoard log directories
(``plugins/profile/<session>/``).
Several files make one run with a rank column; see ``align_ranks`` for the clocks.

An import is written to a temporary directory beside the target and renamed into place
only when complete, so a failed import never leaves a run that looks complete, and an
existing directory is never overwritten unless asked to.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from accelscope import __version__
from accelscope.errors import AccelscopeError
from accelscope.traces import formats, ranks
from accelscope.traces import schema as S
from accelscope.traces.formats import RankTrace, Source
from accelscope.traces.parallel import read_sources
from accelscope.traces.run import META_FILE, write_run

log = logging.getLogger("accelscope")

CACHE_SUFFIX = ".accelscope"


class TraceImportError(AccelscopeError, ValueError):
    """An input cannot be imported; the message names the file and the problem."""


def is_run_dir(path: Path) -> bool:
    """An accelscope run: one process's (``meta.json``) or a multi-rank job's (traces/ranks.py)."""
    return path.is_dir() and ((path / META_FILE).is_file() or ranks.is_multi_rank(path))


def discover(paths: Sequence[str | os.PathLike[str]]) -> tuple[list[Source], list[str]]:
    """Trace files named by ``paths`` (files or directories), and notes on what was skipped.

    A directory contributes every trace file below it. In a TensorBoard log directory
    with several profile sessions (``plugins/profile/<session>/``) only the newest
    session is taken, and the note says so; a directory holding several log directories
    (one per worker of a tf.distribute job) gives each one's newest session.
    """
    sources: list[Source] = []
    notes: list[str] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise TraceImportError(f"{p}: no such file or directory")
        if p.is_file():
            fmt = formats.format_of(p, sniff=True)
            if fmt is None:
                raise TraceImportError(f"{p}: not an accelscope run or a trace file (expected {formats.suffixes_text()})")
            sources.append(Source(p, fmt))
            continue
        if is_run_dir(p):
            raise TraceImportError(f"{p}: already an accelscope run, nothing to import")
        found = sorted(f for f in p.rglob("*") if f.is_file() and formats.format_of(f) and not any(part.endswith(CACHE_SUFFIX) or part.startswith(".") for part in f.relative_to(p).parts))
        sessions = sorted({f.parent for f in found if f.parent.parent.name == "profile" and f.parent.parent.parent.name == "plugins"})
        # Each log directory's newest session (a multi-worker job has one log directory per worker).
        newest = {s.parent: s for s in sessions}
        if len(sessions) > len(newest):
            picked = ", ".join(sorted({s.name for s in newest.values()}))
            notes.append(f"{p}: {len(sessions)} profile sessions; importing the newest of each log directory, {picked} (name a session directory to pick another)")
            keep = set(newest.values())
            found = [f for f in found if f.parent in keep or f.parent not in sessions]
        if not found:
            what = "empty directory" if not any(p.iterdir()) else f"not an accelscope run, and no trace files ({formats.suffixes_text(', ')}) in it"
            raise TraceImportError(f"{p}: {what}")
        sources.extend(Source(f, formats.format_of(f), from_directory=True) for f in found)
    return sources, notes


def read_source(source: Source, on_bytes: Callable[[int], None] | None = None) -> RankTrace:
    """Read one trace file into columns with its format's reader (raises TraceImportError /
    AccelscopeError with one line). When the reader fails on a file whose first bytes look
    like another format (an XPlane named ``.json``), the line says so."""
    try:
        return formats.by_name(source.format).read(source, on_bytes)
    except AccelscopeError as exc:
        other = formats.sniffed(source.path)
        if other is None or other == source.format:
            raise
        hint = f"{exc}; its first bytes look like {other} ({', '.join(formats.by_name(other).suffixes)})"
        try:
            hinted = type(exc)(hint)
        except TypeError:
            hinted = TraceImportError(hint)
        raise hinted from None


def _step_starts(events: pa.Table) -> dict[str, int]:
    steps = events.filter(pc.equal(events.column("kind"), S.STEP))
    out: dict[str, int] = {}
    for name, start in zip(steps.column("name").to_pylist(), steps.column("start_ns").to_pylist()):
        out[name] = min(start, out.get(name, start))
    return out


def align_ranks(traces: list[RankTrace]) -> dict[str, Any]:
    """Put every rank on one clock; returns the method and per-rank offsets for the metadata.

    Ranks recorded on epoch clocks (Kineto, anchored XPlane) are already on one clock up
    to the hosts' clock sync (NTP: usually well under a millisecond). They are kept as
    recorded when their time ranges overlap, and the skew is only estimated: the spread
    of the start of the first step all ranks share (steps start together when the job
    synchronises every step). Ranks whose ranges do not overlap at all (relative clocks,
    or a host with a wrong clock) are shifted so that the first shared step, else the
    first event, starts at the same time as on the lowest rank.
    """
    if len(traces) < 2:
        return {"method": "single rank"}
    ranges = [(int(pc.min(t.events.column("start_ns")).as_py()), int(pc.max(pc.add(t.events.column("start_ns"), t.events.column("dur_ns"))).as_py())) for t in traces]
    overlap = max(r[0] for r in ranges) < min(r[1] for r in ranges)
    starts = [_step_starts(t.events) for t in traces]
    common = set(starts[0]).intersection(*starts[1:])
    first_common = min(common, key=lambda n: starts[0][n]) if common else None
    if overlap:
        skew = None
        if first_common is not None:
            values = [s[first_common] for s in starts]
            skew = max(values) - min(values)
        return {"method": "as recorded (epoch clocks overlap)", "reference_step": first_common, "estimated_skew_ns": skew, "offsets_ns": {str(t.rank): 0 for t in traces}}
    ref = traces[0]
    offsets = {}
    for t, s, r in zip(traces, starts, ranges):
        offset = (starts[0][first_common] - s[first_common]) if first_common is not None else (ranges[0][0] - r[0])
        offsets[str(t.rank)] = int(offset)
        if offset:
            t.events = t.events.set_column(0, "start_ns", pc.add(t.events.column("start_ns"), pa.scalar(int(offset), pa.int64())))
            if t.counters is not None and t.counters.num_rows:
                i = t.counters.schema.get_field_index("time_ns")
                t.counters = t.counters.set_column(i, "time_ns", pc.add(t.counters.column("time_ns"), pa.scalar(int(offset), pa.int64())))
    del ref
    method = f"shifted to align the start of {first_common}" if first_common is not None else "shifted to align the first event"
    return {"method": method, "reference_step": first_common, "offsets_ns": offsets}


class _Progress:
    """A progress bar over input bytes, shown only when an import runs longer than ~1.5 s."""

    def __init__(self, total_bytes: int, enabled: bool):
        self.total = total_bytes
        self.enabled = enabled and sys.stderr.isatty()
        self.done_before = 0
        self.t0 = time.monotonic()
        self._bar = None
        self._task = None

    def update(self, file_bytes: int) -> None:
        if not self.enabled:
            return
        if self._bar is None:
            if time.monotonic() - self.t0 < 1.5:
                return
            from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

            self._bar = Progress("importing", BarColumn(), DownloadColumn(), TimeRemainingColumn(), transient=True)
            self._bar.start()
            self._task = self._bar.add_task("import", total=self.total)
        self._bar.update(self._task, completed=self.done_before + file_bytes)

    def file_done(self, size: int) -> None:
        """A whole file is read (the only progress a pool of workers reports)."""
        self.done_before += size
        self.update(0)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def _fingerprint(sources: list[Source]) -> list[dict[str, Any]]:
    out = []
    for s in sources:
        st = s.path.stat()
        out.append({"path": str(s.path.resolve()), "format": s.format, "size_bytes": st.st_size, "mtime_ns": st.st_mtime_ns})
    return out


def import_traces(
    paths: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    force: bool = False,
    progress: bool = True,
    extra_meta: dict[str, Any] | None = None,
    workers: int | None = None,
) -> Path:
    """Import trace files into the run directory ``out`` and return its path.

    ``workers``: processes reading the files, one file (rank) per task (None: every core;
    1: one by one in this process; see ``traces/parallel.py``). A file of a directory that
    cannot be read is left out with a note and listed in ``meta.failed_sources``."""
    out = Path(out)
    if out.exists() and not force:
        raise TraceImportError(f"{out} exists (use --force to replace it)")
    sources, notes = discover(paths)
    bar = _Progress(sum(s.size_bytes for s in sources), progress)
    try:
        got = read_sources(sources, read_source, workers, on_bytes=bar.update, on_file=bar.file_done)
    finally:
        bar.close()
    traces = got.traces
    notes += got.notes
    for f in got.failed:
        notes.append(f"left out {f['error']}")
    if not traces:
        raise TraceImportError(f"{', '.join(map(str, paths))}: nothing importable ({'; '.join(notes)})")
    sources = [t.source for t in traces]
    if len(traces) > 1:
        _resolve_ranks(traces)
    traces.sort(key=lambda t: t.rank)
    alignment = align_ranks(traces)
    events = pa.concat_tables([t.events.cast(S.EVENT_SCHEMA) for t in traces])
    counters = [t.counters.cast(S.COUNTER_SCHEMA) for t in traces if t.counters is not None and t.counters.num_rows]
    counters_table = pa.concat_tables(counters) if counters else None
    meta = _merge_meta(traces)
    meta.update(
        accelscope_version=__version__,
        imported=True,
        ranks=[t.rank for t in traces],
        rank=traces[0].rank,
        clock_alignment=alignment,
        sources=[dict(fp, rank=t.rank, rank_source=t.rank_source, events=t.events.num_rows) for fp, t in zip(_fingerprint(sources), traces)],
        import_notes=notes,
        failed_sources=got.failed,
        steps=int(pc.sum(pc.equal(events.column("kind"), S.STEP)).as_py() or 0),
        start_ns=int(pc.min(events.column("start_ns")).as_py()),
        end_ns=int(pc.max(pc.add(events.column("start_ns"), events.column("dur_ns"))).as_py()),
    )
    if extra_meta:
        meta.update(extra_meta)
    for note in notes:
        log.warning("accelscope: %s", note)
    tmp = out.with_name(f".{out.name}.importing-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        write_run(tmp, events, counters_table, meta)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _resolve_ranks(traces: list[RankTrace]) -> None:
    seen: dict[int, RankTrace] = {}
    defaulted = [t for t in traces if t.rank_source == "default"]
    if len(defaulted) == len(traces):
        # No rank anywhere: number the files in name order, and say so in the metadata.
        for i, t in enumerate(sorted(traces, key=lambda t: str(t.source.path))):
            t.rank, t.rank_source = i, "file order"
            t.events = t.events.set_column(t.events.schema.get_field_index("rank"), "rank", pa.array(np.full(t.events.num_rows, i, dtype=np.int32)))
            if t.counters is not None and t.counters.num_rows:
                t.counters = t.counters.set_column(t.counters.schema.get_field_index("rank"), "rank", pa.array(np.full(t.counters.num_rows, i, dtype=np.int32)))
            for th in (*t.meta.get("threads", []), *t.meta.get("streams", [])):
                th["rank"] = i
    for t in traces:
        if t.rank in seen:
            raise TraceImportError(f"{t.source.path}: duplicate rank {t.rank} (also in {seen[t.rank].source.path})")
        seen[t.rank] = t


def _merge_meta(traces: list[RankTrace]) -> dict[str, Any]:
    first = traces[0].meta
    devices: dict[str, dict[str, Any]] = {}
    threads: list[dict[str, Any]] = []
    streams: list[dict[str, Any]] = []
    for t in traces:
        for d in t.meta.get("devices", []):
            devices.setdefault(d["id"], d)
        threads.extend(t.meta.get("threads", []))
        streams.extend(t.meta.get("streams", []))
    meta = {k: v for k, v in first.items() if k not in ("threads", "streams", "devices", "source")}
    meta["devices"] = list(devices.values())
    meta["threads"] = threads
    if streams:
        meta["streams"] = streams
    meta["complete"] = True
    meta["mode"] = "imported"
    return meta


# -- import on the fly, with a cache -------------------------------------------------------------
def cache_root() -> Path:
    base = os.environ.get("ACCELSCOPE_CACHE_DIR") or os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "accelscope")
    return Path(base)


def _cache_candidates(path: Path) -> list[Path]:
    resolved = path.resolve()
    beside = resolved.parent / f"{resolved.name}{CACHE_SUFFIX}" if resolved.is_file() else resolved / f".run{CACHE_SUFFIX}"
    digest = hashlib.sha256(str(resolved).encode()).hexdigest()[:16]
    return [beside, cache_root() / f"{resolved.name}-{digest}"]


@functools.cache
def source_digest(*packages: Path) -> str:
    """A digest of the version and of every module of ``packages`` (directories): what a
    cache made by code (an import, a report) is keyed on, so other code never reuses it."""
    digest = hashlib.sha256(__version__.encode())
    for package in packages:
        for module in sorted(package.glob("*.py")):
            digest.update(module.name.encode() + b"\0" + module.read_bytes())
    return digest.hexdigest()


TRACES_PACKAGE = Path(__file__).resolve().parent


def importer_fingerprint() -> str:
    """A digest of the code that turns traces into runs (this package): a cached import
    made by other code is stale even when its inputs are not, since a fixed or extended
    reader would read them differently."""
    return source_digest(TRACES_PACKAGE)[:16]


def _cache_is_fresh(run_dir: Path, sources: list[Source]) -> bool:
    """A cached import is reused while its inputs' sizes and times are unchanged and the
    code that made it is this one (``importer_fingerprint``)."""
    try:
        meta = json.loads((run_dir / META_FILE).read_text())
    except (OSError, ValueError):
        return False
    cached = [{k: s.get(k) for k in ("path", "format", "size_bytes", "mtime_ns")} for s in meta.get("sources", [])]
    return (bool(meta.get("import_cache")) and meta.get("complete") and meta.get("importer") == importer_fingerprint()
            and cached == _fingerprint(sources))


def _writable(directory: Path) -> bool:
    """Writable for us, and not marked read-only (no write bit at all), which root ignores."""
    return os.access(directory, os.W_OK) and bool(directory.stat().st_mode & 0o222)


_TRACE_ENDINGS = (".gz", ".json", ".pb", ".trace", ".pt", ".xplane")


def source_name(path: Path) -> str:
    """The name a run imported from ``path`` goes by: a directory's name, or a file's name
    without its trace endings (``rank0.pt.trace.json.gz`` -> ``rank0``)."""
    p = Path(os.path.abspath(path))
    if p.is_dir():
        return p.name
    name = p.name
    while True:
        stem, dot, ending = name.rpartition(".")
        if not dot or not stem or f".{ending.lower()}" not in _TRACE_ENDINGS:
            return name
        name = stem


def _name_cached_run(run_dir: Path, name: str) -> None:
    """Record ``name`` in a cached run imported before runs carried their source's name."""
    meta_path = run_dir / META_FILE
    meta = json.loads(meta_path.read_text())
    if meta.get("source_name") == name:
        return
    meta["source_name"] = name
    tmp = meta_path.with_name(f".{META_FILE}.{os.getpid()}")
    try:
        tmp.write_text(json.dumps(meta))
        os.replace(tmp, meta_path)
    except OSError:
        tmp.unlink(missing_ok=True)  # a read-only cache keeps its old name


def resolve_run(path: str | os.PathLike[str], *, progress: bool = True, on_import: Callable[[Path, Path], None] | None = None,
                workers: int | None = None) -> Path:
    """The run directory for ``path``: itself if it is a run, else an imported (cached) run.

    The cache lives beside the input (``trace.json.gz.accelscope/``, or
    ``DIR/.run.accelscope/`` for a directory) when that is writable, else under
    ``$ACCELSCOPE_CACHE_DIR`` (default ``~/.cache/accelscope``). It is reused while the
    inputs' sizes and modification times are unchanged and this accelscope's import code
    made it (an upgrade re-imports). A directory at the cache path that
    is not accelscope's own cache is never touched.
    """
    p = Path(path)
    if is_run_dir(p):
        return p
    sources, _ = discover([p])
    name = source_name(p)
    for candidate in _cache_candidates(p):
        if candidate.exists():
            if is_run_dir(candidate) and _cache_is_fresh(candidate, sources):
                _name_cached_run(candidate, name)
                return candidate
            if not (is_run_dir(candidate) and json.loads((candidate / META_FILE).read_text()).get("import_cache")):
                continue  # something else lives there: leave it alone
        try:
            candidate.parent.mkdir(parents=True, exist_ok=True)
            if not _writable(candidate.parent):
                continue
            if on_import is not None:
                on_import(p, candidate)
            return import_traces([p], candidate, force=True, progress=progress, workers=workers,
                                 extra_meta={"import_cache": True, "source_name": name, "importer": importer_fingerprint()})
        except PermissionError:
            continue
    raise TraceImportError(f"{p}: cannot write an imported run beside it or in {cache_root()}")
