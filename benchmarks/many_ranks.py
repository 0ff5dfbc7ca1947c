"""Importing jobs of many ranks: one process against a pool of workers (issue 14).

Builds jobs from the real 8-rank PARAM DLRM job in ../shared: each rank's trace is first
scaled in time with ``shared/tools/scale_trace.py`` (``--events`` per rank), then rank r
of a job is a copy of worker r % 8 with its ``distributedInfo.rank`` set to r and its
timestamps shifted by a per-rank jitter (0-200 µs, seeded), as ranks' clocks differ.
For each job size, ``accelscope import`` is timed serially (``--workers 1``) and with a
pool (``--workers N``), rounds interleaved so machine noise hits both alike, each in a
fresh process (its wall time and the parent's peak RSS, ``VmHWM``, are reported).

Target (issue 14): 64 ranks, ``--workers 2`` at least 1.8x faster than serial.
Not yet measured here: a Dask LocalCluster (issue 14 item 2) and HTA on the same jobs.

    python benchmarks/many_ranks.py [--ranks 8,64] [--events 20000] [--workers 2] [--rounds 2]
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

# One import in a fresh process: prints its wall seconds and peak RSS (bytes) as JSON.
CHILD = """
import json, sys, time
from accelscope.traces.importer import import_traces
t = time.perf_counter()
import_traces([sys.argv[1]], sys.argv[2], force=True, progress=False, workers=int(sys.argv[3]))
wall = time.perf_counter() - t
hwm = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"wall_s": wall, "peak_bytes": hwm}))
"""


def scaled_ranks(work: Path, events: int) -> list[bytes]:
    """The 8 real ranks, each scaled to about ``events`` events (uncompressed JSON bytes)."""
    out = []
    for i, src in enumerate(sorted(JOB.glob("*.json.gz"))):
        dst = work / f"scaled-{i}.json"
        subprocess.run([sys.executable, str(SCALE_TOOL), str(src), str(dst), "--events", str(events)], check=True, capture_output=True)
        out.append(dst.read_bytes())
    return out


def make_job(directory: Path, ranks: int, scaled: list[bytes], seed: int = 0) -> Path:
    """``ranks`` files rank-N.json.gz: worker N % 8, renumbered, its clock shifted by a jitter."""
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for r in range(ranks):
        doc = json.loads(_RANK_RE.sub(lambda m, r=r: m.group(1) + str(r).encode(), scaled[r % len(scaled)], count=1))
        shift_us = rng.uniform(0, 200)
        for e in doc["traceEvents"]:
            if isinstance(e.get("ts"), (int, float)):
                e["ts"] = round(e["ts"] + shift_us, 3)
        with gzip.open(directory / f"rank-{r}.json.gz", "wt", compresslevel=6) as fh:
            json.dump(doc, fh)
    return directory


def one_import(job: Path, out: Path, workers: int) -> dict:
    res = subprocess.run([sys.executable, "-c", CHILD, str(job), str(out), str(workers)], check=True, capture_output=True, text=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranks", default="8,64", help="job sizes, comma-separated (default 8,64)")
    ap.add_argument("--events", type=int, default=20_000, help="events per rank (default 20000)")
    ap.add_argument("--workers", type=int, default=2, help="the pool's size (default 2)")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds per size (median)")
    args = ap.parse_args()
    if not JOB.is_dir() or not SCALE_TOOL.is_file():
        print(f"skipped: the real job {JOB} or {SCALE_TOOL} is missing (set ACCELSCOPE_SHARED)")
        return 0
    with tempfile.TemporaryDirectory(prefix="many-ranks-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        scaled = scaled_ranks(work, args.events)
        print(f"8 real DLRM ranks scaled to ~{args.events:,} events each in {time.perf_counter() - t0:.1f} s")
        for n in (int(x) for x in args.ranks.split(",")):
            job = make_job(work / f"job-{n}", n, scaled)
            size = sum(f.stat().st_size for f in job.iterdir())
            runs: dict[int, list[dict]] = {1: [], args.workers: []}
            for _ in range(args.rounds):
                for w in runs:
                    runs[w].append(one_import(job, work / f"run-{n}-{w}", w))
            serial = statistics.median(r["wall_s"] for r in runs[1])
            pooled = statistics.median(r["wall_s"] for r in runs[args.workers])
            peak = {w: max(r["peak_bytes"] for r in rs) / 2**20 for w, rs in runs.items()}
            print(f"{n} ranks ({size / 2**20:.0f} MiB gzipped): serial {serial:.2f} s (peak {peak[1]:.0f} MiB), "
                  f"--workers {args.workers} {pooled:.2f} s (parent peak {peak[args.workers]:.0f} MiB): {serial / pooled:.2f}x"
                  + (f" (target >= {TARGET_64}: {'met' if serial / pooled >= TARGET_64 else 'MISSED'})" if n == 64 else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
