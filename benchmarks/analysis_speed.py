"""Speed of `accelscope.analysis.analyze` on a 1M-event trace, against HTA's idle-time
and temporal breakdowns on the same trace, measured in the same run.

The trace is the nw0 ResNet-50 trace scaled in time with shared/tools/scale_trace.py. It
is imported once (not timed here: see import_speed.py); then, each in a fresh child
process so neither tool benefits from the other's warm caches:

* accelscope: ``Run.open`` + ``analyze`` (steps, gaps with causes, breakdown, advice),
  reported with and without the reopen;
* HTA 0.5: ``get_idle_time_breakdown`` + ``get_temporal_breakdown`` on a loaded
  ``TraceAnalysis`` (its load, multiprocessing off, is reported apart).

Then, also each in a fresh process, ``import`` + ``analyze`` of the trace file, serially
(``workers=1``) and on every core (the default: one large file is decoded in byte ranges),
against HTA's load + breakdowns.

Targets: analyze <= 1 s after import; import + analyze >= 8x faster than HTA's load + breakdowns.

    python benchmarks/analysis_speed.py [--events 1000000] [--keep PATH]
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
NW0 = SHARED / "traces/kineto/tb_plugin/samples/resnet50_num_workers_0/worker0.1623143089861.pt.trace.json.gz"


def child_accelscope(run_dir: str) -> None:
    from accelscope.analysis import analyze
    from accelscope.traces.run import Run

    t0 = time.perf_counter()
    run = Run.open(run_dir)
    run.slices
    t1 = time.perf_counter()
    report = analyze(run)
    t2 = time.perf_counter()
    report2 = analyze(Run.open(run_dir))  # warm: regexes compiled, pages cached
    t3 = time.perf_counter()
    print(json.dumps({"reopen": t1 - t0, "analyze": t2 - t1, "analyze_warm_with_reopen": t3 - t2, "rows": run.slices.height,
                      "gaps": report.gaps.height, "steps": report.n_steps, "verdict": report2.verdict}))


def child_import(arg: str) -> None:
    """``import`` + ``analyze`` of the trace, as `accelscope analyze TRACE` does it: every core (the default)."""
    from accelscope.analysis import analyze
    from accelscope.traces.importer import import_traces
    from accelscope.traces.run import Run

    trace, out, workers = arg.split(",")
    t0 = time.perf_counter()
    run_dir = import_traces([trace], out, progress=False, force=True, workers=int(workers) if workers else None)
    t1 = time.perf_counter()
    analyze(Run.open(run_dir))
    t2 = time.perf_counter()
    print(json.dumps({"import": t1 - t0, "analyze": t2 - t1}))


def child_hta(trace_dir: str) -> None:
    logging.disable(logging.WARNING)
    from hta.common.trace import Trace
    from hta.trace_analysis import TraceAnalysis

    t0 = time.perf_counter()
    t = Trace(trace_dir=trace_dir)
    t.load_traces(include_last_profiler_step=False, use_multiprocessing=False)
    analysis = TraceAnalysis.__new__(TraceAnalysis)
    analysis.t = t
    t1 = time.perf_counter()
    analysis.get_idle_time_breakdown(visualize=False)
    analysis.get_temporal_breakdown(visualize=False)
    t2 = time.perf_counter()
    print(json.dumps({"load": t1 - t0, "analyze": t2 - t1}))


def _child(fn: str, arg: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", fn, arg], capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise SystemExit(f"{fn} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--keep", help="keep (and reuse) the scaled trace at this path (.json.gz)")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        {"accelscope": child_accelscope, "hta": child_hta, "import": child_import}[args.child[0]](args.child[1])
        return
    from accelscope.traces.importer import import_traces

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        trace_dir = tmp / "trace"
        trace_dir.mkdir()
        trace = Path(args.keep) if args.keep else trace_dir / "rank-0.json.gz"
        if not trace.exists():
            print(f"scaling nw0 to {args.events:,} events ...", flush=True)
            subprocess.run([sys.executable, str(SHARED / "tools/scale_trace.py"), str(NW0), str(trace), "--events", str(args.events)], check=True)
        if trace.parent != trace_dir:  # HTA takes a file's compression from its name
            (trace_dir / ("rank-0.json.gz" if trace.name.endswith(".gz") else "rank-0.json")).symlink_to(trace.resolve())
        t0 = time.perf_counter()
        run_dir = import_traces([trace], tmp / "run", progress=False)
        print(f"imported in {time.perf_counter() - t0:.1f} s (not part of the comparison)", flush=True)
        ours = _child("accelscope", str(run_dir))
        whole = {w or "every core": _child("import", f"{trace},{tmp / 'again'},{w}") for w in ("1", "")}
        print(f"accelscope: {ours['rows']:,} slices, {ours['steps']} steps, {ours['gaps']:,} gaps, verdict {ours['verdict']}", flush=True)
        try:
            hta = _child("hta", str(trace_dir))
        except SystemExit as exc:
            print(f"HTA not measured: {exc}")
            hta = None
    print(f"\n{args.events:,}-event trace (nw0 scaled)")
    print(f"  accelscope reopen (Run.open + slices)   {ours['reopen']:7.2f} s")
    print(f"  accelscope analyze, cold process         {ours['analyze']:7.2f} s   (target <= 1 s after import)")
    print(f"  accelscope reopen + analyze, warm        {ours['analyze_warm_with_reopen']:7.2f} s")
    if hta:
        print(f"  HTA load (multiprocessing off)          {hta['load']:7.2f} s")
        print(f"  HTA idle-time + temporal breakdown      {hta['analyze']:7.2f} s")
        print(f"  HTA breakdowns / accelscope analyze     = {hta['analyze'] / ours['analyze']:.1f}x")
        print(f"  HTA load + breakdowns / accelscope reopen + analyze = {(hta['load'] + hta['analyze']) / (ours['reopen'] + ours['analyze']):.1f}x")
    for w, got in whole.items():
        line = f"  accelscope import + analyze, workers {w}: {got['import']:.2f} + {got['analyze']:.2f} s"
        if hta:
            line += f"; HTA load + breakdowns / this = {(hta['load'] + hta['analyze']) / (got['import'] + got['analyze']):.1f}x   (target >= 8x)"
        print(line)


if __name__ == "__main__":
    main()
