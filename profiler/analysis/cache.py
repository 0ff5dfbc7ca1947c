"""Reopening fast: a run's analysis report, cached inside the run.

Analysing a big run takes seconds (reading every slice, then the analysis); the report it
gives is a few tables. ``analyze_cached`` keeps the report in ``RUN/.accelscope-cache/``
and serves it again while nothing it depends on changed: the key is a digest of the run's
content (``meta.json``'s bytes, every Parquet part's path, size and modification time) and
of the code (the version and every module of ``accelscope.analysis`` and
``accelscope.traces``), so an upgrade, a fix to the analysis or a changed run rebuilds it.
A live run (still being recorded) is never served from the cache and never cached.

The cache is a pickle, so it is only read when it carries an HMAC-SHA256 made with this
user's own key (``$ACCELSCOPE_CACHE_DIR/cache.key``, created 0600): a report written by
someone else (a shared run directory) is ignored, never unpickled. Writes are atomic
(temporary file, then rename); a cache that cannot be written (read-only run, full disk)
costs nothing but the time saved.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import io
import logging
import os
import pickle
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from accelscope.analysis.analyzer import analyze
from accelscope.analysis.report import Report
from accelscope.traces.importer import TRACES_PACKAGE, cache_root, source_digest
from accelscope.traces.ranks import JOB_FILE
from accelscope.traces.run import LIVE_FILE, META_FILE, Run

log = logging.getLogger("accelscope")

CACHE_DIR = ".accelscope-cache"
KEY_FILE = "cache.key"
_MAC_BYTES = 32


def code_digest() -> str:
    """The version and the source of every module the report depends on (the analysis and
    the trace model)."""
    return source_digest(Path(__file__).resolve().parent, TRACES_PACKAGE)


def content_key(run_path: Path) -> str:
    """A digest of the code and of what the run holds now (``meta.json``'s and ``job.json``'s bytes, every
    Parquet part's relative path, size and mtime); the cache and live status are left out."""
    digest = hashlib.sha256(code_digest().encode())
    for dirpath, dirnames, files in os.walk(run_path):
        dirnames[:] = sorted(d for d in dirnames if d != CACHE_DIR)
        for name in sorted(files):
            path = Path(dirpath) / name
            rel = str(path.relative_to(run_path)).encode()
            if name in (META_FILE, JOB_FILE):
                digest.update(rel + b"\0" + path.read_bytes())
            elif name.endswith(".parquet") and name != LIVE_FILE:
                st = path.stat()
                digest.update(rel + f"\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return digest.hexdigest()[:32]


def _secret() -> bytes | None:
    """This user's key for signing caches, made on first use; None when it cannot be kept."""
    path = cache_root() / KEY_FILE
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    except OSError:
        return None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(32))
        return path.read_bytes()
    except FileExistsError:  # another process made it meanwhile
        return path.read_bytes()
    except OSError:
        return None


def _path(run_path: Path, name: str, key: str) -> Path:
    return run_path / CACHE_DIR / f"{name}-{key}.pkl"


# Tables of at least this many rows go beside the pickle as uncompressed Arrow IPC files,
# memory-mapped when loaded: a 10M-event run's lane layout loads in ~0.01 s instead of ~0.5 s
# of unpickling, and does not hold the GIL meanwhile.
SIDE_MIN_ROWS = 100_000
_SIDE_RE = re.compile(r"^[A-Za-z0-9_.]+-[0-9a-f]+\.\d+\.arrow$")


class _Pickler(pickle.Pickler):
    """Pickles ``obj`` with its large Polars tables written beside it (``persistent_id``)."""

    def __init__(self, fh: Any, directory: Path, stem: str):
        super().__init__(fh, protocol=pickle.HIGHEST_PROTOCOL)
        self.directory, self.stem, self.sides = directory, stem, []

    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, pl.DataFrame) and obj.height >= SIDE_MIN_ROWS:
            name = f"{self.stem}.{len(self.sides)}.arrow"
            tmp = self.directory / f".{name}.{os.getpid()}.tmp"
            obj.write_ipc(tmp, compression="uncompressed")
            self.sides.append((tmp, self.directory / name))
            return ("arrow", name, tmp.stat().st_size)
        return None


class _Unpickler(pickle.Unpickler):
    """Reads what ``_Pickler`` wrote: side tables memory-mapped from the same directory, by the
    names and sizes the signed pickle holds (a name is never a path)."""

    def __init__(self, fh: Any, directory: Path):
        super().__init__(fh)
        self.directory = directory

    def persistent_load(self, pid: Any) -> Any:
        kind, name, size = pid
        path = self.directory / name
        if kind != "arrow" or not isinstance(name, str) or not _SIDE_RE.match(name) or path.stat().st_size != size:
            raise pickle.UnpicklingError(f"bad side table {name!r}")
        import pyarrow as pa
        import pyarrow.ipc as ipc

        return pl.from_arrow(ipc.open_file(pa.memory_map(str(path))).read_all())


def load_cached(run_path: Path, name: str, key: str, kind: type | None = None) -> object | None:
    """The object cached as ``name`` under ``key`` (of type ``kind`` when given), if there is
    one signed with this user's key; None otherwise."""
    secret = _secret()
    try:
        data = _path(run_path, name, key).read_bytes()
    except OSError:
        return None
    if secret is None or len(data) <= _MAC_BYTES:
        return None
    mac, body = data[:_MAC_BYTES], data[_MAC_BYTES:]
    if not hmac.compare_digest(mac, hmac.new(secret, body, hashlib.sha256).digest()):
        log.debug("accelscope: ignoring a cache not signed with this user's key: %s", run_path)
        return None
    try:
        obj = _Unpickler(io.BytesIO(body), run_path / CACHE_DIR).load()
    except Exception as exc:  # a cache from an incompatible library version, a side table gone: rebuild it
        log.debug("accelscope: unreadable cache %s in %s: %s", name, run_path, exc)
        return None
    return obj if kind is None or isinstance(obj, kind) else None


def store_cached(run_path: Path, name: str, key: str, obj: object) -> None:
    """Write ``obj`` as ``name`` under ``key`` atomically (its large tables beside it, renamed
    into place first) and drop ``name``'s older keys; never raises for a run that cannot hold
    it. ``name``: letters, digits, ``_`` and ``.``."""
    secret = _secret()
    if secret is None:
        return
    target = _path(run_path, name, key)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    pickler = None
    try:
        target.parent.mkdir(exist_ok=True)
        buf = io.BytesIO()
        pickler = _Pickler(buf, target.parent, f"{name}-{key}")
        pickler.dump(obj)
        body = buf.getvalue()
        for side_tmp, side in pickler.sides:
            os.replace(side_tmp, side)
        with open(tmp, "wb") as fh:
            fh.write(hmac.new(secret, body, hashlib.sha256).digest())
            fh.write(body)
        os.replace(tmp, target)
        for old in target.parent.glob(f"{name}-*"):
            rest = old.name[len(name) + 1:]
            if not rest.startswith(key) and re.match(r"^[0-9a-f]+(\.pkl|\.\d+\.arrow)$", rest):
                old.unlink(missing_ok=True)
    except (OSError, pickle.PicklingError, TypeError, AttributeError, RecursionError, pl.exceptions.PolarsError) as exc:
        tmp.unlink(missing_ok=True)
        for side_tmp, _ in pickler.sides if pickler is not None else []:
            side_tmp.unlink(missing_ok=True)
        log.debug("accelscope: cache %s not written in %s: %s", name, run_path, exc)


def load_report(run_path: Path, key: str) -> Report | None:
    """The cached report under ``key``, if there is one signed with this user's key."""
    report = load_cached(run_path, "report", key, Report)
    return report if isinstance(report, Report) else None


def store_report(run_path: Path, key: str, report: Report) -> None:
    """Write the report under ``key`` atomically and drop older ones."""
    store_cached(run_path, "report", key, report)


def analyze_cached(run: Run, before_analysis: Callable[[], object] | None = None, by_rank: bool | None = None,
                   cluster: object = None) -> Report:
    """``analyze(run, by_rank, cluster)``, served from the run's cache while its content and this code
    are unchanged; a live run is always analysed afresh. ``before_analysis`` runs only when the
    analysis does (the dashboard reads the slices under its own lock first)."""
    if run.live:
        if before_analysis is not None:
            before_analysis()
        return analyze(run, by_rank, cluster)
    key = content_key(run.path)
    report = load_report(run.path, key)
    if report is None:
        if before_analysis is not None:
            before_analysis()
        report = analyze(run, by_rank, cluster)
        store_report(run.path, key, report)
        return report
    # The key holds no absolute path: a run moved or renamed keeps its cache, under its new name.
    return dataclasses.replace(report, run=dataclasses.replace(report.run, path=str(run.path), name=run.name))
