"""Import traces other tools wrote into a run directory.

Accepts every format in ``formats.FORMATS`` (Kineto JSON ``.json``/``.json.gz``, XPlane
``.xplane.pb``, PyTorch memory snapshots ``.pickle``/``.pkl``), directories of them (one file per rank), and TensorBoard log directories
(``plugins/profile/<session>/``).
Several files make one multi-rank run, each rank written as its own part where it is read
(traces/assemble.py, which also lines up the clocks).

An import is written to a temporary directory beside the target and renamed into place
only when complete, so a failed import never leaves a run that looks complete, and an
existing directory is never overwritten unless asked to.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from accelscope import __version__
from accelscope.errors import AccelscopeError
from accelscope.traces import formats, ranks, remote
from accelscope.traces.assemble import PartSummary, alignment, assemble, update_run_meta, write_part
from accelscope.traces.formats import RankTrace, Source
from accelscope.traces.parallel import read_sources
from accelscope.traces.run import META_FILE, Run

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
        if remote.is_url(str(raw)):
            sources.extend(remote.discover_url(str(raw)))
            continue
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
        if s.url:
            out.append(remote.fingerprint(s))
            continue
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
    cluster: str | None = None,
) -> Path:
    """Import trace files (paths, or fsspec URLs) into the run directory ``out`` and return its path.

    Each file (rank) is read and written as its own rank part by one task (traces/assemble.py):
    ``workers`` processes here (None: every core where a pool pays; 1: one by one in this
    process; see traces/parallel.py), or the Dask cluster at ``cluster`` (traces/cluster.py;
    ``out`` must then be on storage its workers can write). A file of a directory that cannot
    be read is left out with a note and listed in ``meta.failed_sources``."""
    out = Path(out)
    if out.exists() and not force:
        raise TraceImportError(f"{out} exists (use --force to replace it)")
    sources, notes = discover(paths)
    tmp = out.with_name(f".{out.name}.importing-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    bar = _Progress(sum(s.size_bytes for s in sources), progress)
    try:
        tmp.mkdir(parents=True)
        task = functools.partial(write_part, out_dir=str(tmp.resolve()))
        try:
            got = read_sources(sources, task, workers, on_bytes=bar.update, on_file=bar.file_done, cluster=cluster)
        finally:
            bar.close()
        parts: list[PartSummary] = got.traces
        notes += got.notes
        for f in got.failed:
            notes.append(f"left out {f['error']}")
        if not parts:
            raise TraceImportError(f"{', '.join(map(str, paths))}: nothing importable ({'; '.join(notes)})")
        if len(parts) > 1:
            _resolve_ranks(parts)
        parts.sort(key=lambda p: p.rank)
        meta = _run_meta(parts)
        meta.update(
            accelscope_version=__version__,
            clock_alignment=alignment(parts),
            sources=[dict(fp, rank=p.rank, rank_source=p.rank_source, events=p.events) for fp, p in zip(_fingerprint([p.source for p in parts]), parts)],
            import_notes=notes,
            failed_sources=got.failed,
            missing_ranks=_missing_ranks(got.failed, {p.rank for p in parts}),
            steps=sum(p.steps for p in parts),
        )
        if extra_meta:
            meta.update(extra_meta)
        for note in notes:
            log.warning("accelscope: %s", note)
        assemble(tmp, parts, meta)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _resolve_ranks(parts: list[PartSummary]) -> None:
    seen: dict[int, PartSummary] = {}
    if all(p.rank_source == "default" for p in parts):
        # No rank anywhere: number the files in name order, and say so in the metadata
        # (a rank part's rank is its directory's name, which the reader gives every row).
        for i, p in enumerate(sorted(parts, key=lambda p: p.source.location)):
            p.rank, p.rank_source = i, "file order"
    for p in parts:
        if p.rank in seen:
            raise TraceImportError(f"{p.source.location}: duplicate rank {p.rank} (also in {seen[p.rank].source.location})")
        seen[p.rank] = p


def _missing_ranks(failed: list[dict[str, str]], read: set[int]) -> list[int]:
    """The ranks of files that failed, where their names say them (``rank-3.json``)."""
    from accelscope.traces.kineto import rank_from_file_name

    found = {rank_from_file_name(Path(f["path"])) for f in failed}
    return sorted(r for r in found if r is not None and r not in read)


def _run_meta(parts: list[PartSummary]) -> dict[str, Any]:
    """The import's run-wide metadata: every rank's devices, and what marks an import."""
    devices: dict[str, dict[str, Any]] = {}
    for p in parts:
        for d in p.meta.get("devices", []):
            devices.setdefault(d["id"], d)
    return {"devices": list(devices.values()), "complete": True, "mode": "imported", "imported": True,
            "ranks": [p.rank for p in parts], "rank": parts[0].rank}


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


def _run_meta_of(run_dir: Path) -> dict[str, Any]:
    """A run's metadata, either layout ({} when it is not a readable run)."""
    try:
        return Run.open(run_dir).meta
    except (AccelscopeError, OSError, ValueError):
        return {}


def _cache_is_fresh(run_dir: Path, sources: list[Source]) -> bool:
    """A cached import is reused while its inputs' sizes and times are unchanged and the
    code that made it is this one (``importer_fingerprint``)."""
    meta = _run_meta_of(run_dir)
    cached = [{k: s.get(k) for k in ("path", "format", "size_bytes", "mtime_ns")} for s in meta.get("sources", [])]
    try:
        now = _fingerprint(sources)
    except (OSError, AccelscopeError):
        return False
    return bool(meta.get("import_cache")) and bool(meta.get("complete")) and meta.get("importer") == importer_fingerprint() and cached == now


def _writable(directory: Path) -> bool:
    """Writable for us, and not marked read-only (no write bit at all), which root ignores."""
    return os.access(directory, os.W_OK) and bool(directory.stat().st_mode & 0o222)


_TRACE_ENDINGS = (".gz", ".json", ".pb", ".trace", ".pt", ".xplane", ".pickle", ".pkl")


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
    if _run_meta_of(run_dir).get("source_name") == name:
        return
    try:
        update_run_meta(run_dir, source_name=name)
    except OSError:
        pass  # a read-only cache keeps its old name


def resolve_run(path: str | os.PathLike[str], *, progress: bool = True, on_import: Callable[[Path | str, Path], None] | None = None,
                workers: int | None = None, cluster: str | None = None) -> Path:
    """The run directory for ``path``: itself if it is a run, else an imported (cached) run.

    The cache lives beside the input (``trace.json.gz.accelscope/``, or
    ``DIR/.run.accelscope/`` for a directory) when that is writable, else under
    ``$ACCELSCOPE_CACHE_DIR`` (default ``~/.cache/accelscope``). It is reused while the
    inputs' sizes and modification times are unchanged and this accelscope's import code
    made it (an upgrade re-imports). A directory at the cache path that
    is not accelscope's own cache is never touched. A URL's import is cached under
    ``$ACCELSCOPE_CACHE_DIR`` only.
    """
    url = remote.is_url(str(path))
    p = Path(path)
    if not url and is_run_dir(p):
        return p
    sources, _ = discover([str(path) if url else p])
    name = source_name(p) if not url else str(path).rstrip("/").rsplit("/", 1)[-1]
    candidates = [cache_root() / f"{name}-{hashlib.sha256(str(path).encode()).hexdigest()[:16]}"] if url else _cache_candidates(p)
    for candidate in candidates:
        if candidate.exists():
            if is_run_dir(candidate) and _cache_is_fresh(candidate, sources):
                _name_cached_run(candidate, name)
                return candidate
            if not (is_run_dir(candidate) and _run_meta_of(candidate).get("import_cache")):
                continue  # something else lives there: leave it alone
        try:
            candidate.parent.mkdir(parents=True, exist_ok=True)
            if not _writable(candidate.parent):
                continue
            if on_import is not None:
                on_import(str(path) if url else p, candidate)  # a URL as given (a Path would fold its "//")
            return import_traces([str(path) if url else p], candidate, force=True, progress=progress, workers=workers, cluster=cluster,
                                 extra_meta={"import_cache": True, "source_name": name, "importer": importer_fingerprint()})
        except PermissionError:
            continue
    raise TraceImportError(f"{p}: cannot write an imported run beside it or in {cache_root()}")
