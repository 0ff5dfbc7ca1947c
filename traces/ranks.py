"""Multi-rank runs: one run directory per job, one part per rank, on one clock.

Layout (docs/trace-format.md)::

    RUN/job.json          written once, atomically, by whichever rank claims RUN for its job
    RUN/rank-0/           an ordinary run directory (meta.json, events/, counters/, memory/) per rank
    RUN/rank-1/ ...

``claim`` picks RUN for a job so that every rank of the job lands in the same directory
and no rank ever lands in another job's: the first rank to arrive creates ``job.json``
with an exclusive link (atomic on local and network file systems), the others find their
job's key in it. ``read_parts``/``merge_meta`` open such a directory as one run: each
rank's times are moved onto the reference rank's clock with the offsets the recorder
measured (``meta["clock_sync"]``), and a rank that died mid-run is listed as incomplete.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import polars as pl

JOB_FILE = "job.json"
JOB_SCHEMA = "accelscope.job"
_RANK_DIR = re.compile(r"^rank-(\d+)$")


def rank_dir_name(rank: int) -> str:
    return f"rank-{rank}"


class ClaimError(OSError):
    """No run directory could be claimed for the job (the file system refused)."""


def _read_job(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads((path / JOB_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("schema") == JOB_SCHEMA else None


def _try_create_job(path: Path, doc: dict[str, Any]) -> bool:
    """Create ``path/job.json`` holding ``doc`` unless it exists; True if this call created it.
    The file is written whole under a private name and hard-linked into place, so a reader
    never sees half a file and exactly one of several racing writers wins."""
    tmp = path / f".job.{os.getpid()}.{time.monotonic_ns()}.tmp"
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    try:
        os.link(tmp, path / JOB_FILE)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


def claim(requested: str | os.PathLike[str], key: str, rank: int, world_size: int, *, max_tries: int = 1000) -> Path:
    """The run directory of job ``key`` for ``rank``: ``requested``, else ``requested.N``.

    A candidate is this job's when its ``job.json`` holds ``key`` and ``rank``'s part is not
    there yet (a second job with the same key, e.g. a fixed MASTER_PORT, moves on to the
    next name); a missing or empty candidate is claimed by creating ``job.json``; anything
    else (another job's run, a single-process run, a file) is skipped.
    """
    base = Path(requested)
    for n in range(max_tries):
        candidate = base if n == 0 else base.with_name(f"{base.name}.{n}")
        for _ in range(50):  # a directory being created by another rank right now: look again
            job = _read_job(candidate)
            if job is not None:
                if job.get("key") == key and not (candidate / rank_dir_name(rank)).exists():
                    return candidate
                break
            if candidate.exists() and (not candidate.is_dir() or any(p.name != JOB_FILE and not p.name.startswith(".job.") for p in candidate.iterdir())):
                break  # not a job's run directory
            try:
                candidate.mkdir(parents=True, exist_ok=True)
                doc = {"schema": JOB_SCHEMA, "key": key, "world_size": world_size, "created_ns": time.time_ns(), "claimed_by_rank": rank}
                if _try_create_job(candidate, doc):
                    return candidate
            except OSError as exc:
                raise ClaimError(f"cannot create {candidate}: {exc}") from exc
            time.sleep(0.01)
    raise ClaimError(f"no free run directory next to {base} after {max_tries} tries")


def is_multi_rank(path: Path) -> bool:
    return (path / JOB_FILE).is_file() or any(_RANK_DIR.match(p.name) and (p / "meta.json").is_file() for p in _dirs(path))


def _dirs(path: Path) -> list[Path]:
    try:
        return [p for p in path.iterdir() if p.is_dir()]
    except OSError:
        return []


def rank_parts(path: Path) -> list[tuple[int, Path]]:
    """(rank, directory) of every rank part that has metadata, by rank."""
    out = []
    for p in _dirs(path):
        m = _RANK_DIR.match(p.name)
        if m and (p / "meta.json").is_file():
            out.append((int(m.group(1)), p))
    return sorted(out)


def job_meta(path: Path) -> dict[str, Any]:
    return _read_job(path) or {}


# -- one clock ------------------------------------------------------------------------------------

def clock_samples(meta: dict[str, Any]) -> list[tuple[int, int]]:
    """(at_ns, offset_ns) pairs from a rank's ``meta["clock_sync"]``, by time: adding the
    offset to a time on this rank's clock gives the reference rank's clock."""
    sync = meta.get("clock_sync")
    samples = sync.get("samples") if isinstance(sync, dict) else None
    out = []
    for s in samples or []:
        if isinstance(s, dict) and isinstance(s.get("at_ns"), int) and isinstance(s.get("offset_ns"), int):
            out.append((s["at_ns"], s["offset_ns"]))
    return sorted(out)


def _offset(t: pl.Expr, samples: list[tuple[int, int]]) -> pl.Expr | None:
    """The offset a time ``t`` on this rank's clock gets: constant with one sample, a
    straight line through the first and last with two or more (drift), held flat outside
    them. None when there is nothing to apply."""
    if not samples or all(o == 0 for _, o in samples):
        return None
    (t0, o0), (t1, o1) = samples[0], samples[-1]
    if t1 <= t0 or o0 == o1:
        return pl.lit(o0, dtype=pl.Int64)
    slope = (o1 - o0) / (t1 - t0)
    return pl.lit(o0, dtype=pl.Int64) + ((t.clip(t0, t1) - t0).cast(pl.Float64) * slope).round(0).cast(pl.Int64)


def shift_exprs(columns: list[str], samples: list[tuple[int, int]]) -> list[pl.Expr]:
    """Expressions moving a table's times onto the reference clock: counters' and memory's ``time_ns``;
    events' ``start_ns`` and ``dur_ns`` (both ends move, so back-to-back slices stay back to
    back under drift)."""
    out = []
    if "start_ns" in columns:
        start = pl.col("start_ns")
        off_start = _offset(start, samples)
        if off_start is not None:
            out.append(start + off_start)
            if "dur_ns" in columns:
                off_end = _offset(start + pl.col("dur_ns"), samples)
                out.append(pl.col("dur_ns") + off_end - off_start)
    if "time_ns" in columns:
        off = _offset(pl.col("time_ns"), samples)
        if off is not None:
            out.append(pl.col("time_ns") + off)
    return out


def offset_at(samples: list[tuple[int, int]], t_ns: int) -> int:
    """The offset a time on this rank's clock gets (the line ``shift_exprs`` applies)."""
    off = _offset(pl.lit(t_ns, dtype=pl.Int64), samples)
    return 0 if off is None else int(pl.select(off).item())


# -- the run's metadata from its parts ----------------------------------------------------------

def merge_meta(path: Path, parts: list[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
    """One metadata document for the whole run: the lowest rank's, with every rank's
    threads, streams, collectors and traced steps, the span of all, which ranks are
    incomplete or missing, and the first rank to run out of memory (``oom``, its time on the
    reference clock)."""
    job = job_meta(path)
    first = parts[0][1]
    meta: dict[str, Any] = {k: v for k, v in first.items() if k not in ("rank", "pid", "clock_sync", "source")}
    ranks = [r for r, _ in parts]
    world = job.get("world_size") if isinstance(job.get("world_size"), int) else None
    incomplete = [r for r, m in parts if not m.get("complete", False)]
    missing = sorted(set(range(world)) - set(ranks)) if world else []
    meta["ranks"] = ranks
    meta["world_size"] = world or len(ranks)
    meta["complete"] = not incomplete and not missing
    meta["incomplete_ranks"] = incomplete
    meta["missing_ranks"] = missing
    meta["threads"] = [dict(t, rank=r) for r, m in parts for t in m.get("threads", []) if isinstance(t, dict)]
    meta["streams"] = [dict(s, rank=r) for r, m in parts for s in m.get("streams", []) if isinstance(s, dict)]
    starts = [m["start_ns"] + offset_at(clock_samples(m), m["start_ns"]) for _, m in parts if isinstance(m.get("start_ns"), int)]
    ends = [m["end_ns"] + offset_at(clock_samples(m), m["end_ns"]) for _, m in parts if isinstance(m.get("end_ns"), int)]
    meta["start_ns"] = min(starts) if starts else None
    meta["end_ns"] = max(ends) if ends else None
    traced: dict[str, list] = {}
    for _, m in parts:
        for name, pairs in (m.get("traced_steps") or {}).items():
            traced.setdefault(name, []).extend(p for p in pairs if p not in traced.get(name, []))
    if traced:
        meta["traced_steps"] = traced
    meta.pop("oom", None)  # the lowest rank's, if it ran out of memory: the first rank to do so is the run's
    ooms = [(r, m, m["oom"]["time_ns"] + offset_at(clock_samples(m), m["oom"]["time_ns"])) for r, m in parts
            if isinstance(m.get("oom"), dict) and isinstance(m["oom"].get("time_ns"), int)]
    if ooms:
        r, m, at = min(ooms, key=lambda o: o[2])
        meta["oom"] = {**m["oom"], "rank": r, "time_ns": at}
    meta["rank_parts"] = [_part_summary(r, m) for r, m in parts]
    meta["job"] = {k: job[k] for k in ("key", "world_size", "created_ns") if k in job}
    # An import's run-wide fields (traces/assemble.py): its sources, notes, clock alignment.
    run_meta = job.get("run_meta")
    if isinstance(run_meta, dict):
        meta.update(run_meta)
    return meta


def _part_summary(rank: int, m: dict[str, Any]) -> dict[str, Any]:
    sync = m.get("clock_sync") if isinstance(m.get("clock_sync"), dict) else {}
    out = {
        "rank": rank,
        "dir": rank_dir_name(rank),
        "host": m.get("host"),
        "pid": m.get("pid"),
        "complete": bool(m.get("complete", False)),
        "steps": m.get("steps"),
        "collectors": m.get("collectors") or {},
        "clock_method": sync.get("method"),
        "clock_offset_ns": [o for _, o in clock_samples(m)],
        "clock_error_ns": sync.get("error_ns"),
    }
    if m.get("training_error"):
        out["training_error"] = m["training_error"]
    return out
