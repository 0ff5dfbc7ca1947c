"""Importing jobs of many ranks: one process, a pool of workers, a Dask LocalCluster, HTA (issue 14).

Builds jobs from the real 8-rank PARAM DLRM job in ../shared: each rank's trace is first
scaled in time with ``shared/tools/scale_trace.py`` (``--events`` per rank), then rank r
of a job is a copy of worker r % 8 with its ``distributedInfo.rank`` set to r and its
timestamps shifted by a per-rank jitter (0-200 µs, seeded), as ranks' clocks differ. One
rank is an injected straggler: it enters every collective after every other rank (40 % of
the call's shortest duration before its end), so the others wait for it there.

For each job size, ``accelscope import`` is timed serially (``--workers 1``), with a pool
(``--workers N``) and on a Dask ``LocalCluster`` of N single-threaded worker processes
(started once per size, its start-up reported apart), rounds interleaved so machine noise
hits all alike, each import in a fresh process (wall time and that process's peak RSS,
``VmHWM``: for the cluster, the client's). HTA 0.6 (``traceinsight``) loads the same
directory with its default process pool, where it finishes within ``--hta-timeout``.
Afterwards the smallest job is analysed, to say whether the straggler was named.

Targets (issue 14): 64 ranks, ``--workers 2`` >= 1.8x serial; the LocalCluster within 1.3x
of the pool; the client's peak <= 1 GiB whatever the number of ranks.

    python benchmarks/many_ranks.py [--ranks 8,64,256] [--events 20000] [--workers 2] [--rounds 2]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ACCELSCOPE_SHARED", REPO.parent / "shared"))
JOB = SHARED / "traces/more/param-dlrm-8rank"
SCALE_TOOL = SHARED / "tools/scale_trace.py"
_RANK_RE = re.compile(rb'("distributedInfo"\s*:\s*\{[^{}]*?"rank"\s*:\s*)(\d+)')
TARGET_64 = 1.8
TARGET_CLUSTER = 1.3  # the LocalCluster's time over the pool's, at most
CLIENT_PEAK_BYTES = 2**30
# The straggler enters each collective this share of the call's shortest duration on any
# rank before it ends: after every other rank (each of them spent at least that whole
# shortest duration in it), so it is the last to arrive at every call.
LATE_SHARE = 0.4

# One import in a fresh process: prints its wall seconds and peak RSS (bytes) as JSON.
CHILD = """
import json, sys, time
from accelscope.traces.importer import import_traces
t = time.perf_counter()
how = sys.argv[3]
import_traces([sys.argv[1]], sys.argv[2], force=True, progress=False,
              **({"cluster": how} if "://" in how else {"workers": int(how)}))
wall = time.perf_counter() - t
hwm = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"wall_s": wall, "peak_bytes": hwm}))
"""

# HTA's load with its default process pool, in a fresh process.
HTA_CHILD = """
import json, sys, time
from hta.trace_analysis import TraceAnalysis
t = time.perf_counter()
a = TraceAnalysis(trace_dir=sys.argv[1])
print(json.dumps({"wall_s": time.perf_counter() - t, "ranks": len(a.t.traces)}))
"""


def _span_us(doc: dict) -> tuple[float, float, int]:
    """The first start and the repeat period of a trace, as scale_trace.py computes them
    (span of the non-metadata events + 1 ms), and how many events it repeats."""
    body = [e for e in doc["traceEvents"] if e.get("ph") != "M"]
    timed = [e for e in body if "ts" in e]
    first = min(float(e["ts"]) for e in timed)
    return first, max(float(e["ts"]) + float(e.get("dur", 0)) for e in timed) - first + 1000.0, len(body)


def scaled_ranks(work: Path, events: int) -> list[bytes]:
    """The 8 real ranks, each scaled to about ``events`` events (uncompressed JSON bytes).

    scale_trace.py repeats each file with its own span as the period, and as many times as
    its size asks: the ranks' repetitions would drift apart and differ in number, so a
    collective's k-th copy would neither overlap the others' nor be on every rank. Every
    rank gets the same number of copies, re-spaced to the longest rank's period, so that
    copy k of every rank lines up as the real job's one recorded step did."""
    sources = sorted(JOB.glob("*.json.gz"))
    spans = [_span_us(json.loads(gzip.decompress(src.read_bytes()))) for src in sources]
    period = max(p for _, p, _ in spans)
    copies = max(1, -(-events // max(n for _, _, n in spans)))
    out = []
    for i, src in enumerate(sources):
        dst = work / f"scaled-{i}.json"
        first, own, n_body = spans[i]
        subprocess.run([sys.executable, str(SCALE_TOOL), str(src), str(dst), "--events", str(copies * n_body)], check=True, capture_output=True)
        doc = json.loads(dst.read_bytes())
        for e in doc["traceEvents"]:
            if e.get("ph") != "M" and isinstance(e.get("ts"), (int, float)):
                k = int((float(e["ts"]) - first) // own)
                if k:
                    e["ts"] = round(float(e["ts"]) + k * (period - own), 3)
        out.append(json.dumps(doc).encode())
    return out


def straggler_of(ranks: int) -> int:
    return ranks // 2 + 1 if ranks > 2 else ranks - 1


def make_job(directory: Path, ranks: int, scaled: list[bytes], seed: int = 0) -> Path:
    """``ranks`` files rank-N.json.gz: worker N % 8, renumbered, its clock shifted by a
    jitter; rank ``straggler_of(ranks)`` enters every collective late, LATE_SHARE of the
    call's shortest duration on any worker before its end (its start moves, its end stays:
    the others waited that much longer)."""
    from accelscope.analysis.collectives import ANY_NAME

    collective = re.compile(ANY_NAME)

    def calls(doc: dict) -> list[tuple[tuple[str, int], dict]]:
        """Each collective event with its key: its name and how many of that name came before."""
        seen: dict[str, int] = {}
        out = []
        for e in sorted((e for e in doc["traceEvents"] if isinstance(e.get("dur"), (int, float)) and e["dur"] > 0
                         and isinstance(e.get("ts"), (int, float)) and collective.search(str(e.get("name", "")))), key=lambda e: e["ts"]):
            name = str(e["name"])
            out.append(((name, seen.get(name, 0)), e))
            seen[name] = seen.get(name, 0) + 1
        return out

    shortest: dict[tuple[str, int], float] = {}
    for raw in scaled:
        for key, e in calls(json.loads(raw)):
            shortest[key] = min(shortest.get(key, e["dur"]), e["dur"])
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    slow = straggler_of(ranks)
    for r in range(ranks):
        doc = json.loads(_RANK_RE.sub(lambda m, r=r: m.group(1) + str(r).encode(), scaled[r % len(scaled)], count=1))
        if r == slow:
            for key, e in calls(doc):
                end = e["ts"] + e["dur"]
                e["ts"] = max(e["ts"], end - LATE_SHARE * shortest[key])
                e["dur"] = end - e["ts"]
        shift_us = rng.uniform(0, 200)
        for e in doc["traceEvents"]:
            if isinstance(e.get("ts"), (int, float)):
                e["ts"] = round(e["ts"] + shift_us, 3)
        with gzip.open(directory / f"rank-{r}.json.gz", "wt", compresslevel=6) as fh:
            json.dump(doc, fh)
    return directory


def one_import(job: Path, out: Path, how: str) -> dict:
    res = subprocess.run([sys.executable, "-c", CHILD, str(job), str(out), how], check=True, capture_output=True, text=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def hta_import(job: Path, timeout_s: float) -> dict | None:
    """HTA's load of ``job``, or None when it is not installed or ran past ``timeout_s``."""
    try:
        res = subprocess.run([sys.executable, "-c", HTA_CHILD, str(job)], capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"timed_out": True}
    if res.returncode != 0:
        return None
    return json.loads(res.stdout.strip().splitlines()[-1])


def straggler_found(run_dir: Path) -> str:
    """What the analysis says of the job's stragglers: the ranks it names (significant cost),
    and the rank most others wait for at collectives (the rank table's ``waits_for_rank``)."""
    from accelscope.analysis import analyze
    from accelscope.traces.run import Run

    report = analyze(Run.open(run_dir))
    named = ", ".join(str(s.rank) for s in report.stragglers) or "none"
    waits = report.ranks["waits_for_rank"].drop_nulls() if report.ranks is not None else None
    if waits is None or waits.len() == 0:
        return f"named {named}; no rank waits for another"
    top = waits.mode().sort()[0]
    return f"named {named}; {int((waits == top).sum())} of {report.ranks.height - 1} other ranks wait most for rank {top}"


def _cluster(n: int):
    try:
        from distributed import LocalCluster
    except ImportError:
        return None
    return LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranks", default="8,64,256", help="job sizes, comma-separated (default 8,64,256)")
    ap.add_argument("--events", type=int, default=20_000, help="events per rank (default 20000)")
    ap.add_argument("--workers", type=int, default=2, help="the pool's size, and the LocalCluster's (default 2)")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds per size (median)")
    ap.add_argument("--hta-timeout", type=float, default=600, help="seconds HTA may take per job (default 600)")
    ap.add_argument("--no-hta", action="store_true", help="leave HTA out")
    args = ap.parse_args()
    if not JOB.is_dir() or not SCALE_TOOL.is_file():
        print(f"skipped: the real job {JOB} or {SCALE_TOOL} is missing (set ACCELSCOPE_SHARED)")
        return 0
    sizes = [int(x) for x in args.ranks.split(",")]
    with tempfile.TemporaryDirectory(prefix="many-ranks-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        scaled = scaled_ranks(work, args.events)
        print(f"8 real DLRM ranks scaled to ~{args.events:,} events each in {time.perf_counter() - t0:.1f} s")
        for n in sizes:
            job = make_job(work / f"job-{n}", n, scaled)
            size = sum(f.stat().st_size for f in job.iterdir())
            t0 = time.perf_counter()
            cluster = _cluster(args.workers)
            hows = {"serial": "1", "pool": str(args.workers)}
            if cluster is not None:
                hows["cluster"] = cluster.scheduler_address
                print(f"  LocalCluster of {args.workers} worker processes started in {time.perf_counter() - t0:.1f} s (not counted)")
            runs: dict[str, list[dict]] = {k: [] for k in hows}
            try:
                for _ in range(args.rounds):
                    for k, how in hows.items():
                        runs[k].append(one_import(job, work / f"run-{n}-{k}", how))
            finally:
                if cluster is not None:
                    cluster.close()
            wall = {k: statistics.median(r["wall_s"] for r in rs) for k, rs in runs.items()}
            peak = {k: max(r["peak_bytes"] for r in rs) for k, rs in runs.items()}
            line = (f"{n} ranks ({size / 2**20:.0f} MiB gzipped): serial {wall['serial']:.2f} s (peak {peak['serial'] / 2**20:.0f} MiB), "
                    f"--workers {args.workers} {wall['pool']:.2f} s (parent peak {peak['pool'] / 2**20:.0f} MiB): {wall['serial'] / wall['pool']:.2f}x")
            if n == 64:
                line += f" (target >= {TARGET_64}: {'met' if wall['serial'] / wall['pool'] >= TARGET_64 else 'MISSED'})"
            print(line)
            if "cluster" in wall:
                ratio = wall["cluster"] / wall["pool"]
                print(f"  LocalCluster {wall['cluster']:.2f} s, {ratio:.2f}x the pool's time (target <= {TARGET_CLUSTER}: "
                      f"{'met' if ratio <= TARGET_CLUSTER else 'MISSED'}); client peak {peak['cluster'] / 2**20:.0f} MiB "
                      f"(target <= 1024: {'met' if peak['cluster'] <= CLIENT_PEAK_BYTES else 'MISSED'})")
            if not args.no_hta:
                hta = hta_import(job, args.hta_timeout)
                if hta is None:
                    print("  HTA: not installed (pip install traceinsight), or it failed")
                elif hta.get("timed_out"):
                    print(f"  HTA: did not finish within {args.hta_timeout:.0f} s")
                else:
                    best = min(wall.values())
                    print(f"  HTA load (its own process pool) {hta['wall_s']:.2f} s for {hta['ranks']} ranks: "
                          f"{hta['wall_s'] / best:.2f}x our best ({min(wall, key=wall.get)})")
        first = sizes[0]
        print(f"straggler injected in the {first}-rank job: rank {straggler_of(first)}; analysis: {straggler_found(work / f'run-{first}-serial')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
